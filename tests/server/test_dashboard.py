"""The dashboard's JSON API: the numbers of `cachedembed stats --json`, and the serve key guarding it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.server import Upstream, create_app
from cachedembed.server.dashboard import SESSION_COOKIE, create_dashboard_app, redacted_url
from cachedembed.stats import report
from cachedembed.usage import day_iso, today

from .harness import ScriptedProvider, serving
from .known_usage import FORTY_DAYS_AGO, TEN_DAYS_AGO, Known, build, usd

pytestmark = pytest.mark.usefixtures("billing_price")

KEY = "dashboard-test-key-9876543210"


@pytest.fixture
def known(tmp_path: Path) -> Known:
    return build(f"sqlite:///{tmp_path / 'known.db'}")


@pytest.fixture
def dashboard(known: Known) -> Iterator[str]:
    """``cachedembed dashboard``'s app over the known cache, on loopback."""
    with serving(create_dashboard_app(known.store)) as url:
        yield url


def cli_json(*args: str) -> object:
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("model", [None, "small", "UNPRICED"])
@pytest.mark.parametrize(
    ("period", "since"), [("7d", ["--since", "7d"]), ("30d", ["--since", "30d"]), ("all", [])]
)
def test_the_stats_endpoint_is_stats_by_day_json_for_the_same_period_and_model(
    known: Known, dashboard: str, period: str, since: list[str], model: str | None
) -> None:
    params = {"period": period, **({"model": model} if model else {})}
    served = requests.get(f"{dashboard}/dashboard/api/stats", params=params)
    assert served.status_code == 200
    flags = ["--model", model] if model else []
    assert served.json() == cli_json("stats", "--cache", known.url, "--by", "day", *since, *flags)


def test_the_windows_hold_exactly_the_usage_billed_in_them(known: Known, dashboard: str) -> None:
    def total(period: str) -> dict[str, object]:
        data = requests.get(f"{dashboard}/dashboard/api/stats", params={"period": period}).json()
        return {"days": [d["day"] for d in data["days"]], **data["total"]}

    unpriced = sum(known.unpriced.billed)
    week = total("7d")
    assert week["days"] == [day_iso(today())]
    assert (week["texts"], week["hits"], week["misses"]) == (20 + 20 + 1 + 6, 20, 27)
    assert week["tokens_embedded"] == known.billed_today + unpriced
    # Summed per namespace (documents, queries); the unpriced model is left out.
    assert week["dollars_spent"] == pytest.approx(usd(known.billed_today), rel=1e-12)
    assert week["models_without_price"] == 1

    month = total("30d")
    assert month["days"] == [day_iso(today() - 10), day_iso(today())]
    assert month["texts"] == week["texts"] + 55
    assert month["tokens_saved"] == week["tokens_saved"] + TEN_DAYS_AGO.tokens_saved

    ever = total("all")
    assert len(ever["days"]) == 3
    assert ever["texts"] == 202 and ever["hits"] == 70
    assert ever["tokens_embedded"] == (
        known.billed_today
        + unpriced
        + TEN_DAYS_AGO.tokens_embedded
        + FORTY_DAYS_AGO.tokens_embedded
    )
    assert ever["dollars_spent"] == pytest.approx(usd(known.billed_today + 10_500), rel=1e-12)


def test_a_custom_range_keeps_only_the_days_from_to(known: Known, dashboard: str) -> None:
    first, last = today() - 15, today() - 5
    params = {"period": "custom", "from": day_iso(first), "to": day_iso(last)}
    data = requests.get(f"{dashboard}/dashboard/api/stats", params=params).json()
    assert data == report(known.store, since_day=first, until_day=last, by_day=True)
    assert (data["since"], data["until"]) == (day_iso(first), day_iso(last))
    assert [d["day"] for d in data["days"]] == [day_iso(today() - 10)]
    assert data["total"]["hits"] == TEN_DAYS_AGO.hits
    open_ended = requests.get(
        f"{dashboard}/dashboard/api/stats", params={"period": "custom", "to": day_iso(last)}
    ).json()
    assert open_ended["total"]["texts"] == 55 + 100


def test_the_models_endpoint_is_models_json(known: Known, dashboard: str) -> None:
    for model in (None, "unpriced"):
        params = {"model": model} if model else {}
        served = requests.get(f"{dashboard}/dashboard/api/models", params=params).json()
        assert served == cli_json("models", "--cache", known.url, *(["-m", model] if model else []))
    assert [(m["model"], m["role"], m["entries"]) for m in served] == [
        ("bill-unpriced", "document", 6)
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"period": "1y"}, "period='1y'"),
        ({"period": "custom", "from": "2026-13-01"}, "from='2026-13-01'"),
        ({"period": "custom", "from": "2026-02-01", "to": "2026-01-01"}, "swap them"),
        ({"model": "x" * 201}, "longer than 200"),
    ],
)
def test_a_bad_period_or_date_is_one_400_naming_it(
    dashboard: str, params: dict[str, str], named: str
) -> None:
    api = requests.get(f"{dashboard}/dashboard/api/stats", params=params)
    assert api.status_code == 400
    assert named in api.json()["error"]["message"]
    page = requests.get(f"{dashboard}/dashboard", params=params)
    assert page.status_code == 400
    assert re.search(
        r'role="alert">Error: [^<]*' + re.escape(named.replace("'", "&#39;")), page.text
    )


