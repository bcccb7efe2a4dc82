"""The cold path at the provider's limit: a re-index of texts none of which is cached.

Two loopback servers, real HTTP, real SQLite cache:

* An OpenAI-format ``/v1/embeddings`` that enforces requests and tokens per minute the
  way the service does (token buckets holding one second of budget, 429 with
  ``retry-after-ms`` and ``x-ratelimit-*`` headers on every answer) and answers after
  ~200 ms. A cold run is reported as wall time / floor, the floor being
  max(tokens / TPM, requests / RPM), with the share of requests answered 429; the
  sequential path (``concurrency=1``) is measured in the same run.
* A TEI-like ``/embed`` with ``max_client_batch_size=32``, no rate limit and 50 ms per
  request: throughput at concurrency 1, 4 and 8.

Concurrent runs are measured twice: blocking (``Cached.embed``, a worker thread per
request in flight) and from asyncio (``Cached.aembed``, the requests as coroutines on the
loop), with the most threads of cachedembed's own each had alive at once.

Run ``python bench/cold_path.py [--texts N]``; results go to ``bench/results/cold_path.json``
and ``bench/results/cold_path.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import corpus  # noqa: E402
from cachedembed import Cached  # noqa: E402
from cachedembed.embedding_functions import (  # noqa: E402
    HuggingFaceEmbeddingServer,
    OpenAIEmbeddingFunction,
)
from cachedembed.stores import close_all  # noqa: E402
from tests.providers.loopback import LoopbackServer, Reply, Request  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 64
LATENCY = 0.2
BATCH = 100
"""Texts per request: the size Cohere (96) and Gemini (100) allow, so round trips matter."""


def server_tokens(text: str) -> int:
    """The server's tokenizer: not quite the client's 4-bytes estimate, as with real ones."""
    return len(text.encode()) // 4 + 1


def vector_b64(text: str) -> str:
    seed = abs(hash(text)) % (2**32)
    return base64.b64encode(
        np.random.default_rng(seed).standard_normal(DIM).astype("<f4").tobytes()
    ).decode()


class Bucket:
    def __init__(self, per_minute: float, burst_seconds: float = 1.0) -> None:
        self.rate = per_minute / 60
        self.capacity = self.rate * burst_seconds
        self.level = self.capacity
        self.at = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def reset_seconds(self) -> float:
        return (self.capacity - self.level) / self.rate


class LimitedOpenAI:
    """``POST /v1/embeddings`` under RPM and TPM, answering after :data:`LATENCY`."""

    def __init__(self, rpm: float, tpm: float) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.requests = Bucket(rpm)
        self.tokens = Bucket(tpm)
        self.lock = threading.Lock()
        self.ok = self.throttled = 0

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(int(self.rpm)),
            "x-ratelimit-limit-tokens": str(int(self.tpm)),
            "x-ratelimit-remaining-requests": str(max(int(self.requests.level), 0)),
            "x-ratelimit-remaining-tokens": str(max(int(self.tokens.level), 0)),
            "x-ratelimit-reset-requests": f"{self.requests.reset_seconds() * 1000:.0f}ms",
            "x-ratelimit-reset-tokens": f"{self.tokens.reset_seconds() * 1000:.0f}ms",
        }

    def __call__(self, request: Request) -> Reply:
        texts = request.body["input"]
        cost = sum(map(server_tokens, texts))
        with self.lock:
            now = time.monotonic()
            self.requests.refill(now)
            self.tokens.refill(now)
            need = min(cost, self.tokens.capacity)
            if self.requests.level < 1 or self.tokens.level < need:
                self.throttled += 1
                wait = max(
                    (1 - self.requests.level) / self.requests.rate,
                    (need - self.tokens.level) / self.tokens.rate,
                )
                error = {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                }
                return Reply(429, error, {"retry-after-ms": f"{wait * 1000:.0f}", **self.headers()})
            self.requests.level -= 1
            self.tokens.level -= cost
            self.ok += 1
            headers = self.headers()
        data = [
            {"object": "embedding", "index": i, "embedding": vector_b64(t)}
            for i, t in enumerate(texts)
        ]
        body = {
            "object": "list",
            "data": data,
            "model": "m",
            "usage": {"prompt_tokens": cost, "total_tokens": cost},
        }
        return Reply(200, body, headers, delay=LATENCY)


class PeakThreads:
    """The most of cachedembed's own threads alive at once while the block runs (sampled
    every 10 ms): worker-pool threads sending requests, and an async call's store thread.
    The loopback servers' threads are not counted."""

    def __init__(self) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            ours = sum(1 for t in threading.enumerate() if t.name.startswith("cachedembed"))
            self.peak = max(self.peak, ours)

    def __enter__(self) -> PeakThreads:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()


def embed_cold(cached: Cached, texts: list[str], mode: str) -> PeakThreads:
    """One cold call, blocking (``threads``) or from asyncio (``asyncio``); its thread peak."""
    with PeakThreads() as threads:
        if mode == "asyncio":
            asyncio.run(cached.aembed(texts))
        else:
            cached.embed(texts)
    return threads


