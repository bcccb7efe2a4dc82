"""An in-process provider that bills tokens per batch, for the accounting and management tests.

It subclasses :class:`ProviderEmbeddingFunction` like the shipped providers, so token
counts reach the cache as *provider-reported* (not estimated), and it keeps its own
ledger of what it billed so tests can compare the cache's stats against it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from cachedembed.embedding_functions import EmbeddedBatch, ProviderEmbeddingFunction
from cachedembed.embedding_functions._base import as_matrix
from cachedembed.keys import NamespaceSpec, Role
from cachedembed.stores import Store
from cachedembed.stores.base import EntryBatch, Namespace, PendingStats
from cachedembed.usage import UsageDelta, today
from tests.conftest import fake_vector

PRICED_MODEL = "bill-small"
PRICE = 0.02  # USD per 1M tokens, set through $CACHEDEMBED_PRICE by the tests that need it
PRICE_ENV = f"test-billing/{PRICED_MODEL}={PRICE}"


class BillingProvider(ProviderEmbeddingFunction):
    """Batches texts, returns deterministic vectors and reports billed tokens per batch."""

    provider = "test-billing"

    def __init__(self, model_name: str = PRICED_MODEL, batch_size: int = 7, dim: int = 6) -> None:
        self.model_name = model_name
        self.batch_size = batch_size
        self.dim = dim
        self.billed: list[int] = []
        """Tokens reported for each batch, in order: the provider's invoice."""
        self.texts_sent: list[str] = []

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            # Words plus a per-request overhead: not what the byte-based estimate would say,
            # and not divisible by the batch size, so apportioning has to be exact.
            tokens = sum(len(t.split()) for t in chunk) + 3
            self.billed.append(tokens)
            self.texts_sent += chunk
            rows = np.stack([fake_vector(t, self.dim, self.model_name + role) for t in chunk])
            yield EmbeddedBatch(start, as_matrix(self.provider, rows, len(chunk)), tokens)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model_name, "dimensions": self.dim}

    def get_config(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "batch_size": self.batch_size, "dim": self.dim}


def texts(n: int, prefix: str = "doc") -> list[str]:
    """``n`` distinct texts of varying word counts."""
    return [f"{prefix} {i} " + "word " * (i % 5) for i in range(n)]


def fill(
    store: Store,
    n: int,
    *,
    model: str = PRICED_MODEL,
    dim: int = 8,
    days: Sequence[int] = (),
    batch: int = 20_000,
    seed: int = 0,
    tokens: int = 5,
) -> Namespace:
    """Write ``n`` random entries straight into ``store`` (no provider), in big ``put`` batches.

    Entries get ``tokens`` tokens each and last-use days cycling through ``days`` (default:
    today). Returns the namespace they were written to.
    """
    ns = store.namespace(
        NamespaceSpec({"provider": "test-billing", "model": model, "dimensions": dim}, "document")
    )
    store.set_dimension(ns, dim)
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(-(2**63), 2**63 - 1, size=n + n // 100 + 10, dtype=np.int64))[:n]
    assert len(ids) == n
    day_cycle = np.array(days or [today()], dtype=np.int64)
    for start in range(0, n, batch):
        chunk = ids[start : start + batch]
        k = len(chunk)
        store.write_entries(
            ns.id,
            EntryBatch(
                ids=chunk.tolist(),
                checks=rng.integers(-(2**63), 2**63 - 1, size=k, dtype=np.int64).tolist(),
                vectors=rng.standard_normal((k, dim)).astype(np.float32),
                tokens=[tokens] * k,
                flags=[0] * k,
                used=day_cycle[np.arange(start, start + k) % len(day_cycle)].tolist(),
            ),
        )
    return ns


def record_history(store: Store, deltas: dict[tuple[int, int], UsageDelta]) -> None:
    """Write per-(namespace, day) counters as the wrapper's flushes would, for any past day."""
    store.merge_stats(PendingStats(deltas=deltas))
