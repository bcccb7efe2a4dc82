"""What the commands print and write is exact: rows follow the input, counts read as English,
no empty namespace or chart appears, and exports are private like the cache."""

from __future__ import annotations

import gzip
import json
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from cachedembed import Cached
from cachedembed.cli import count, main
from cachedembed.embedding_functions import providers
from cachedembed.embedding_functions._remote import RemoteEmbeddingFunction
from cachedembed.errors import ConfigurationError
from cachedembed.usage import UsageDelta
from tests.billing import BillingProvider
from tests.conftest import fake_vector


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_output_rows_follow_the_non_blank_lines_and_the_skipped_ones_are_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "in.txt").write_text("alpha\n\nbeta\n   \ngamma\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = run(
        "embed", str(tmp_path / "in.txt"), "-m", "test-billing", "--cache", url, "-o", str(out)
    )
    skipped, cold = result.stderr.splitlines()
    assert skipped == (
        "skipped 2 blank lines (lines 2, 4): output rows follow the non-blank lines in order"
    )
    assert re.fullmatch(
        r"cold: 3 texts in [\d.]+s wall, [\d.]+s provider time, 6 tokens, \$\?", cold
    )
    assert result.stdout == f"3 texts, 6 dimensions: 0 hits, 3 misses -> {out}\n"
    rows = np.load(out)
    expected = [fake_vector(t, 6, "bill-smalldocument") for t in ("alpha", "beta", "gamma")]
    assert [r.tobytes() for r in rows] == [e.tobytes() for e in expected]


def test_jsonl_output_has_one_row_per_text_and_jsonl_input_skips_blank_lines(
    tmp_path: Path,
) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    out = tmp_path / "v.jsonl"
    result = run(
        "embed",
        str(src),
        "-m",
        "test-billing",
        "--cache",
        f"sqlite:///{tmp_path / 'c.db'}",
        "-o",
        str(out),
    )
    assert "skipped 1 blank line (line 2)" in result.stderr
    assert len(out.read_text().splitlines()) == 2


def test_counts_are_singular_for_one(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("only\n")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = run("embed", str(tmp_path / "in.txt"), "-m", "test-billing", "--cache", url)
    assert first.stdout == "1 text, 6 dimensions: 0 hits, 1 miss\n"
    again = run("embed", str(tmp_path / "in.txt"), "-m", "test-billing", "--cache", url)
    assert again.stdout == "1 text, 6 dimensions: 1 hit, 0 misses\n"
    exported = run("export", "--cache", url, str(tmp_path / "x.gz"))
    assert (
        exported.stdout
        == f"exported 1 namespace, 1 entry (0 with text), 1 stats row -> {tmp_path / 'x.gz'}\n"
    )
    assert run("verify", "--cache", url).stdout == "checked 1 entry: 0 bad\n"
    assert [count(n, "entry", "entries") for n in (0, 1, 2, 1000)] == [
        "0 entries",
        "1 entry",
        "2 entries",
        "1,000 entries",
    ]


@pytest.mark.parametrize("role", ["document", "query"])
def test_embed_registers_only_the_role_it_embeds(role: str, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    flag = ["--query"] if role == "query" else []
    run("embed", str(tmp_path / "in.txt"), "-m", "test-billing", "--cache", url, *flag)
    listed = json.loads(run("models", "--cache", url, "--json").stdout)
    assert [(m["role"], m["entries"]) for m in listed] == [(role, 2)]


def test_stats_by_day_shows_no_chart_when_every_bar_would_be_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ef = Cached(BillingProvider(), url)
    ef.store.record(ef.store.namespace(ef.spec("document")).id, UsageDelta(calls=1))
    ef.flush()
    table = run("stats", "--by", "day", "--cache", url).stdout
    assert "chart" not in table and "█" not in table
    assert all(line == line.rstrip() for line in table.splitlines())  # no empty chart column


def test_stats_by_day_charts_tokens_when_the_prices_are_all_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEDEMBED_PRICE", "test-billing/bill-small=0")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ef = Cached(BillingProvider(), url)
    ef(["one two three", "four"])
    ef(["one two three"])
    ef.flush()
    table = run("stats", "--by", "day", "--cache", url).stdout
    assert "chart: █ spent  ░ saved, in tokens (no dollars were spent or saved)" in table
    assert re.search(r"█+░+$", table, re.MULTILINE)


def test_an_export_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Cached(BillingProvider(), url)(["x"])
    target = tmp_path / "x.jsonl.gz"
    target.write_bytes(b"")
    target.chmod(0o644)  # an older file in the way keeps no wider mode
    run("export", "--cache", url, str(target))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert gzip.decompress(target.read_bytes()).startswith(b'{"type":"header"')


REMOTE = sorted(
    (name, cls) for name, cls in providers().items() if issubclass(cls, RemoteEmbeddingFunction)
)


@pytest.mark.parametrize(("name", "cls"), REMOTE, ids=[n for n, _ in REMOTE])
def test_a_missing_key_error_names_each_variable_once(
    name: str, cls: type[RemoteEmbeddingFunction], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (
        "OPENAI_API_KEY",
        "CO_API_KEY",
        "COHERE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "JINA_API_KEY",
        "VOYAGE_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    ef = cls.from_spec("http://127.0.0.1:1" if name == "tei" else "some-model")
    try:
        ef.require_key()
    except ConfigurationError as exc:
        names = re.findall(r"\$(\w+)", str(exc))
        assert len(names) == len(set(names)), str(exc)
        assert str(exc).endswith(("API_KEY", "TOKEN", "pass api_key=...")), str(exc)