def cold_openai(
    texts: list[str], concurrency: int, rpm: float, tpm: float, mode: str = "threads"
) -> dict[str, Any]:
    fake = LimitedOpenAI(rpm, tpm)
    with LoopbackServer(fake) as server, tempfile.TemporaryDirectory() as tmp:
        ef = OpenAIEmbeddingFunction(
            api_key="sk-bench",
            model_name="m",
            api_base=f"{server.url}/v1",
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
        )
        ef.max_batch = BATCH
        ef.prepare()
        cached = Cached(ef, f"sqlite:///{tmp}/c.db", concurrency=concurrency)
        started = time.perf_counter()
        threads = embed_cold(cached, texts, mode)
        wall = time.perf_counter() - started
        stats = cached.stats()
        close_all()  # before the folder goes: no late flush into a deleted file
    requests = fake.ok
    tokens = stats["tokens_embedded"]
    floor = max(tokens / (tpm / 60), requests / (rpm / 60))
    return {
        "concurrency": concurrency,
        "mode": mode,
        "threads": threads.peak,
        "texts": len(texts),
        "requests": requests,
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "floor_s": round(floor, 2),
        "ratio": round(wall / floor, 3),
        "throttled": fake.throttled,
        "throttled_share": round(fake.throttled / (fake.throttled + requests), 4),
    }


class TeiLike:
    def __init__(self, latency: float = 0.05) -> None:
        self.latency = latency

    def __call__(self, request: Request) -> Reply:
        if request.path == "/info":
            return Reply(
                200, {"model_id": "bench", "max_client_batch_size": 32, "max_input_length": 512}
            )
        texts = request.body["inputs"]
        if len(texts) > 32:
            return Reply(422, {"error": "batch size > 32", "error_type": "Validation"})
        vectors = [
            np.random.default_rng(abs(hash(t)) % (2**32)).standard_normal(DIM).tolist()
            for t in texts
        ]
        return Reply(
            200,
            vectors,
            {"x-compute-tokens": str(sum(map(server_tokens, texts)))},
            delay=self.latency,
        )


def tei_throughput(texts: list[str], concurrency: int, mode: str = "threads") -> dict[str, Any]:
    with LoopbackServer(TeiLike()) as server, tempfile.TemporaryDirectory() as tmp:
        ef = HuggingFaceEmbeddingServer(url=server.url)
        ef.batch_limit()
        cached = Cached(ef, f"sqlite:///{tmp}/c.db", concurrency=concurrency)
        started = time.perf_counter()
        threads = embed_cold(cached, texts, mode)
        wall = time.perf_counter() - started
        close_all()
    return {
        "concurrency": concurrency,
        "mode": mode,
        "threads": threads.peak,
        "texts": len(texts),
        "wall_s": round(wall, 2),
        "texts_per_s": round(len(texts) / wall),
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Cold run of {r['openai'][0]['texts']:,} texts, OpenAI wire format, "
        f"RPM {r['rpm']:,}, TPM {r['tpm']:,}, {LATENCY * 1000:.0f} ms per request, {BATCH} texts per request:",
        "",
        "| path | wall s | floor s | wall / floor | requests | 429s (share) | cachedembed threads |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["openai"]:
        label = (
            "sequential (concurrency=1)"
            if row["concurrency"] == 1
            else f"{row['mode']}, concurrency={row['concurrency']}"
        )
        lines.append(
            f"| {label} | {row['wall_s']} | {row['floor_s']} | {row['ratio']}x | {row['requests']} | "
            f"{row['throttled']} ({row['throttled_share']:.2%}) | {row['threads']} |"
        )
    lines += [
        "",
        f"TEI-like server (max_client_batch_size=32, 50 ms per request), {r['tei'][0]['texts']:,} texts:",
        "",
        "| path | concurrency | wall s | texts/s | cachedembed threads |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['mode']} | {row['concurrency']} | {row['wall_s']} | {row['texts_per_s']:,} | "
        f"{row['threads']} |"
        for row in r["tei"]
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--tei-texts", type=int, default=5_000)
    parser.add_argument("--rpm", type=float, default=1200)
    parser.add_argument("--tpm", type=float, default=6_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    texts = corpus(args.texts)
    result: dict[str, Any] = {"rpm": args.rpm, "tpm": args.tpm}
    result["openai"] = [
        cold_openai(texts, args.concurrency, args.rpm, args.tpm),
        cold_openai(texts, args.concurrency, args.rpm, args.tpm, "asyncio"),
        cold_openai(texts, 1, args.rpm, args.tpm),
    ]
    tei_texts = corpus(args.tei_texts, seed=3)
    result["tei"] = [tei_throughput(tei_texts, n) for n in (1, 4, 8)]
    result["tei"].append(tei_throughput(tei_texts, 8, "asyncio"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cold_path.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (RESULTS / "cold_path.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
