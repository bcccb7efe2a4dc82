"""The light SQLite reader behind `cachedembed stats`: same report, no SQLAlchemy."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from cachedembed import Cached
from cachedembed.stats import report
from cachedembed.stores import SqlStore, open_store
from cachedembed.stores.sqlite_reader import SqliteReader, open_reader
from tests.conftest import FakeEF

REPO = Path(__file__).resolve().parents[1]


def test_the_reader_reports_exactly_what_the_store_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ef = Cached(FakeEF(), url)
    ef(["a", "b", "c"])
    ef(["a", "b", "d"])
    ef.embed_query(["q"])
    ef.flush()  # the writer stays open: the counters may still sit in the WAL
    reader = open_reader(url)
    assert isinstance(reader, SqliteReader)
    try:
        assert report(reader) == report(open_store(url))
        assert report(reader, since_day=10**6)["models"] == []
    finally:
        reader.close()


def test_other_caches_fall_back_to_the_full_store(tmp_path: Path) -> None:
    missing = open_reader(f"sqlite:///{tmp_path / 'new.db'}")
    assert isinstance(missing, SqlStore)  # created and migrated as before
    url = f"sqlite:///{tmp_path / 'old.db'}"
    open_store(url).close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    assert not isinstance(open_reader(url), SqliteReader)
    assert not isinstance(open_reader(f"diskcache://{tmp_path / 'dc'}"), SqliteReader)


def test_cachedembed_stats_on_sqlite_imports_neither_sqlalchemy_nor_numpy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Cached(FakeEF(), url)(["x"])
    open_store(url).flush()
    code = (
        "import sys\n"
        "from cachedembed.cli import main\n"
        f"main(['stats', '--cache', {url!r}], standalone_mode=False)\n"
        "print(sorted(m for m in ('sqlalchemy', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert "fake" in out and out.strip().endswith("[]")
