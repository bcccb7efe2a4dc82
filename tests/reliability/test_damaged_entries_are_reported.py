"""Damaged entries are what `verify` is for: every management command reports them, none crashes.

On each backend an entry kept with its text (``store_text=True``) is damaged the way that
backend can be damaged - a diskcache value cut short, a SQLite text that is not UTF-8 or
a vector stored as text, a server row whose vector lost bytes - and then `models`,
`verify`, `verify --fix`, `export` and `prune` run through the real CLI: each finishes
without a traceback, `verify` names the damaged entry, `export` leaves it out (so the
file imports cleanly elsewhere), and `verify --fix` removes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.stores import close_all, open_store
from tests.billing import BillingProvider, texts
from tests.reliability._helpers import fresh_cache_url

Damage = Callable[[str, int], None]
"""Damages the entry with this id in the cache at this URL."""


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def _cut_diskcache_value(url: str, entry_id: int) -> None:
    store = open_store(url)
    value = store._kv[entry_id]  # type: ignore[attr-defined]
    store._kv[entry_id] = value[:-5]  # type: ignore[attr-defined]  # as a torn value would read


def _sqlite_text_not_utf8(url: str, entry_id: int) -> None:
    with sqlite3.connect(url[len("sqlite:///") :]) as conn:
        conn.execute("UPDATE entries SET text = CAST(X'66ff80' AS TEXT) WHERE id = ?", (entry_id,))


def _sqlite_vector_as_text(url: str, entry_id: int) -> None:
    with sqlite3.connect(url[len("sqlite:///") :]) as conn:
        conn.execute("UPDATE entries SET vec = 'not a vector' WHERE id = ?", (entry_id,))


def _server_vector_cut(url: str, entry_id: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cut = "substring(vec from 1 for 10)" if url.startswith("postgresql") else "LEFT(vec, 10)"
        conn.execute(sa.text(f"UPDATE entries SET vec = {cut} WHERE id = :i"), {"i": entry_id})
    engine.dispose()


CASES: dict[str, tuple[str, Damage]] = {
    "diskcache-value-cut-short": ("diskcache", _cut_diskcache_value),
    "sqlite-text-not-utf8": ("sqlite", _sqlite_text_not_utf8),
    "sqlite-vector-stored-as-text": ("sqlite", _sqlite_vector_as_text),
    "postgresql-vector-cut": ("postgresql", _server_vector_cut),
    "mariadb-vector-cut": ("mariadb", _server_vector_cut),
}


@pytest.fixture(params=list(CASES))
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A cache of 10 texts (kept) whose 4th entry is damaged; yields its URL and that id."""
    backend, damage = CASES[request.param]
    with fresh_cache_url(backend, tmp_path) as url:
        ef = Cached(BillingProvider(), url, store_text=True)
        ef.embed(texts(10))
        store = open_store(url)
        ns = store.namespaces()[0]
        victim = sorted(e.id for batch in store.iter_entries(ns.id) for e in batch)[3]
        close_all()
        damage(url, victim)
        close_all()
        yield url, victim


def test_every_management_command_reports_a_damaged_entry_instead_of_crashing(
    damaged: tuple[str, int], tmp_path: Path
) -> None:
    url, victim = damaged
    models = run("models", "--cache", url)
    assert models.exit_code == 0 and "test-billing/bill-small" in models.output

    verify = run("verify", "--cache", url)
    assert verify.exit_code == 1
    assert f"bad entry {victim} " in verify.output and "checked 10 entries: 1 bad" in verify.output

    export = run("export", "--cache", url, str(tmp_path / "out.gz"))
    assert export.exit_code == 0, export.output
    assert "9 entries" in export.output and "left out 1 damaged entry" in export.output
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    imported = run("import", "--cache", elsewhere, str(tmp_path / "out.gz"))
    assert imported.exit_code == 0 and "9 added" in imported.output, imported.output

    dry = run("prune", "--cache", url, "--max-size", "0", "--dry-run")
    assert dry.exit_code == 0 and "would remove 10 entries" in dry.output, dry.output

    fixed = run("verify", "--cache", url, "--fix")
    assert fixed.exit_code == 0 and "1 bad, 1 removed" in fixed.output
    again = run("verify", "--cache", url)
    assert again.exit_code == 0 and "checked 9 entries: 0 bad" in again.output

    pruned = run("prune", "--cache", url, "--max-size", "0")
    assert pruned.exit_code == 0 and "removed 9 entries" in pruned.output, pruned.output


def test_a_damaged_entry_is_re_embedded_and_replaced_on_next_use(damaged: tuple[str, int]) -> None:
    url, _victim = damaged
    provider = BillingProvider()
    want = Cached(BillingProvider(), "memory://reference").embed(texts(10))
    got = Cached(provider, url, store_text=True).embed(texts(10))
    assert got.tobytes() == want.tobytes()
    assert len(provider.texts_sent) <= 1
