"""Usage reports built from the per-namespace, per-day counters (never from a scan of entries)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._printable import printable
from .errors import StoreError
from .keys import Role
from .pricing import dollars, price_per_million
from .stores.base import Namespace, Store
from .usage import UsageDelta, day_iso

if TYPE_CHECKING:
    from ._engine import Engine, Session


class UsageSource(Protocol):
    """What reports read: a :class:`~cachedembed.stores.Store` or the light SQLite reader."""

    url: str

    def namespaces(self) -> list[Namespace]: ...

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]: ...


def seconds_per_text(delta: UsageDelta) -> float | None:
    """Measured provider seconds per embedded text, ``None`` before the first miss."""
    return delta.provider_seconds / delta.misses if delta.misses else None


def summarize(delta: UsageDelta, per_text: float | None = None) -> dict[str, Any]:
    """Counters plus the figures derived from them (texts, hit rate, time saved).

    Time saved is hits times ``per_text`` (default: measured from ``delta`` itself).
    """
    texts = delta.hits + delta.misses
    if per_text is None:
        per_text = seconds_per_text(delta)
    return {
        "calls": delta.calls,
        "texts": texts,
        "hits": delta.hits,
        "misses": delta.misses,
        "hit_rate": delta.hits / texts if texts else None,
        "provider_calls": delta.provider_calls,
        "tokens_embedded": delta.tokens_embedded,
        "tokens_embedded_estimated": delta.tokens_embedded_estimated,
        "tokens_saved": delta.tokens_saved,
        "tokens_saved_estimated": delta.tokens_saved_estimated,
        "tokens_batch": delta.tokens_batch,
        "provider_seconds": delta.provider_seconds,
        # Estimated from the namespace's own measured seconds per embedded text.
        "provider_seconds_saved": per_text * delta.hits if per_text is not None else None,
    }


def namespace_totals(store: UsageSource, namespaces: Iterable[Namespace]) -> dict[str, Any]:
    """Totals over ``namespaces`` (all days), with a per-role breakdown."""
    wanted = {ns.id: ns for ns in namespaces}
    per_ns: dict[int, UsageDelta] = {ns_id: UsageDelta() for ns_id in wanted}
    for ns_id, _day, delta in store.stats_rows():
        if ns_id in per_ns:
            per_ns[ns_id].add(delta)
    # Several namespaces may share a role (one per option set of an adapter): add them up.
    by_role: dict[Role, UsageDelta] = {}
    for ns_id, delta in per_ns.items():
        by_role.setdefault(wanted[ns_id].spec.role, UsageDelta()).add(delta)
    return role_totals(by_role)


def role_totals(by_role: Mapping[Role, UsageDelta]) -> dict[str, Any]:
    """:func:`summarize` of the sum of ``by_role``, with each role's own under ``"by_role"``."""
    total = UsageDelta()
    for delta in by_role.values():
        total.add(delta)
    return {
        **summarize(total),
        "by_role": {role: summarize(delta) for role, delta in by_role.items()},
    }


Prices = tuple[float | None, float | None]
"""(normal, batch-API) USD per 1M tokens of a namespace's model."""


def _prices(ns: Namespace) -> Prices:
    return (
        price_per_million(ns.spec.provider, ns.spec.model),
        price_per_million(ns.spec.provider, ns.spec.model, batch=True),
    )


def _dollars(delta: UsageDelta, prices: Prices) -> dict[str, float | None]:
    """Spent (synchronous plus batch), of it via batch APIs, the batch discount, and cache savings."""
    price, batch_price = prices
    if price is None:
        return dict.fromkeys(
            ("dollars_spent", "dollars_spent_batch", "dollars_saved_batch", "dollars_saved")
        )
    batch_price = price if batch_price is None else batch_price
    spent_batch = dollars(delta.tokens_batch, batch_price) or 0.0
    return {
        "dollars_spent": (dollars(delta.tokens_embedded - delta.tokens_batch, price) or 0.0)
        + spent_batch,
        "dollars_spent_batch": spent_batch,
        "dollars_saved_batch": dollars(delta.tokens_batch, price - batch_price) or 0.0,
        "dollars_saved": dollars(delta.tokens_saved, price),
    }


