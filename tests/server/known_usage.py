"""A SQLite cache with known usage over three windows, for the dashboard tests.

Today's usage comes from real :class:`Cached` calls over the billing test provider (priced
through ``$CACHEDEMBED_PRICE``) and an unpriced one; two past days are written as the
counters a flush would write, so the 7-day, 30-day and all-time windows differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachedembed import Cached
from cachedembed.pricing import dollars
from cachedembed.stores import Store, open_store
from cachedembed.usage import UsageDelta, today
from tests.billing import PRICE, BillingProvider, record_history, texts

TEN_DAYS_AGO = UsageDelta(
    calls=1, hits=50, misses=5, provider_calls=1, provider_seconds=1.0,
    tokens_embedded=500, tokens_saved=4000,
)  # fmt: skip
FORTY_DAYS_AGO = UsageDelta(
    calls=1, misses=100, provider_calls=1, provider_seconds=2.0, tokens_embedded=10_000
)


def usd(tokens: int) -> float:
    """What ``tokens`` of the priced model cost, as the reports compute it."""
    return dollars(tokens, PRICE) or 0.0


@dataclass
class Known:
    """The cache and what its providers billed today."""

    url: str
    store: Store
    priced: BillingProvider
    unpriced: BillingProvider
    cached: Cached

    @property
    def billed_today(self) -> int:
        """Tokens the priced provider billed today (documents and queries)."""
        return sum(self.priced.billed)


def build(url: str) -> Known:
    """20 documents embedded twice and 1 query (priced), 6 documents (unpriced), plus history."""
    store = open_store(url)
    priced, unpriced = BillingProvider(), BillingProvider("bill-unpriced")
    cached = Cached(priced, store)
    cached.embed(texts(20))
    cached.embed(texts(20))
    cached.embed(["what is cached?"], "query")
    Cached(unpriced, store).embed(texts(6, "u"))
    store.flush()
    (document,) = [
        ns
        for ns in store.namespaces()
        if ns.label == "test-billing/bill-small" and ns.spec.role == "document"
    ]
    record_history(
        store,
        {(document.id, today() - 10): TEN_DAYS_AGO, (document.id, today() - 40): FORTY_DAYS_AGO},
    )
    return Known(url, store, priced, unpriced, cached)
