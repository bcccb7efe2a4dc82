"""Schema upgrades: caches written by every earlier revision open, upgrade in place, lose nothing.

``fixtures/rev<REV>.db`` are small caches built at each old revision by
``fixtures/make_fixtures.py`` (committed with their ``.json`` manifests). Opening one
with today's code must upgrade it to :data:`cachedembed.stores.migrate.HEAD` with every
entry and stats row intact, and serve its entries as hits, bit for bit. The last test
builds a real wheel and checks that an installed copy (migrations inside the package)
can create and upgrade caches without the source tree.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from cachedembed import Cached, StoreError
from cachedembed.stores import migrate, open_store
from cachedembed.stores.sql import SqlStore
from tests.conftest import FakeEF
from tests.reliability._helpers import ROOT, same_bits, subprocess_env

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def script_directory() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    return ScriptDirectory.from_config(cfg)


OLD_REVISIONS = sorted(
    r.revision for r in script_directory().walk_revisions() if r.revision != migrate.HEAD
)


def test_head_constant_matches_alembic() -> None:
    assert script_directory().get_current_head() == migrate.HEAD


def test_every_earlier_revision_has_a_fixture() -> None:
    # A new migration must come with a fixture of the revision before it (make_fixtures.py).
    assert OLD_REVISIONS
    for rev in OLD_REVISIONS:
        assert (FIXTURES / f"rev{rev}.db").is_file(), f"no fixture for revision {rev}"


def copy_fixture(rev: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / f"rev{rev}.db"
    shutil.copy(FIXTURES / f"rev{rev}.db", path)
    return path, json.loads((FIXTURES / f"rev{rev}.json").read_text())


@pytest.mark.parametrize("rev", OLD_REVISIONS)
def test_old_cache_upgrades_in_place_with_everything_intact(rev: str, tmp_path: Path) -> None:
    path, manifest = copy_fixture(rev, tmp_path)
    store = open_store(f"sqlite:///{path}")
    assert store.schema_revision() == migrate.HEAD

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = raw.execute(
            "SELECT id, ns, chk, tokens, flags, used, created, vec FROM entries"
        ).fetchall()
        stats = raw.execute(
            "SELECT ns, day, calls, hits, misses, provider_calls, provider_seconds, tokens_embedded, "
            "tokens_embedded_estimated, tokens_saved, tokens_saved_estimated FROM stats ORDER BY ns, day"
        ).fetchall()
    want_rows = {
        (
            e["id"],
            e["ns"],
            e["chk"],
            e["tokens"],
            e["flags"],
            e["used"],
            e["created"],
            bytes.fromhex(e["vec"]),
        )
        for e in manifest["entries"]
    }
    assert set(rows) == want_rows
    assert [list(s) for s in stats] == manifest["stats"]
    assert [(n.id, n.key) for n in store.namespaces()] == [
        (n["id"], n["key"]) for n in manifest["namespaces"]
    ]

    # Today's wrapper serves the old entries as hits, exactly, without calling anyone.
    for ns in manifest["namespaces"]:
        entries = [e for e in manifest["entries"] if e["ns"] == ns["id"]]
        ef = FakeEF()
        wrapper = Cached(ef, store, namespace=ns["namespace"], dtype=ns["dtype"])
        got = wrapper.embed([e["text"] for e in entries], ns["role"])
        want = np.array(
            [
                np.frombuffer(
                    bytes.fromhex(e["vec"]), f"<{'f4' if ns['dtype'] == 'float32' else 'f2'}"
                )
                for e in entries
            ]
        ).astype(np.float32)
        assert same_bits(got, want)
        assert ef.calls == []
    # And it keeps working: new entries (with the column added since) are written.
    fresh = Cached(FakeEF(), store, namespace="fixture", store_text=True)
    fresh.embed(["a text written after the upgrade"])
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM entries WHERE text IS NOT NULL").fetchone() == (1,)


@pytest.mark.parametrize("rev", OLD_REVISIONS)
def test_opening_without_upgrade_names_the_command(rev: str, tmp_path: Path) -> None:
    path, _ = copy_fixture(rev, tmp_path)
    with pytest.raises(StoreError, match=f"schema revision {rev}.*cachedembed migrate"):
        SqlStore(f"sqlite:///{path}", upgrade=False)


WHEEL_CHECK = textwrap.dedent(
    """
    import shutil, sqlite3, sys
    from pathlib import Path
    site, fixture, work = map(Path, sys.argv[1:4])
    import cachedembed
    from cachedembed import Cached
    from cachedembed.stores import migrate, open_store
    assert Path(cachedembed.__file__).is_relative_to(site), cachedembed.__file__
    assert migrate.migrations_path() == site / "cachedembed" / "_migrations", migrate.migrations_path()

    class EF:
        def __call__(self, input):
            return [[float(len(t)), 1.0] for t in input]
        def name(self):
            return "wheel-check"
        def get_config(self):
            return {}

    new = open_store(f"sqlite:///{work / 'new.db'}")
    assert new.schema_revision() == migrate.HEAD
    Cached(EF(), new).embed(["created by the wheel"])
    old = work / "old.db"
    shutil.copy(fixture, old)
    upgraded = open_store(f"sqlite:///{old}")
    assert upgraded.schema_revision() == migrate.HEAD
    print(sqlite3.connect(old).execute("SELECT count(*) FROM entries").fetchone()[0])
    """
)


@pytest.mark.slow
def test_wheel_ships_migrations_and_upgrades_caches(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("cachedembed-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "cachedembed/_migrations/env.py" in names
        assert any(n.startswith("cachedembed/_migrations/versions/0001") for n in names)
        zf.extractall(site)
    oldest = OLD_REVISIONS[0]
    work = tmp_path / "work"
    work.mkdir()
    env = subprocess_env(PYTHONPATH=str(site))  # the wheel only: not this checkout
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            WHEEL_CHECK,
            str(site),
            str(FIXTURES / f"rev{oldest}.db"),
            str(work),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    manifest = json.loads((FIXTURES / f"rev{oldest}.json").read_text())
    assert run.stdout.strip() == str(len(manifest["entries"]))