def _priced(summary: dict[str, Any], delta: UsageDelta, prices: Prices) -> dict[str, Any]:
    return {
        **summary,
        "price_per_million_tokens": prices[0],
        "batch_price_per_million_tokens": prices[1],
        **_dollars(delta, prices),
    }


_DOLLAR_KEYS = ("dollars_spent", "dollars_spent_batch", "dollars_saved_batch", "dollars_saved")


def _combined(
    deltas: dict[int, UsageDelta],
    price_of: dict[int, Prices],
    rate_of: dict[int, float | None],
) -> dict[str, Any]:
    """Counters summed over namespaces; dollars summed over those with a known price.

    Dollars are ``None`` (unknown) when no namespace in ``deltas`` has a price, and
    ``models_without_price`` says how many of them were left out of the dollar sums.
    """
    total = UsageDelta()
    sums = dict.fromkeys(_DOLLAR_KEYS, 0.0)
    seconds_saved: float | None = None
    unpriced = 0
    for ns_id, delta in deltas.items():
        total.add(delta)
        rate = rate_of[ns_id]
        if rate is not None:
            seconds_saved = (seconds_saved or 0.0) + rate * delta.hits
        if price_of[ns_id][0] is None:
            unpriced += 1
            continue
        for key, value in _dollars(delta, price_of[ns_id]).items():
            sums[key] += value or 0.0
    known = unpriced < len(deltas) or not deltas
    return {
        **summarize(total),
        "provider_seconds_saved": seconds_saved,
        **{key: value if known else None for key, value in sums.items()},
        "models_without_price": unpriced,
    }


def report(
    store: UsageSource,
    *,
    since_day: int | None = None,
    until_day: int | None = None,
    model: str | None = None,
    by_day: bool = False,
) -> dict[str, Any]:
    """Per-namespace usage with prices, and totals, as plain JSON-ready data.

    Reads only the namespace registry and the aggregated per-day stats rows, never the
    entries, so it costs the same on a cache of a hundred or a hundred million vectors.
    ``since_day`` keeps counters from that UTC day number on, ``until_day`` up to that day
    (included; the report then also says ``until``); ``model`` keeps namespaces
    whose ``provider/model`` contains it (any case); ``by_day`` adds a ``days`` list of per-day
    totals. Dollar totals add up the namespaces with a known price;
    ``models_without_price`` counts the others.
    """
    selected = {ns.id: ns for ns in store.namespaces() if ns.matches(model)}
    per_ns: dict[int, UsageDelta] = {}
    per_day: dict[int, dict[int, UsageDelta]] = {}
    all_time: dict[int, UsageDelta] = {}
    # All days are read (the table is small) so that time saved in the window uses each
    # namespace's all-time seconds per text: a window of pure hits still shows a saving.
    for ns_id, day, delta in store.stats_rows():
        if ns_id not in selected:
            continue
        all_time.setdefault(ns_id, UsageDelta()).add(delta)
        if (since_day is not None and day < since_day) or (
            until_day is not None and day > until_day
        ):
            continue
        per_ns.setdefault(ns_id, UsageDelta()).add(delta)
        if by_day:
            per_day.setdefault(day, {}).setdefault(ns_id, UsageDelta()).add(delta)
    rate_of = {ns_id: seconds_per_text(all_time[ns_id]) for ns_id in per_ns}
    price_of = {ns_id: _prices(selected[ns_id]) for ns_id in per_ns}
    rows = []
    for ns_id in sorted(per_ns):
        ns = selected[ns_id]
        rows.append(
            {
                "namespace": ns.key,
                "provider": ns.spec.provider,
                "model": ns.spec.model,
                "role": ns.spec.role,
                "dim": ns.dim,
                "damaged": ns.damage,
                **_priced(summarize(per_ns[ns_id], rate_of[ns_id]), per_ns[ns_id], price_of[ns_id]),
            }
        )
    data: dict[str, Any] = {
        "cache": store.url,
        "since": day_iso(since_day) if since_day is not None else None,
        "since_day": since_day,
        "model_filter": model,
        "models": rows,
        "total": _combined(per_ns, price_of, rate_of),
    }
    if until_day is not None:
        data["until"], data["until_day"] = day_iso(until_day), until_day
    if by_day:
        data["days"] = [
            {"day": day_iso(day), **_combined(per_day[day], price_of, rate_of)}
            for day in sorted(per_day)
        ]
    return data


