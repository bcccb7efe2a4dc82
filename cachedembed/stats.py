"""Usage reports built from the per-namespace, per-day counters (never from a scan of entries)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .pricing import dollars, price_per_million
from .stores.base import Namespace, Store
from .usage import UsageDelta


def summarize(delta: UsageDelta) -> dict[str, Any]:
    """Counters plus the figures derived from them (texts, hit rate, time saved)."""
    texts = delta.hits + delta.misses
    per_text = delta.provider_seconds / delta.misses if delta.misses else None
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
        "provider_seconds": delta.provider_seconds,
        # Estimated from this namespace's own measured seconds per embedded text.
        "provider_seconds_saved": per_text * delta.hits if per_text is not None else None,
    }


def namespace_totals(store: Store, namespaces: Iterable[Namespace]) -> dict[str, Any]:
    """Totals over ``namespaces`` (all days), with a per-role breakdown."""
    wanted = {ns.id: ns for ns in namespaces}
    per_ns: dict[int, UsageDelta] = {ns_id: UsageDelta() for ns_id in wanted}
    for ns_id, _day, delta in store.stats_rows():
        if ns_id in per_ns:
            per_ns[ns_id].add(delta)
    total = UsageDelta()
    # Several namespaces may share a role (one per option set of an adapter): add them up.
    by_role: dict[str, UsageDelta] = {}
    for ns_id, delta in per_ns.items():
        total.add(delta)
        by_role.setdefault(wanted[ns_id].spec.role, UsageDelta()).add(delta)
    return {**summarize(total), "by_role": {role: summarize(delta) for role, delta in by_role.items()}}


def _priced(summary: dict[str, Any], price: float | None) -> dict[str, Any]:
    return {
        **summary,
        "price_per_million_tokens": price,
        "dollars_spent": dollars(summary["tokens_embedded"], price),
        "dollars_saved": dollars(summary["tokens_saved"], price),
    }


def report(
    store: Store, *, since_day: int | None = None, model: str | None = None
) -> dict[str, Any]:
    """Per-namespace usage with prices, and totals, as plain JSON-ready data.

    ``since_day`` keeps counters from that UTC day number on; ``model`` keeps namespaces
    whose model or provider/model contains it. Dollar totals add up the namespaces with a
    known price; ``models_without_price`` counts the others.
    """
    namespaces = {ns.id: ns for ns in store.namespaces()}
    per_ns: dict[int, UsageDelta] = {}
    for ns_id, _day, delta in store.stats_rows(since_day):
        per_ns.setdefault(ns_id, UsageDelta()).add(delta)
    rows = []
    total = UsageDelta()
    spent = saved = 0.0
    unpriced = 0
    for ns_id in sorted(per_ns):
        ns = namespaces.get(ns_id)
        if ns is None:
            continue
        label = f"{ns.spec.provider}/{ns.spec.model}"
        if model and model not in label:
            continue
        delta = per_ns[ns_id]
        price = price_per_million(ns.spec.provider, ns.spec.model)
        row = _priced(summarize(delta), price)
        rows.append(
            {
                "namespace": ns.key,
                "provider": ns.spec.provider,
                "model": ns.spec.model,
                "role": ns.spec.role,
                "dim": ns.dim,
                **row,
            }
        )
        total.add(delta)
        if price is None:
            unpriced += 1
        else:
            spent += row["dollars_spent"]
            saved += row["dollars_saved"]
    totals = summarize(total)
    totals.update(
        {"dollars_spent": spent, "dollars_saved": saved, "models_without_price": unpriced}
    )
    return {"cache": store.url, "since_day": since_day, "models": rows, "total": totals}


def _num(value: int, estimated: int) -> str:
    text = f"{value:,}"
    return f"~{text}" if estimated and estimated == value else (f"{text}*" if estimated else text)


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def render_table(data: dict[str, Any]) -> str:
    """The human table ``cachedembed stats`` prints."""
    header = [
        "model",
        "role",
        "texts",
        "hits",
        "hit rate",
        "tokens embedded",
        "tokens saved",
        "spent",
        "saved",
        "time saved",
    ]
    lines = [header]

    def line(label: str, role: str, r: dict[str, Any], spent: str, saved: str) -> list[str]:
        rate = "-" if r["hit_rate"] is None else f"{100 * r['hit_rate']:.1f}%"
        return [
            label,
            role,
            f"{r['texts']:,}",
            f"{r['hits']:,}",
            rate,
            _num(r["tokens_embedded"], r["tokens_embedded_estimated"]),
            _num(r["tokens_saved"], r["tokens_saved_estimated"]),
            spent,
            saved,
            _secs(r["provider_seconds_saved"]),
        ]

    for r in data["models"]:
        lines.append(
            line(
                f"{r['provider']}/{r['model']}",
                r["role"],
                r,
                _usd(r["dollars_spent"]),
                _usd(r["dollars_saved"]),
            )
        )
    t = data["total"]
    suffix = " + unknown" if t["models_without_price"] else ""
    lines.append(
        line("total", "", t, _usd(t["dollars_spent"]) + suffix, _usd(t["dollars_saved"]) + suffix)
    )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = [f"cache: {data['cache']}"]
    for n, row in enumerate(lines):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        if n == len(lines) - 1:
            out.append("  ".join("-" * w for w in widths))
        out.append("  ".join(cells).rstrip())
    out.append("~ estimated token counts (provider reports none); * partly estimated")
    return "\n".join(out)
