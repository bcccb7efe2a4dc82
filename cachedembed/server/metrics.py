"""Prometheus metrics of one server: requests, texts, hits, misses, tokens, dollars, upstream latency.

Counted per server process from what each request did (not from the shared cache's
totals, which other processes also add to), in a registry of the app's own so that
several apps in one process never mix their numbers.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..pricing import dollars, price_per_million
from ..wrapper import Embedded
from .routing import Upstream

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Upstream round trips range from a millisecond (local model, loopback) to a minute (retries).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The counters and histogram, with one method per thing the app observes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cachedembed_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.texts = Counter("cachedembed_texts", "Texts embedded or served", ["model"], registry=r)
        self.hits = Counter(
            "cachedembed_cache_hits", "Texts served from the cache", ["model"], registry=r
        )
        self.misses = Counter(
            "cachedembed_cache_misses", "Texts sent to the upstream provider", ["model"], registry=r
        )
        self.tokens_embedded = Counter(
            "cachedembed_tokens_embedded",
            "Tokens the upstream provider billed",
            ["model"],
            registry=r,
        )
        self.tokens_saved = Counter(
            "cachedembed_tokens_saved",
            "Tokens cache hits did not send upstream",
            ["model"],
            registry=r,
        )
        self.dollars_spent = Counter(
            "cachedembed_dollars_spent",
            "USD spent upstream (models with a known price only)",
            ["model"],
            registry=r,
        )
        self.dollars_saved = Counter(
            "cachedembed_dollars_saved",
            "USD saved by cache hits (models with a known price only)",
            ["model"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "cachedembed_upstream_seconds",
            "Duration of each upstream provider round trip",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._prices: dict[int, float | None] = {}
        self._lock = threading.Lock()

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def embedded(self, upstream: Upstream, result: Embedded) -> None:
        """Count one embedding call of ``upstream``."""
        usage, model = result.usage, upstream.id
        self.texts.labels(model).inc(usage.hits + usage.misses)
        self.hits.labels(model).inc(usage.hits)
        self.misses.labels(model).inc(usage.misses)
        self.tokens_embedded.labels(model).inc(usage.tokens_embedded)
        self.tokens_saved.labels(model).inc(usage.tokens_saved)
        price = self._price(upstream)
        if price is not None:
            self.dollars_spent.labels(model).inc(dollars(usage.tokens_embedded, price) or 0.0)
            self.dollars_saved.labels(model).inc(dollars(usage.tokens_saved, price) or 0.0)
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