def _num(value: int, estimated: int) -> str:
    text = f"{value:,}"
    return f"~{text}" if estimated and estimated == value else (f"{text}*" if estimated else text)


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value == 0:
        return "$0.00"
    # Small sums keep significant digits: a test run costs fractions of a cent.
    return (
        f"${value:.6f}" if value < 0.01 else (f"${value:,.4f}" if value < 1 else f"${value:,.2f}")
    )


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def _align(rows: list[list[str]], left: int, rule_before_last: bool) -> list[str]:
    """Columns padded to width: the first ``left`` left-aligned, numbers right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        if rule_before_last and n == len(rows) - 1:
            out.append("  ".join("-" * w for w in widths).rstrip())
        out.append(
            "  ".join(
                c.ljust(w) if i < left else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    return out


def _cells(r: dict[str, Any], spent: str, saved: str) -> list[str]:
    rate = "-" if r["hit_rate"] is None else f"{100 * r['hit_rate']:.1f}%"
    return [
        f"{r['texts']:,}",
        f"{r['hits']:,}",
        rate,
        _num(r["tokens_embedded"], r["tokens_embedded_estimated"]),
        _num(r["tokens_saved"], r["tokens_saved_estimated"]),
        spent,
        saved,
        _secs(r["provider_seconds"]),
        _secs(r["provider_seconds_saved"]),
    ]


_COLUMNS = [
    "texts",
    "hits",
    "hit rate",
    "tokens embedded",
    "tokens saved",
    "spent",
    "saved",
    "time spent",
    "time saved",
]


def _total_usd(t: dict[str, Any], key: str) -> str:
    """A total's dollars, flagged when some models had no price (their share is unknown)."""
    if t[key] is None:
        return "unknown"
    return _usd(t[key]) + (" + unknown" if t["models_without_price"] else "")


def _heading(data: dict[str, Any]) -> list[str]:
    scope = []
    if data.get("since"):
        scope.append(f"since {data['since']}")
    if data.get("model_filter"):
        scope.append(f"models matching {data['model_filter']!r}")
    return [printable(f"cache: {data['cache']}" + (f" ({', '.join(scope)})" if scope else ""))]


def _footnote(t: dict[str, Any]) -> list[str]:
    if t["tokens_embedded_estimated"] or t["tokens_saved_estimated"]:
        return ["~ estimated token counts (provider reports none); * partly estimated"]
    return []


_BATCH_COLUMNS = ["spent via batch", "batch discount"]


def _batch_cells(r: dict[str, Any], total: bool = False) -> list[str]:
    """The batch-API columns: what batch tokens cost, and what the batch price saved on them."""
    usd = (lambda key: _total_usd(r, key)) if total else (lambda key: _usd(r[key]))
    return [usd("dollars_spent_batch"), usd("dollars_saved_batch")]


def render_table(data: dict[str, Any]) -> str:
    """The per-model table ``cachedembed stats`` prints, with a totals line.

    When batch APIs were used, two more columns show what went through them and what the
    batch discount saved (kept apart from ``saved``, the cache's savings).
    """
    if not data["models"]:
        return "\n".join([*_heading(data), "no usage recorded"])
    t = data["total"]
    batch = t["tokens_batch"] > 0
    rows = [["model", "role", *_COLUMNS, *(_BATCH_COLUMNS if batch else [])]]
    for r in data["models"]:
        rows.append(
            [
                printable(f"{r['provider']}/{r['model']}"),
                printable(r["role"]),
                *_cells(r, _usd(r["dollars_spent"]), _usd(r["dollars_saved"])),
                *(_batch_cells(r) if batch else []),
            ]
        )
    rows.append(
        [
            "total",
            "",
            *_cells(t, _total_usd(t, "dollars_spent"), _total_usd(t, "dollars_saved")),
            *(_batch_cells(t, total=True) if batch else []),
        ]
    )
    damaged = [
        f"damaged namespace {printable(r['provider'] + '/' + r['model'])}: "
        f"{printable(r['damaged'])} (see `cachedembed verify`)"
        for r in data["models"]
        if r.get("damaged")
    ]
    return "\n".join([*_heading(data), *_align(rows, 2, True), *_footnote(t), *damaged])


