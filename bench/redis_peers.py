"""Warm hits on Redis, side by side: cachedembed against redisvl and LangChain, and against its own PostgreSQL store.

The same ``N`` texts and the same seeded 1536-d float32 vectors are prefilled in each
system on the shared Redis (127.0.0.1:6379: each under its own key prefix, deleted
afterwards) and in a throwaway PostgreSQL database; then every text is looked up in
batches of ``BATCH`` through each system's bulk API, with an embedder that raises if it
is called (a warm pass must never reach the provider):

- redisvl ``EmbeddingsCache.mget``;
- LangChain ``CacheBackedEmbeddings.embed_documents`` over ``langchain_community``'s
  ``RedisStore``;
- ``Cached(ef, cache="redis://...").embed`` and the same on ``postgresql+psycopg://``
  (``embed`` is the bulk call: one float32 matrix per batch).

Each figure is the median of ``REPEATS`` whole passes. Every system's answers are checked
bit-identical to the vectors put in. Run standalone (``python bench/redis_peers.py``,
prints one JSON line) or call :func:`run` from ``bench/run.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.stores.servers import REDIS, postgres_database, redis_prefix, unique_name  # noqa: E402

N = 10_000
DIM = 1536
BATCH = 1000
REPEATS = 5
MODEL = "bench-1536"


class WarmOnly:
    """A Chroma-protocol embedding function that answers from ``vectors`` until it is
    ``locked``, then raises: the timed passes must be all hits."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.index = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors
        self.locked = False

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        if self.locked:
            raise AssertionError(f"the provider was called for {len(input)} texts on a warm pass")
        return list(self.vectors[[self.index[t] for t in input]])

    @staticmethod
    def name() -> str:
        return "bench-warm-only"

    def get_config(self) -> dict[str, Any]:
        return {"model": MODEL, "dim": DIM}


def corpus(n: int) -> tuple[list[str], np.ndarray]:
    texts = [
        f"passage {i}: the quick brown fox jumps over the lazy dog {i * 7919}" for i in range(n)
    ]
    return texts, np.random.default_rng(5).standard_normal((n, DIM), dtype=np.float32)


def batches(texts: list[str]) -> list[list[str]]:
    return [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]


def median_pass(lookup: Callable[[list[str]], Any], texts: list[str], repeats: int) -> float:
    """Median seconds of a whole pass over ``texts``, ``lookup`` called once per batch."""
    parts = batches(texts)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for part in parts:
            lookup(part)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def exact(got: Any, want: np.ndarray, who: str) -> None:
    if np.asarray(got, dtype=np.float32).tobytes() != want.tobytes():
        raise AssertionError(f"{who}: warm vectors differ from the ones put in")


def ours(url: str, texts: list[str], vecs: np.ndarray, repeats: int) -> float:
    from cachedembed import Cached
    from cachedembed.stores import close_all

    ef = WarmOnly(texts, vecs)
    try:
        cached = Cached(ef, cache=url)
        for part in batches(texts):
            cached(part)
        ef.locked = True
        exact(cached.embed(texts), vecs, url.split(":")[0])
        return median_pass(cached.embed, texts, repeats)
    finally:
        close_all()


def redisvl_cache(texts: list[str], vecs: np.ndarray, repeats: int) -> float:
    from redisvl.extensions.cache.embeddings import EmbeddingsCache

    cache = EmbeddingsCache(name=unique_name("bench_rvl"), redis_url=REDIS)
    try:
        for start in range(0, len(texts), BATCH):
            cache.mset(
                [
                    {"content": t, "model_name": MODEL, "embedding": v.tolist()}
                    for t, v in zip(texts[start : start + BATCH], vecs[start : start + BATCH])
                ]
            )

        def lookup(part: list[str]) -> list[list[float]]:
            return [hit["embedding"] for hit in cache.mget(part, MODEL)]  # type: ignore[index]

        exact([e for part in batches(texts) for e in lookup(part)], vecs, "redisvl")
        return median_pass(lookup, texts, repeats)
    finally:
        cache.clear()
        cache.disconnect()


def langchain_cache(texts: list[str], vecs: np.ndarray, repeats: int) -> float:
    import redis
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_core.embeddings import Embeddings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain-community's sunset notice
        from langchain_community.storage import RedisStore

    class Underlying(Embeddings):
        def __init__(self, ef: WarmOnly) -> None:
            self.ef = ef

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [v.tolist() for v in self.ef(texts)]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    ef = WarmOnly(texts, vecs)
    namespace = unique_name("bench_lc")
    client = redis.Redis.from_url(REDIS)
    try:
        emb = CacheBackedEmbeddings.from_bytes_store(
            Underlying(ef), RedisStore(client=client), namespace=namespace, key_encoder="blake2b"
        )
        for part in batches(texts):
            emb.embed_documents(part)
        ef.locked = True
        exact(emb.embed_documents(texts), vecs, "langchain")
        return median_pass(emb.embed_documents, texts, repeats)
    finally:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()


def run(n: int = N, repeats: int = REPEATS) -> dict[str, Any]:
    texts, vecs = corpus(n)
    seconds: dict[str, float] = {}
    with redis_prefix() as url:
        seconds["cachedembed_redis"] = ours(url, texts, vecs, repeats)
    with postgres_database() as url:
        seconds["cachedembed_postgresql"] = ours(url, texts, vecs, repeats)
    seconds["redisvl_mget"] = redisvl_cache(texts, vecs, repeats)
    seconds["langchain_redisstore"] = langchain_cache(texts, vecs, repeats)
    per_s = {name: round(n / s) for name, s in seconds.items()}
    mine = per_s["cachedembed_redis"]
    return {
        "benchmark": "redis_peers_warm_hit",
        "texts": n,
        "dim": DIM,
        "batch": BATCH,
        "repeats": repeats,
        "texts_per_s": per_s,
        "vs_redisvl": round(mine / per_s["redisvl_mget"], 2),
        "vs_langchain": round(mine / per_s["langchain_redisstore"], 2),
        "redis_vs_postgresql": round(mine / per_s["cachedembed_postgresql"], 3),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
