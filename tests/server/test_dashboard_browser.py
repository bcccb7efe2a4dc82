"""The dashboard in a real browser (Debian's chromium driven by Playwright).

The test fails, never skips, when the browser cannot start: `.ci/run` installs chromium.
Screenshots land in ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachedembed import Cached
from cachedembed.manage import format_size
from cachedembed.server import Upstream, create_app
from cachedembed.server.dashboard import REFRESH_SECONDS, create_dashboard_app
from cachedembed.stats import _secs, _total_usd, _usd
from cachedembed.usage import day_iso, today
from tests.billing import texts

from .harness import ScriptedProvider, serving
from .known_usage import Known, build, usd

pytestmark = pytest.mark.usefixtures("billing_price")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# A refresh is due every REFRESH_SECONDS; waits allow several (an event the page signals).
REFRESH_WAIT_MS = 4 * REFRESH_SECONDS * 1000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(
                f"chromium did not start ({exc}); install it: apt-get install -y chromium",
                pytrace=False,
            )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    # No script error and no failed resource load (the login page itself answers 401).
    assert [e for e in errors if "status of 401" not in e] == [], errors


@pytest.fixture
def known(tmp_path: Path) -> Known:
    return build(f"sqlite:///{tmp_path / 'known.db'}")


def totals(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "[data-total]", "els => Object.fromEntries(els.map(e => [e.dataset.total, e.textContent]))"
    )


def rows(page: Any, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr",
        "trs => trs.map(tr => Array.from(tr.cells, td => td.textContent))",
    )


def bars(page: Any, chart: str) -> list[list[float]]:
    """Per dataset, the drawn height of each bar of the Chart.js chart on canvas ``chart``."""
    return page.evaluate(
        """id => { const c = Chart.getChart(id);
                   return c.data.datasets.map((_, i) => c.getDatasetMeta(i).data.map(b => b.height)); }""",
        chart,
    )


def wait_for_refresh(page: Any, after: int = 0) -> None:
    page.wait_for_function(
        f"Number(document.body.dataset.refreshes || 0) > {after}", timeout=REFRESH_WAIT_MS
    )


def test_the_dashboard_shows_the_known_numbers_filters_and_charts_them(
    known: Known, page: Any
) -> None:
    with serving(create_dashboard_app(known.store)) as url:
        page.goto(f"{url}/dashboard?period=all")
        spent = usd(known.billed_today + 10_500)
        shown = totals(page)
        assert shown["texts"] == "202"
        assert shown["hit_rate"] == f"{100 * 70 / 202:.1f}%"
        unpriced = sum(known.unpriced.billed)
        tokens = known.billed_today + unpriced + 10_500
        assert shown["tokens_embedded"] == f"{tokens:,}"
        assert shown["dollars_spent"] == f"${spent:.6f} + unknown"
        assert page.is_visible("#unpriced-note") and not page.is_visible("#estimated-note")
        days = rows(page, "days")
        assert [d[0] for d in days] == [day_iso(today() - d) for d in (40, 10, 0)]
        assert days[0] == [day_iso(today() - 40), "100", "0", "100", _usd(usd(10_000)), "$0.00"]
        models = {(r[1], r[2]): r for r in rows(page, "models")}
        assert set(models) == {
            ("bill-small", "document"),
            ("bill-small", "query"),
            ("bill-unpriced", "document"),
        }
        doc = models[("bill-small", "document")]
        assert doc[:6] == [
            "test-billing",
            "bill-small",
            "document",
            "6",
            "20",
            format_size(20 * 6 * 4),
        ]
        assert doc[6:9] == [day_iso(today()), day_iso(today()), "195"]
        assert models[("bill-unpriced", "document")][9:] == ["0.0%", "unknown", "unknown"]
        # Charts: one bar per day and series, drawn (non-zero height where the value is).
        assert page.text_content("#chart-dollars-caption") == (
            "Spent vs saved per day, in tokens (some models have no price)"
        )
        spent_bars, saved_bars = bars(page, "chart-dollars")
        assert len(spent_bars) == len(saved_bars) == 3 and all(h > 0 for h in spent_bars)
        hits_bars, misses_bars = bars(page, "chart-hits")
        assert hits_bars[0] == 0 and hits_bars[1] > 0 and all(h > 0 for h in misses_bars)
        # A refresh from the JSON API formats every number exactly as the server did.
        before = (totals(page), rows(page, "days"), rows(page, "models"))
        wait_for_refresh(page)
        assert (totals(page), rows(page, "days"), rows(page, "models")) == before
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-all.png"), full_page=True)

        # A running job shows up without a reload.
        refreshed = int(page.evaluate("document.body.dataset.refreshes"))
        known.cached.embed(texts(8, "live"))
        known.store.flush()
        page.wait_for_function(
            "document.querySelector('[data-total=texts]').textContent === '210'",
            timeout=REFRESH_WAIT_MS,
        )
        assert int(page.evaluate("document.body.dataset.refreshes")) > refreshed

        # The period filter, through the plain GET form.
        page.check("input[name=period][value='7d']")
        page.click("#apply")
        page.wait_for_url("**/dashboard?period=7d*")
        assert totals(page)["texts"] == f"{47 + 8}"
        assert [d[0] for d in rows(page, "days")] == [day_iso(today())]
        assert [len(b) for b in bars(page, "chart-hits")] == [1, 1]

        # The model filter: only the unpriced model, whose dollars are unknown (never $0).
        page.select_option("#model-filter", "test-billing/bill-unpriced")
        page.click("#apply")
        page.wait_for_url("**model=test-billing%2Fbill-unpriced*")
        shown = totals(page)
        assert (shown["texts"], shown["dollars_spent"], shown["dollars_saved"]) == (
            "6",
            "unknown",
            "unknown",
        )
        assert [r[1] for r in rows(page, "models")] == ["bill-unpriced"]
        assert page.text_content("#scope").startswith(
            f"Since {day_iso(today() - 6)} (UTC), models containing “test-billing/bill-unpriced”."
        )

        # A custom range: the one day ten days ago, priced, so the chart is in dollars.
        page.select_option("#model-filter", "")
        page.check("input[name=period][value='custom']")
        page.fill("input[name=from]", day_iso(today() - 15))
        page.fill("input[name=to]", day_iso(today() - 5))
        page.click("#apply")
        page.wait_for_url("**period=custom*")
        shown = totals(page)
        assert (shown["texts"], shown["dollars_saved"]) == ("55", _usd(usd(4000)))
        assert shown["provider_seconds_saved"] == _secs(shown_seconds(known, page))
        assert page.text_content("#chart-dollars-caption") == "Spent vs saved per day, in dollars"
        assert [len(b) for b in bars(page, "chart-dollars")] == [1, 1]
        page.screenshot(path=str(ARTIFACTS / "dashboard-custom.png"), full_page=True)


def shown_seconds(known: Known, page: Any) -> float:
    """Time saved in the shown window, from the JSON endpoint the page polls."""
    data = page.evaluate(
        "async () => (await (await fetch('/dashboard/api/stats' + location.search)).json()).total"
    )
    assert _total_usd(data, "dollars_saved") == page.text_content("[data-total=dollars_saved]")
    return float(data["provider_seconds_saved"])


def test_on_serve_the_browser_logs_in_with_the_key_and_never_sees_it(
    known: Known, page: Any
) -> None:
    key = "browser-test-key-0123456789"
    provider = ScriptedProvider("small-1", 8)
    app = create_app([Upstream.of(Cached(provider, known.store), "scripted:small-1")], api_key=key)
    with serving(app) as url:  # type: ignore[arg-type]
        response = page.goto(f"{url}/dashboard")
        assert response.status == 401
        assert page.query_selector("[data-total]") is None
        page.fill("input[name=key]", "wrong")
        page.click("button[type=submit]")
        assert "Wrong key" in page.text_content("[role=alert]")
        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-total=texts]")
        assert totals(page)["texts"] == f"{47 + 55}"  # the default period: 30 days
        assert key not in page.content()
        assert key not in str(page.context.cookies())
        wait_for_refresh(page)  # the polling requests carry the session cookie
        page.click("text=Log out")
        page.wait_for_selector("input[name=key]")


def test_without_javascript_the_tables_show_every_number(known: Known, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        tab = context.new_page()
        with serving(create_dashboard_app(known.store)) as url:
            tab.goto(f"{url}/dashboard?period=all")
            assert totals(tab)["texts"] == "202"
            assert len(rows(tab, "models")) == 3
            tab.check("input[name=period][value='7d']")
            tab.click("#apply")
            tab.wait_for_url("**period=7d*")
            assert totals(tab)["texts"] == "47"
    finally:
        context.close()