def test_the_page_works_without_javascript(known: Known, dashboard: str) -> None:
    page = requests.get(f"{dashboard}/dashboard", params={"period": "all"}).text
    totals = dict(re.findall(r'data-total="(\w+)">([^<]*)<', page))
    assert totals["texts"] == "202"
    assert totals["dollars_spent"] == f"${usd(known.billed_today + 10_500):.6f} + unknown"
    rows = re.findall(r"<tr>((?:<td>[^<]*</td>)+)</tr>", page)
    assert len(rows) == 3 + 3  # three days, three namespaces
    assert requests.get(dashboard, allow_redirects=True).url == f"{dashboard}/dashboard"


def test_cache_urls_are_shown_without_their_password() -> None:
    assert redacted_url("postgresql+psycopg://cache:hunter2@db/emb") == (
        "postgresql+psycopg://cache:***@db/emb"
    )
    assert redacted_url("redis://:hunter2@host:6379/0") == "redis://:***@host:6379/0"
    assert redacted_url("sqlite:////tmp/c.db") == "sqlite:////tmp/c.db"


# -- behind `cachedembed serve`'s key ------------------------------------------------


@pytest.fixture
def served(known: Known) -> Iterator[str]:
    provider = ScriptedProvider("small-1", 8)
    provider.api_key = "sk-upstream-secret-0000"
    app = create_app([Upstream.of(Cached(provider, known.store), "scripted:small-1")], api_key=KEY)
    with serving(app) as url:  # type: ignore[arg-type]
        yield url


def test_without_the_key_the_dashboard_and_its_api_answer_401(served: str) -> None:
    for path in ("/dashboard", "/dashboard/api/stats", "/dashboard/api/models"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = requests.get(served + path, headers=headers)
            assert response.status_code == 401, path
            assert "data-total" not in response.text and "bill-small" not in response.text
    page = requests.get(served + "/dashboard")
    assert '<form method="post" action="/dashboard/login">' in page.text
    api = requests.get(served + "/dashboard/api/stats").json()
    assert api["error"]["code"] == "invalid_api_key"
    # The key is never read from the URL.
    for name in ("key", "api_key", "token"):
        assert requests.get(served + "/dashboard/api/stats", params={name: KEY}).status_code == 401


def test_the_key_in_a_header_or_the_login_forms_cookie_opens_the_dashboard(served: str) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert requests.get(served + "/dashboard/api/stats", headers=bearer).status_code == 200
    page = requests.get(served + "/dashboard", headers=bearer)
    assert page.status_code == 200 and "bill-small" in page.text
    assert KEY not in page.text and "sk-upstream-secret" not in page.text

    session = requests.Session()
    wrong = session.post(served + "/dashboard/login", data={"key": "nope"})
    assert wrong.status_code == 401 and "Wrong key: enter the API key" in wrong.text
    login = session.post(served + "/dashboard/login", data={"key": KEY}, allow_redirects=False)
    assert (login.status_code, login.headers["location"]) == (303, "/dashboard")
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert KEY not in cookie  # the cookie holds a token derived from the key, not the key
    assert session.cookies[SESSION_COOKIE]
    assert session.get(served + "/dashboard/api/stats").status_code == 200
    assert session.get(served + "/dashboard").status_code == 200
    # The cookie opens the read-only dashboard only, never the embedding API.
    cookie_only = {"Cookie": f"{SESSION_COOKIE}={session.cookies[SESSION_COOKIE]}"}
    embed = requests.post(
        served + "/v1/embeddings", json={"model": "small-1", "input": "x"}, headers=cookie_only
    )
    assert embed.status_code == 401

    session.post(served + "/dashboard/logout")
    assert session.get(served + "/dashboard/api/stats").status_code == 401


def test_the_dashboard_on_serve_shows_the_same_numbers_as_standalone(
    known: Known, served: str, dashboard: str
) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    for period in ("7d", "all"):
        a = requests.get(f"{served}/dashboard/api/stats", params={"period": period}, headers=bearer)
        b = requests.get(f"{dashboard}/dashboard/api/stats", params={"period": period})
        assert a.json() == b.json()


def test_cachedembed_dashboard_serves_the_page_over_a_cache(known: Known) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachedembed", "dashboard", "--cache", known.url, "--port", "0"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(
            r"dashboard on (http://127\.0\.0\.1:\d+)/dashboard \(cache sqlite:///", line
        )
        assert match, line
        url = match.group(1)
        deadline = time.monotonic() + 30
        while True:  # the port is bound before uvicorn starts accepting
            try:
                page = requests.get(f"{url}/dashboard", params={"period": "all"})
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "dashboard did not come up"
                time.sleep(0.1)
        assert page.status_code == 200 and 'data-total="texts">202<' in page.text
        served = requests.get(f"{url}/dashboard/api/stats", params={"period": "all"}).json()
        assert served == cli_json("stats", "--cache", known.url, "--by", "day")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
