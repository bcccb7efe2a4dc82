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

Each figure is the median of ``REPEATS`` rounds; a round times one whole pass of every
system in turn, and each ratio is the median of the rounds' own ratios. Every system's answers are checked
bit-identical to the vectors put in. Run standalone (``python bench/redis_peers.py``;
results go to ``bench/results/redis_peers.json`` and ``.md``), or from ``bench/run.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
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
Lookup = Callable[[list[str]], Any]


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


def one_pass(lookup: Lookup, parts: list[list[str]]) -> float:
    """Seconds of one whole pass, ``lookup`` called once per batch."""
    start = time.perf_counter()
    for part in parts:
        lookup(part)
    return time.perf_counter() - start


def exact(got: Any, want: np.ndarray, who: str) -> None:
    if np.asarray(got, dtype=np.float32).tobytes() != want.tobytes():
        raise AssertionError(f"{who}: warm vectors differ from the ones put in")


@contextmanager
def ours(url: str, texts: list[str], vecs: np.ndarray) -> Iterator[Lookup]:
    from cachedembed import Cached
    from cachedembed.stores import close_all

    ef = WarmOnly(texts, vecs)
    try:
        cached = Cached(ef, cache=url)
        for part in batches(texts):
            cached(part)
        ef.locked = True
        exact(cached.embed(texts), vecs, url.split(":")[0])
        yield cached.embed
    finally:
        close_all()


@contextmanager
def raw_mget(url: str) -> Iterator[Lookup]:
    """The floor: one plain MGET per batch of the very values our store wrote, undecoded."""
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=f"{url.split('prefix=')[1]}:e:*", count=1000))
    chunks = iter([])

    def lookup(part: list[str]) -> Any:
        nonlocal chunks
        chunk = next(chunks, None)
        if chunk is None:  # a new pass: the batches again, from the first
            chunks = iter([keys[i : i + BATCH] for i in range(0, len(keys), BATCH)])
            chunk = next(chunks)
        return client.mget(chunk)

    try:
        yield lookup
    finally:
        client.close()


@contextmanager
def redisvl_cache(texts: list[str], vecs: np.ndarray) -> Iterator[Lookup]:
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
        yield lookup
    finally:
        cache.clear()
        cache.disconnect()


@contextmanager
def langchain_cache(texts: list[str], vecs: np.ndarray) -> Iterator[Lookup]:
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
        yield emb.embed_documents
    finally:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()


def run(n: int = N, repeats: int = REPEATS) -> dict[str, Any]:
    """Prefill every system, then time ``repeats`` rounds of one pass each, interleaved
    (each round meets the same load on the shared machine and the shared Redis)."""
    texts, vecs = corpus(n)
    parts = batches(texts)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_prefix())
        pg_url = stack.enter_context(postgres_database())
        lookups = {
            "cachedembed_redis": stack.enter_context(ours(redis_url, texts, vecs)),
            "cachedembed_postgresql": stack.enter_context(ours(pg_url, texts, vecs)),
            "raw_redis_mget": stack.enter_context(raw_mget(redis_url)),
            "redisvl_mget": stack.enter_context(redisvl_cache(texts, vecs)),
            "langchain_redisstore": stack.enter_context(langchain_cache(texts, vecs)),
        }
        rounds = [{name: one_pass(f, parts) for name, f in lookups.items()} for _ in range(repeats)]
    seconds = {name: statistics.median(r[name] for r in rounds) for name in lookups}

    def ratio(peer: str, digits: int = 2) -> float:
        """Median over the rounds of (peer's seconds / ours): our speed-up in that round."""
        return round(statistics.median(r[peer] / r["cachedembed_redis"] for r in rounds), digits)

    return {
        "benchmark": "redis_peers_warm_hit",
        "texts": n,
        "dim": DIM,
        "batch": BATCH,
        "repeats": repeats,
        "texts_per_s": {name: round(n / s) for name, s in seconds.items()},
        "vs_redisvl": ratio("redisvl_mget"),
        "vs_langchain": ratio("langchain_redisstore"),
        "redis_vs_postgresql": ratio("cachedembed_postgresql", 3),
        "vs_raw_redis_mget": ratio("raw_redis_mget", 3),
    }


def target_rows(rp: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(measure, measured, target, met): >= 20x both peers, >= 0.5x our PostgreSQL store."""
    per_s = rp["texts_per_s"]
    size = f"{rp['texts']:,} texts {rp['dim']}-d, batches of {rp['batch']:,}"
    return [
        (
            f"Warm hits on Redis vs redisvl EmbeddingsCache.mget ({size})",
            f"{rp['vs_redisvl']:.1f}x ({per_s['cachedembed_redis']:,}/s vs "
            f"{per_s['redisvl_mget']:,}/s)",
            ">= 20x",
            rp["vs_redisvl"] >= 20,
        ),
        (
            "Warm hits on Redis vs LangChain CacheBackedEmbeddings+RedisStore",
            f"{rp['vs_langchain']:.1f}x ({per_s['langchain_redisstore']:,}/s)",
            ">= 20x",
            rp["vs_langchain"] >= 20,
        ),
        (
            "Warm hits on Redis vs our PostgreSQL store",
            f"{rp['redis_vs_postgresql']:.2f}x ({per_s['cachedembed_postgresql']:,}/s)",
            ">= 0.5x",
            rp["redis_vs_postgresql"] >= 0.5,
        ),
        (
            "Warm hits on Redis vs a raw MGET of the same values (undecoded)",
            f"{rp['vs_raw_redis_mget']:.2f}x ({per_s['raw_redis_mget']:,}/s)",
            "(info)",
            True,
        ),
    ]


def markdown(rp: dict[str, Any]) -> str:
    lines = [
        f"Run {rp['started']}, load {rp['load_avg_at_start']:.1f} at start (2 shared cores), "
        f"median of {rp['repeats']} interleaved rounds:",
        "",
        "| measure | measured | target | |",
        "|---|---|---|---|",
    ]
    for name, measured, target, ok in target_rows(rp):
        lines.append(f"| {name} | {measured} | {target} | {'pass' if ok else '**MISS**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import os

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    out = {"started": started, "load_avg_at_start": load, **run()}
    results = Path(__file__).resolve().parent / "results"
    (results / "redis_peers.json").write_text(json.dumps(out, indent=2) + "\n")
    (results / "redis_peers.md").write_text(markdown(out))
    print(markdown(out))
