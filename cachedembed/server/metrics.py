"""Prometheus metrics of one server: requests, texts, hits, misses, tokens, dollars, upstream
latency, and the health of its cache (up, errors, batches waiting to be written).

Counted per server process from what each request did (not from the shared cache's
totals, which other processes also add to), in a registry of the app's own so that
several apps in one process never mix their numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..pricing import dollars, price_per_million
from ..stores import Store
from ..wrapper import Embedded
from .routing import Upstream

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Upstream round trips range from a millisecond (local model, loopback) to a minute (retries).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The counters and histogram, with one method per thing the app observes."""

    def __init__(self, store: Store | None = None) -> None:
        self.registry = CollectorRegistry()
        if store is not None:
            self.registry.register(_StoreHealth(store))
        per_model = [
            ("texts", "Texts embedded or served"),
            ("cache_hits", "Texts served from the cache"),
            ("cache_misses", "Texts sent to the upstream provider"),
            ("tokens_embedded", "Tokens the upstream provider billed"),
            ("tokens_saved", "Tokens cache hits did not send upstream"),
            ("dollars_spent", "USD spent upstream (models with a known price only)"),
            ("dollars_saved", "USD saved by cache hits (models with a known price only)"),
        ]
        self.requests = Counter(
            "cachedembed_requests",
            "HTTP requests answered",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.counters = {
            name: Counter(f"cachedembed_{name}", text, ["model"], registry=self.registry)
            for name, text in per_model
        }
        self.upstream_seconds = Histogram(
            "cachedembed_upstream_seconds",
            "Duration of each upstream provider round trip",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._prices: dict[int, float | None] = {}
        self._lock = threading.Lock()

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def embedded(self, upstream: Upstream, result: Embedded) -> None:
        """Count one embedding call of ``upstream``."""
        usage, model = result.usage, upstream.id
        counts: dict[str, float] = {
            "texts": usage.hits + usage.misses,
            "cache_hits": usage.hits,
            "cache_misses": usage.misses,
            "tokens_embedded": usage.tokens_embedded,
            "tokens_saved": usage.tokens_saved,
        }
        price = self._price(upstream)
        if price is not None:
            counts["dollars_spent"] = dollars(usage.tokens_embedded, price) or 0.0
            counts["dollars_saved"] = dollars(usage.tokens_saved, price) or 0.0
        for name, value in counts.items():
            self.counters[name].labels(model).inc(value)
        for seconds in result.provider_seconds:
            self.upstream_seconds.labels(model).observe(seconds)

    def _price(self, upstream: Upstream) -> float | None:
        with self._lock:
            key = id(upstream)
            if key not in self._prices:
                described = upstream.describe()
                self._prices[key] = price_per_million(described["provider"], described["model"])
            return self._prices[key]

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StoreHealth(Collector):
    """The cache's health, read from the store at each scrape (this process's view of it)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        health = self.store.outage.health()
        yield GaugeMetricFamily(
            "cachedembed_store_up",
            "1 while the cache answers, 0 while it fails (requests are then served uncached)",
            value=0 if health["status"] == "failing" else 1,
        )
        counters = (
            ("store_errors", "Cache operations that failed or were skipped during an outage", self.store.store_errors),
            ("store_outages", "Cache outages seen by this server", health["outages"]),
            ("store_dropped_entries", "Paid-for entries dropped from the full retry buffer", health["dropped_entries"]),
        )  # fmt: skip
        for name, text, value in counters:
            yield CounterMetricFamily(f"cachedembed_{name}", text, value=value)
        yield GaugeMetricFamily(
            "cachedembed_store_unsaved_entries",
            "Paid-for entries waiting to be written when the cache answers again",
            value=health["unsaved_entries"],
        )
        yield GaugeMetricFamily(
            "cachedembed_store_unsaved_bytes",
            "Vector bytes of the entries waiting to be written",
            value=health["unsaved_bytes"],
        )
