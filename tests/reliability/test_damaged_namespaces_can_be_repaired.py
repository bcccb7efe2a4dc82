"""A namespace whose stored record is invalid never leaves its model broken for good.

On SQLite, diskcache and PostgreSQL a namespace record is damaged the way an older or
foreign writer (or a damaged disk) could leave it: a zero, negative or wrong recorded
dimension, a spec that is not JSON, or one naming an unknown dtype. Then, through the
real CLI, `models`, `stats` and `verify` list it as damaged (saying what is wrong)
instead of crashing; `verify --fix` repairs it (or removes what no model can reach), or
`prune --model M --remove-namespaces` removes it; and afterwards `Cached` on that model
embeds and caches again.
"""

from __future__ import annotations

import json
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

MODEL = "test-billing/bill-small"


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def damage_record(url: str, dim: object = "keep", spec: str | None = None) -> None:
    """Overwrite the first namespace's recorded dimension and/or spec, below the store."""
    if url.startswith("diskcache://"):
        store = open_store(url)
        kv = store._kv  # type: ignore[attr-defined]
        (key,) = kv["meta:namespaces"].values()
        record = dict(kv["ns:" + key])
        if dim != "keep":
            record["dim"] = dim
        if spec is not None:
            record["spec"] = spec
        kv["ns:" + key] = record
        close_all()
        return
    sets, params = [], {}
    if dim != "keep":
        sets.append("dim = :dim")
        params["dim"] = dim
    if spec is not None:
        sets.append("spec = :spec")
        params["spec"] = spec
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute(f"UPDATE namespaces SET {', '.join(sets)}", params)
        return
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE namespaces SET {', '.join(sets)}"), params)
    engine.dispose()


def first_spec(url: str) -> dict[str, object]:
    store = open_store(url)
    spec = store.namespaces()[0].spec.to_dict()
    close_all()
    return spec


@pytest.fixture(params=["sqlite", "diskcache", "postgresql"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A cache holding 6 texts of one model, with usage stats."""
    with fresh_cache_url(request.param, tmp_path) as url:
        Cached(BillingProvider(), url).embed(texts(6))
        close_all()
        yield url
        close_all()


def works_again(url: str) -> None:
    """Cached on the model embeds new texts, stores them, and serves them as hits next time."""
    close_all()
    provider = BillingProvider()
    want = Cached(BillingProvider(), "memory://reference").embed(texts(8))
    got = Cached(provider, url, on_store_error="raise").embed(texts(8))
    assert got.tobytes() == want.tobytes()
    close_all()
    again = BillingProvider()
    assert Cached(again, url, on_store_error="raise").embed(texts(8)).tobytes() == want.tobytes()
    assert again.texts_sent == []
    close_all()


DimDamage = Callable[[str], None]
WRONG_DIMS: dict[str, object] = {"zero": 0, "negative": -3, "wrong": 5}


@pytest.mark.parametrize("wrong", list(WRONG_DIMS))
def test_a_wrong_recorded_dimension_is_listed_and_verify_fix_repairs_it(
    cache: str, wrong: str
) -> None:
    damage_record(cache, dim=WRONG_DIMS[wrong])

    listed = run("models", "--cache", cache)
    assert listed.exit_code == 0 and MODEL in listed.output
    if wrong != "wrong":  # an invalid value is visible without reading the entries
        assert "damaged:" in listed.output and "recorded dimension" in listed.output
        assert "damaged namespace" in run("stats", "--cache", cache).output
    checked = run("verify", "--cache", cache)
    assert checked.exit_code == 1
    assert f"damaged namespace {MODEL}" in checked.output and "0 bad" in checked.output

    fixed = run("verify", "--cache", cache, "--fix")
    assert fixed.exit_code == 0 and "dimension set to" in fixed.output, fixed.output
    clean = run("verify", "--cache", cache)
    assert clean.exit_code == 0 and "checked 6 entries: 0 bad" in clean.output, clean.output
    works_again(cache)


def test_an_emptied_namespace_forgets_a_wrong_dimension(cache: str) -> None:
    damage_record(cache, dim=5)
    pruned = run("prune", "--cache", cache, "--model", "bill-small", "--max-size", "0")
    assert pruned.exit_code == 0 and "removed 6 entries" in pruned.output, pruned.output
    works_again(cache)


def test_an_unreadable_spec_is_listed_and_verify_fix_removes_the_namespace(cache: str) -> None:
    damage_record(cache, spec="{not json")

    for command in ("models", "stats"):
        listed = run(command, "--cache", cache)
        assert listed.exit_code == 0 and "not valid JSON" in listed.output, listed.output
    checked = run("verify", "--cache", cache)
    assert checked.exit_code == 1 and "its spec is not valid JSON" in checked.output

    fixed = run("verify", "--cache", cache, "--fix")
    assert fixed.exit_code == 0
    assert "removed with its 6 entries and its usage stats" in fixed.output, fixed.output
    assert "no namespaces" in run("models", "--cache", cache).output
    works_again(cache)


def test_prune_removes_a_damaged_namespace_and_its_stats_only_when_asked(cache: str) -> None:
    spec = first_spec(cache)
    damage_record(cache, spec=json.dumps({**spec, "dtype": "bfloat16"}))
    assert "namespace dtype 'bfloat16'" in run("models", "--cache", cache).output

    kept = run("prune", "--cache", cache, "--model", "bill-small", "--remove-namespaces")
    assert kept.exit_code == 1
    assert "has usage stats" in kept.output and "--with-stats" in kept.output
    assert MODEL in run("models", "--cache", cache).output  # nothing was removed

    removed = run(
        "prune", "--cache", cache, "--model", "bill-small", "--remove-namespaces", "--with-stats"
    )
    assert removed.exit_code == 0, removed.output
    assert (
        "removed the namespace, 6 entries" in removed.output and "its usage stats" in removed.output
    )
    assert "no namespaces" in run("models", "--cache", cache).output
    assert "no usage recorded" in run("stats", "--cache", cache).output
    works_again(cache)
