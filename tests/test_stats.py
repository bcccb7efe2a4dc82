"""Usage reports: exact against what the provider billed, priced, filtered, per day, and never a scan."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from cachedembed import Cached
from cachedembed.stats import BAR_WIDTH, render_days, render_table, report
from cachedembed.stores import Store, open_store
from cachedembed.usage import UsageDelta, day_iso, parse_days_ago, today
from tests.billing import PRICE, BillingProvider, fill, record_history, texts

pytestmark = pytest.mark.usefixtures("billing_price")


def usd(tokens: int) -> float:
    return tokens * PRICE / 1_000_000


def test_tokens_and_dollars_agree_exactly_with_what_the_provider_billed(disk_url: str) -> None:
    provider = BillingProvider()
    ef = Cached(provider, disk_url)
    a, b = texts(20, "a"), texts(15, "b")
    ef.embed(a)
    billed_a = sum(provider.billed)
    ef.embed(b)
    billed_b = sum(provider.billed) - billed_a
    assert len(provider.billed) == 3 + 3  # batches of 7
    # A twice and B again, plus 4 new texts: only those reach the provider.
    ef.embed(a + b + a + texts(4, "c"))
    ef.embed(["what is cached?"], "query")
    ef.flush()

    data = report(open_store(disk_url))
    total = data["total"]
    assert total["tokens_embedded"] == sum(provider.billed)
    assert total["tokens_embedded_estimated"] == total["tokens_saved_estimated"] == 0
    # Hits save exactly what their entries cost when the provider billed them.
    saved = 2 * billed_a + billed_b
    assert total["tokens_saved"] == saved
    assert (total["texts"], total["hits"], total["misses"], total["calls"]) == (
        20 + 15 + 59 + 1,
        55,
        40,
        4,
    )
    assert total["hit_rate"] == 55 / 95
    assert total["provider_calls"] == len(provider.billed)
    assert total["dollars_spent"] == usd(sum(provider.billed))
    assert total["dollars_saved"] == usd(saved)
    assert total["models_without_price"] == 0
    doc, query = data["models"]
    assert (doc["role"], query["role"]) == ("document", "query")
    assert doc["tokens_embedded"] + query["tokens_embedded"] == sum(provider.billed)
    assert query["tokens_embedded"] == provider.billed[-1] == 3 + 3
    assert doc["price_per_million_tokens"] == PRICE
    assert doc["dim"] == 6


def test_a_model_without_a_price_costs_unknown_never_zero(disk_url: str) -> None:
    store = open_store(disk_url)
    unpriced = BillingProvider("bill-unpriced")
    Cached(unpriced, store).embed(texts(9))
    store.flush()
    alone = report(store)
    assert alone["models"][0]["dollars_spent"] is None
    assert alone["total"]["dollars_spent"] is None and alone["total"]["models_without_price"] == 1
    table = render_table(alone)
    assert "$0" not in table
    assert table.splitlines()[-1].split()[-4:-2] == ["unknown", "unknown"]

    priced = BillingProvider()
    Cached(priced, store).embed(texts(9))
    store.flush()
    mixed = report(store)
    assert mixed["total"]["dollars_spent"] == usd(sum(priced.billed))  # the priced model only
    assert mixed["total"]["tokens_embedded"] == sum(priced.billed) + sum(unpriced.billed)
    assert f"${usd(sum(priced.billed)):.6f} + unknown" in render_table(mixed)


def _history(store: Store) -> tuple[int, int]:
    """Three weeks of counters for two models written as stats rows; returns their namespace ids."""
    small = fill(store, 10, model="bill-small")
    large = fill(store, 10, model="bill-large", seed=1)
    now = today()
    deltas = {}
    for back in range(21):
        day = now - back
        deltas[(small.id, day)] = UsageDelta(
            calls=2,
            hits=100 + back,
            misses=10,
            provider_calls=1,
            provider_seconds=0.5,
            tokens_embedded=1000,
            tokens_saved=7000 + back,
        )
        deltas[(large.id, day)] = UsageDelta(
            calls=1,
            hits=1,
            misses=1,
            provider_calls=1,
            provider_seconds=0.25,
            tokens_embedded=30,
            tokens_saved=30,
        )
    record_history(store, deltas)
    return small.id, large.id


def test_since_and_model_filter_the_window_and_the_models(disk_url: str) -> None:
    store = open_store(disk_url)
    _history(store)
    week = report(store, since_day=parse_days_ago("7d"))
    assert week["since"] == day_iso(today() - 6)
    small, large = week["models"]
    assert (small["model"], large["model"]) == ("bill-small", "bill-large")
    assert small["tokens_embedded"] == 7 * 1000
    assert small["tokens_saved"] == sum(7000 + back for back in range(7))
    assert small["hits"] == sum(100 + back for back in range(7))
    assert large["dollars_spent"] is None  # bill-large has no price
    assert week["total"]["dollars_spent"] == usd(7000)

    only_large = report(store, model="large")
    assert [r["model"] for r in only_large["models"]] == ["bill-large"]
    assert only_large["total"]["tokens_embedded"] == 21 * 30
    since_date = report(store, since_day=parse_days_ago(day_iso(today() - 2)))
    assert since_date["total"]["misses"] == 3 * (10 + 1)


def test_time_saved_uses_the_namespace_measured_seconds_per_text(disk_url: str) -> None:
    store = open_store(disk_url)
    ns = fill(store, 1)
    record_history(
        store,
        {
            (ns.id, today() - 10): UsageDelta(misses=40, provider_seconds=2.0),
            (ns.id, today()): UsageDelta(hits=500),  # a warm re-run: no misses in the window
        },
    )
    data = report(store, since_day=today())
    assert data["models"][0]["provider_seconds_saved"] == pytest.approx(500 * 2.0 / 40)
    assert data["total"]["provider_seconds_saved"] == pytest.approx(25.0)


def test_by_day_rows_add_up_and_chart_spent_against_saved(disk_url: str) -> None:
    store = open_store(disk_url)
    _history(store)
    data = report(store, since_day=parse_days_ago("3d"), model="small", by_day=True)
    days = data["days"]
    assert [d["day"] for d in days] == [day_iso(today() - k) for k in (2, 1, 0)]
    assert (
        sum(d["tokens_saved"] for d in days) == data["total"]["tokens_saved"] == 7002 + 7001 + 7000
    )
    assert all(d["dollars_spent"] == usd(1000) for d in days)
    lines = render_days(data).splitlines()
    bars = [line.split()[-1] for line in lines[2:5]]
    # The busiest day fills the width; spent:saved is 1000:7002, so 4 blocks then shade.
    assert len(bars[0]) == BAR_WIDTH and bars[0].startswith("████░") and set(bars[0]) == {"█", "░"}
    assert lines[-1] == "chart: █ spent  ░ saved, in dollars"

    mixed = render_days(report(store, by_day=True))  # bill-large has no price: chart in tokens
    assert (
        mixed.splitlines()[-1] == "chart: █ spent  ░ saved, in tokens (some models have no price)"
    )


class _CountingStore:
    """Counts the stats rows a report reads and refuses every entry-reading method."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.stats_rows_read = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("lookup", "iter_entries", "namespace_usage"):
            raise AssertionError(f"report() called {name}: it must not read entries")
        return getattr(self.store, name)

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        rows = self.store.stats_rows(since_day)
        self.stats_rows_read += len(rows)
        return rows


@pytest.mark.slow  # builds a 100,000-entry cache
def test_report_on_100k_entries_reads_only_the_aggregated_rows(disk_url: str) -> None:
    store = open_store(disk_url)
    ns = fill(store, 100_000)
    record_history(
        store,
        {
            (ns.id, today() - k): UsageDelta(
                calls=1, hits=1000, misses=10_000, tokens_embedded=50_000, tokens_saved=5000
            )
            for k in range(10)
        },
    )
    statements: list[str] = []
    if disk_url.startswith("sqlite"):
        conn = store._raw().driver_connection  # type: ignore[attr-defined]
        assert isinstance(conn, sqlite3.Connection)
        conn.set_trace_callback(statements.append)
    counting = _CountingStore(store)
    data = report(counting, by_day=True)  # type: ignore[arg-type]
    assert counting.stats_rows_read == 10
    assert data["total"]["misses"] == 100_000 and data["total"]["tokens_embedded"] == 500_000
    assert data["total"]["dollars_saved"] == usd(50_000)
    assert len(data["days"]) == 10
    if disk_url.startswith("sqlite"):
        conn.set_trace_callback(None)
        assert statements and not [s for s in statements if "entries" in s]
