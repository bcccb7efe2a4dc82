"""The read-only web dashboard: what a cache saved, per day and per model, in a browser.

Served at ``/dashboard`` by ``cachedembed dashboard`` (over any cache) and by
``cachedembed serve`` (behind its API key). The page is rendered on the server (Jinja2), so
the numbers and tables need no JavaScript; a small script redraws the two charts (Chart.js,
vendored under ``static/vendor``) and refreshes the page's numbers every few seconds from the
JSON endpoints, which scripts can use too:

- ``GET /dashboard/api/stats?period=7d|30d|all|custom&from=YYYY-MM-DD&to=YYYY-MM-DD&model=SUBSTR``
  is exactly ``cachedembed stats --by day --json`` for that window (``--since 7d`` etc.);
  a custom range with ``to`` adds ``until`` and ``until_day``.
- ``GET /dashboard/api/models?model=SUBSTR`` is exactly ``cachedembed models --json``.

With an API key, every page and endpoint but the login form and the static files needs
``Authorization: Bearer KEY`` or the session cookie the login form sets (an HMAC of a fixed
label under the key, never the key itself). The key is never read from the URL.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..manage import format_size, list_models
from ..redact import REDACTED
from ..stats import _num, _secs, _total_usd, _usd, report
from ..stores import Store
from ..usage import parse_day, parse_days_ago
from . import errors
from .bodies import read_body
from .errors import APIError

PREFIX = "/dashboard"
PERIODS = {"7d": "Last 7 days", "30d": "Last 30 days", "all": "All time", "custom": "Custom range"}
DEFAULT_PERIOD = "30d"
REFRESH_SECONDS = 5
FOOTPRINT_TTL_SECONDS = 30.0
"""Entries and bytes come from a scan of the entries table: refreshed at most this often."""
SESSION_COOKIE = "cachedembed_dashboard"
_MAX_MODEL_FILTER = 200
_MAX_LOGIN_BODY = 4096

_HERE = Path(__file__).parent
_templates = Jinja2Templates(directory=str(_HERE / "templates"))


def is_dashboard_path(path: str) -> bool:
    """Paths the dashboard answers (and authorizes) itself."""
    return path == PREFIX or path.startswith(PREFIX + "/")


# -- the query: period and model filter ----------------------------------------


@dataclass(frozen=True)
class Query:
    """A window of UTC days and an optional model filter, from the page's GET form."""

    period: str
    since_day: int | None
    until_day: int | None
    model: str | None
    start: str = ""
    end: str = ""

    def params(self) -> dict[str, str]:
        """The query string that selects this window again."""
        out = {"period": self.period}
        if self.period == "custom":
            out.update({"from": self.start, "to": self.end})
        if self.model:
            out["model"] = self.model
        return out