BAR_WIDTH = 30


def _bar(spent: float, saved: float, scale: float) -> str:
    """``spent`` as solid blocks then ``saved`` as shaded ones, ``BAR_WIDTH`` for the largest day."""
    if scale <= 0:
        return ""
    a = round(BAR_WIDTH * spent / scale)
    b = round(BAR_WIDTH * (spent + saved) / scale) - a
    return "█" * a + "░" * b


def _chart_basis(data: dict[str, Any]) -> tuple[str, str, str] | None:
    """(spent key, saved key, unit) of the ``--by day`` chart, or ``None`` when every bar is empty.

    Dollars when every model shown has a price and some were spent or saved, else tokens;
    a model without a price has unknown dollars, which a bar cannot show.
    """
    days = data["days"]
    if data["total"]["models_without_price"] == 0:
        if max(d["dollars_spent"] + d["dollars_saved"] for d in days) > 0:
            return "dollars_spent", "dollars_saved", "dollars"
        unit = "tokens (no dollars were spent or saved)"
    else:
        unit = "tokens (some models have no price)"
    if max(d["tokens_embedded"] + d["tokens_saved"] for d in days) > 0:
        return "tokens_embedded", "tokens_saved", unit
    return None


def render_days(data: dict[str, Any]) -> str:
    """``cachedembed stats --by day``: one row per UTC day and a bar chart of spent vs saved.

    The chart is left out when it would show no bar at all (see :func:`_chart_basis`).
    """
    days = data["days"]
    if not days:
        return "\n".join([*_heading(data), "no usage recorded"])
    basis = _chart_basis(data)
    chart_column = [""] if basis else []
    rows = [["day", *_COLUMNS, *chart_column]]
    scale = max(d[basis[0]] + d[basis[1]] for d in days) if basis else 0.0
    for d in days:
        bar = [_bar(d[basis[0]], d[basis[1]], scale)] if basis else []
        rows.append(
            [
                d["day"],
                *_cells(d, _total_usd(d, "dollars_spent"), _total_usd(d, "dollars_saved")),
                *bar,
            ]
        )
    t = data["total"]
    rows.append(
        [
            "total",
            *_cells(t, _total_usd(t, "dollars_spent"), _total_usd(t, "dollars_saved")),
            *chart_column,
        ]
    )
    legend = [f"chart: █ spent  ░ saved, in {basis[2]}"] if basis else []
    return "\n".join([*_heading(data), *_align(rows, 1, True), *legend, *_footnote(t)])


__all__ = ["render_days", "render_table", "report", "summarize"]


class WithPending:
    """A store's committed stats rows plus the counters it could not commit yet."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        return self.store.stats_rows(since_day) + self.store.pending_rows()


def lifetime_stats(engine: Engine) -> dict[str, Any]:
    """``Cached.stats()``: the store's totals of ``engine``'s namespaces, this process's
    buffered counters flushed (or added) first."""
    source: Any = engine.store  # or, failing a flush, a WithPending
    try:
        engine.store.flush()
    except StoreError as exc:
        engine.store_failed(exc, "could not save usage counters yet")
        source = WithPending(engine.store)
    try:
        totals = namespace_totals(source, engine.namespaces())
    except StoreError as exc:
        # The cache cannot be read: what this object counted is all there is to show.
        engine.store_failed(exc, "stats() shows this process's counters only")
        totals = role_totals(engine.session.snapshot()[0])
    return {**totals, "store_errors": engine.store.store_errors}


def session_stats(session: Session) -> dict[str, Any]:
    """``Cached.session_stats()``: :func:`role_totals` of what one wrapper counted itself."""
    usage, store_errors = session.snapshot()
    return {**role_totals(usage), "store_errors": store_errors}
