"""The environment variables cachedembed reads: one module reads them, one table documents them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cachedembed import settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cachedembed"
TABLE = ROOT / "docs" / "configuration.md"


def _sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.name != "settings.py"]


def test_no_module_but_settings_reads_a_cachedembed_variable() -> None:
    readers = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "environ" in line and "CACHEDEMBED_" in line
    ]
    assert readers == []


def test_every_cachedembed_variable_named_in_the_code_is_a_setting() -> None:
    named = {m for path in _sources() for m in re.findall(r"CACHEDEMBED_[A-Z_]+", path.read_text())}
    assert named <= {s.name for s in settings.ALL}


def test_the_documentation_table_lists_every_setting_with_its_meaning() -> None:
    rows = re.findall(
        r"^\| `(CACHEDEMBED_[A-Z_]+)` \| (.+?) \| (yes|no) \|$", TABLE.read_text(), re.M
    )
    assert [(name, doc, secret == "yes") for name, doc, secret in rows] == [
        (s.name, s.doc, s.secret) for s in settings.ALL
    ]


def test_accessors_read_the_environment_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHEDEMBED_URL", raising=False)
    assert settings.cache_url() is None
    monkeypatch.setenv("CACHEDEMBED_URL", "memory://x")
    assert settings.cache_url() == "memory://x"


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEDEMBED_URL", "")
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "")
    monkeypatch.setenv("CACHEDEMBED_PRICE", "")
    assert settings.cache_url() is None
    assert settings.hash_key() == b""
    assert settings.price_sources()[1] is None


def test_the_hash_key_is_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "s3cret-é")
    assert settings.hash_key() == "s3cret-é".encode()


def test_the_default_cache_url_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from cachedembed.stores import default_url

    monkeypatch.setenv("CACHEDEMBED_URL", "memory://from-env")
    assert default_url() == "memory://from-env"
    monkeypatch.delenv("CACHEDEMBED_URL")
    assert default_url().startswith("sqlite:///")