def _day(value: str, name: str) -> int | None:
    if not value:
        return None
    try:
        return parse_day(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a date: write YYYY-MM-DD") from None


def parse_query(params: Any) -> Query:
    """``period``, ``from``, ``to`` and ``model`` from a query string; ``ValueError`` if invalid.

    ``7d`` and ``30d`` mean what ``cachedembed stats --since 7d`` means (today included);
    ``custom`` uses ``from`` and ``to`` (either may be empty: open-ended).
    """
    period = params.get("period") or DEFAULT_PERIOD
    if period not in PERIODS:
        raise ValueError(f"period={period!r} is not one of {', '.join(PERIODS)}")
    model = (params.get("model") or "").strip() or None
    if model is not None and len(model) > _MAX_MODEL_FILTER:
        raise ValueError(f"model filter is longer than {_MAX_MODEL_FILTER} characters")
    if period == "all":
        return Query(period, None, None, model)
    if period != "custom":
        return Query(period, parse_days_ago(period), None, model)
    start, end = (params.get("from") or "").strip(), (params.get("to") or "").strip()
    since, until = _day(start, "from"), _day(end, "to")
    if since is not None and until is not None and since > until:
        raise ValueError(f"from={start} is after to={end}: swap them")
    return Query(period, since, until, model, start, end)


# -- the numbers ----------------------------------------------------------------


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by :data:`~cachedembed.redact.REDACTED` (as SQL stores already report theirs)."""
    if url.startswith(("memory://", "diskcache://")):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://" + REDACTED


class Numbers:
    """Reads the reports the page shows; the footprint scan is cached for a few seconds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._footprints: dict[str | None, tuple[float, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def stats(self, q: Query) -> dict[str, Any]:
        self.store.flush()  # buffered hit counters of this process belong in the numbers
        data = report(
            self.store, since_day=q.since_day, until_day=q.until_day, model=q.model, by_day=True
        )
        data["cache"] = redacted_url(data["cache"])
        return data

    def models(self, model: str | None) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            cached = self._footprints.get(model)
            if cached is not None and now - cached[0] < FOOTPRINT_TTL_SECONDS:
                return cached[1]
        infos = [asdict(i) for i in list_models(self.store, model)]
        with self._lock:
            if len(self._footprints) > 32:  # filters come from the URL: keep the memo bounded
                self._footprints.clear()
            self._footprints[model] = (now, infos)
        return infos

    def model_names(self) -> list[str]:
        return sorted({f"{ns.spec.provider}/{ns.spec.model}" for ns in self.store.namespaces()})


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _totals(t: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, label, shown value) of the totals, formatted as ``cachedembed stats`` prints them."""
    return [
        ("texts", "Texts", f"{t['texts']:,}"),
        ("hit_rate", "Hit rate", _rate(t["hit_rate"])),
        (
            "tokens_embedded",
            "Tokens embedded",
            _num(t["tokens_embedded"], t["tokens_embedded_estimated"]),
        ),
        ("tokens_saved", "Tokens saved", _num(t["tokens_saved"], t["tokens_saved_estimated"])),
        ("dollars_spent", "Spent", _total_usd(t, "dollars_spent")),
        ("dollars_saved", "Saved", _total_usd(t, "dollars_saved")),
        ("provider_seconds_saved", "Provider time saved", _secs(t["provider_seconds_saved"])),
    ]


def _model_rows(models: list[dict[str, Any]], usage: list[dict[str, Any]]) -> list[list[str]]:
    """One row per namespace: its footprint joined with its usage in the window."""
    by_ns = {u["namespace"]: u for u in usage}
    rows = []
    for m in models:
        u = by_ns.get(m["namespace"])
        rows.append(
            [
                m["provider"],
                m["model"],
                m["role"],
                str(m["dim"] or "-"),
                f"{m['entries']:,}",
                format_size(m["bytes"]),
                m["first_used"] or "-",
                m["last_used"] or "-",
                f"{u['texts']:,}" if u else "0",
                _rate(u["hit_rate"]) if u else "-",
                _usd(u["dollars_spent"]) if u else "-",
                _usd(u["dollars_saved"]) if u else "-",
            ]
        )
    return rows


def _day_rows(days: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            d["day"],
            f"{d['texts']:,}",
            f"{d['hits']:,}",
            f"{d['misses']:,}",
            _total_usd(d, "dollars_spent"),
            _total_usd(d, "dollars_saved"),
        ]
        for d in days
    ]


def _scope(data: dict[str, Any]) -> str:
    """The window and filter in words, e.g. ``Since 2026-11-02 (UTC), models containing "mini".``"""
    since, until = data["since"], data.get("until")
    if since and until:
        text = f"From {since} to {until} (UTC)"
    elif since or until:
        text = f"Since {since} (UTC)" if since else f"Up to {until} (UTC)"
    else:
        text = "All time"
    return text + (
        f", models containing “{data['model_filter']}”." if data["model_filter"] else "."
    )


def _estimated(t: dict[str, Any]) -> bool:
    return bool(t["tokens_embedded_estimated"] or t["tokens_saved_estimated"])


# -- authorization --------------------------------------------------------------


class Access:
    """Who may see the dashboard: anyone without a key, else a bearer header or the session cookie."""

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self._bearer = f"Bearer {api_key}".encode() if api_key else b""
        self.session = (
            hmac.new(api_key.encode(), b"cachedembed dashboard session", hashlib.sha256).hexdigest()
            if api_key
            else ""
        )

    def allows(self, request: Request) -> bool:
        if not self.api_key:
            return True
        header = request.headers.get("authorization", "").encode()
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(header, self._bearer) or hmac.compare_digest(
            cookie.encode(), self.session.encode()
        )

    def key_matches(self, key: str) -> bool:
        return bool(self.api_key) and hmac.compare_digest(
            key.encode(), (self.api_key or "").encode()
        )


# -- endpoints ------------------------------------------------------------------


def _api_error(error: APIError) -> Response:
    return JSONResponse(error.openai_body(), error.status, headers=error.headers)


def _login_page(request: Request, status: int, message: str | None = None) -> Response:
    response = _templates.TemplateResponse(
        request, "login.html", {"prefix": PREFIX, "message": message}, status_code=status
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


class _Dashboard:
    """The dashboard's endpoints over one store; each method answers one route."""

    def __init__(self, store: Store, api_key: str | None) -> None:
        self.numbers = Numbers(store)
        self.access = Access(api_key)

    async def page(self, request: Request) -> Response:
        if not self.access.allows(request):
            return _login_page(request, 401)
        context: dict[str, Any] = {
            "prefix": PREFIX,
            "periods": PERIODS,
            "refresh_seconds": REFRESH_SECONDS,
            "logout": bool(self.access.api_key),
            "model_names": await run_in_threadpool(self.numbers.model_names),
        }
        try:
            q = parse_query(request.query_params)
        except ValueError as exc:
            context.update(error=str(exc), query=Query(DEFAULT_PERIOD, None, None, None))
            return _templates.TemplateResponse(request, "dashboard.html", context, 400)
        context.update(await self._page_numbers(q))
        return _templates.TemplateResponse(request, "dashboard.html", context)

    async def _page_numbers(self, q: Query) -> dict[str, Any]:
        data = await run_in_threadpool(self.numbers.stats, q)
        models = await run_in_threadpool(self.numbers.models, q.model)
        return {
            "query": q,
            "data": data,
            "models": models,
            "scope": _scope(data),
            "totals": _totals(data["total"]),
            "estimated": _estimated(data["total"]),
            "model_rows": _model_rows(models, data["models"]),
            "day_rows": _day_rows(data["days"]),
            "api_query": urlencode(q.params()),
        }

    async def _api(self, request: Request, fn: Any) -> Response:
        if not self.access.allows(request):
            return _api_error(errors.unauthorized())
        try:
            q = parse_query(request.query_params)
        except ValueError as exc:
            return _api_error(errors.invalid(str(exc)))
        return JSONResponse(await run_in_threadpool(fn, q))

    async def api_stats(self, request: Request) -> Response:
        return await self._api(request, self.numbers.stats)

    async def api_models(self, request: Request) -> Response:
        return await self._api(request, lambda q: self.numbers.models(q.model))

    async def login(self, request: Request) -> Response:
        try:
            raw = await read_body(request, _MAX_LOGIN_BODY)
        except APIError as exc:
            return _login_page(request, exc.status, exc.message)
        key = parse_qs(raw.decode("utf-8", "replace")).get("key", [""])[0]
        if not self.access.key_matches(key):
            message = "Wrong key: enter the API key the server was started with."
            return _login_page(request, 401, message)
        response = RedirectResponse(PREFIX, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.access.session,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=PREFIX,
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(PREFIX, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response


def dashboard_routes(store: Store, api_key: str | None = None) -> list[BaseRoute]:
    """The routes under ``/dashboard`` over ``store``; ``api_key`` guards all but login and static."""
    board = _Dashboard(store, api_key)
    return [
        Route(PREFIX, board.page, methods=["GET"]),
        Route(PREFIX + "/api/stats", board.api_stats, methods=["GET"]),
        Route(PREFIX + "/api/models", board.api_models, methods=["GET"]),
        Route(PREFIX + "/login", board.login, methods=["POST"]),
        Route(PREFIX + "/logout", board.logout, methods=["POST"]),
        Mount(PREFIX + "/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
    ]


def create_dashboard_app(store: Store, api_key: str | None = None) -> Any:
    """The standalone app of ``cachedembed dashboard``: the dashboard, and ``/`` leading to it."""
    from starlette.applications import Starlette

    async def home(request: Request) -> Response:
        return RedirectResponse(PREFIX, status_code=307)

    return Starlette(routes=[Route("/", home), *dashboard_routes(store, api_key)])
