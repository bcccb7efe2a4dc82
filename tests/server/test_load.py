"""A bounded load test: 2,000 requests from 8 concurrent clients over overlapping texts."""

from __future__ import annotations

import threading
import time

import numpy as np
import requests

from cachedembed.stores import Store

from .conftest import build
from .harness import scripted_vector, serving

REQUESTS = 2_000
CLIENTS = 8
PER_REQUEST = 4
POOL = [f"text number {i} of the shared pool" for i in range(400)]


def texts_of(n: int) -> list[str]:
    # Consecutive requests overlap, and concurrent clients ask for the same texts at once.
    return [POOL[(n * 3 + k * 101) % len(POOL)] for k in range(PER_REQUEST)]


def test_concurrent_clients_get_exact_vectors_and_exact_hit_counts(cache: Store) -> None:
    app, small, _ = build(cache)
    small.delay = 0.002  # an upstream that takes a little time, so flights overlap
    errors: list[str] = []
    lock = threading.Lock()
    next_request = iter(range(REQUESTS))

    with serving(app) as url:  # type: ignore[arg-type]

        def client() -> None:
            with requests.Session() as session:
                while True:
                    with lock:
                        n = next(next_request, None)
                    if n is None:
                        return
                    texts = texts_of(n)
                    response = session.post(
                        f"{url}/v1/embeddings", json={"model": "small", "input": texts}
                    )
                    if response.status_code != 200:
                        with lock:
                            errors.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    got = np.array(
                        [d["embedding"] for d in response.json()["data"]], dtype=np.float32
                    )
                    if n % 50 == 0:
                        want = np.stack([scripted_vector(t, "small-1", 8) for t in texts])
                        if got.tobytes() != want.tobytes():
                            with lock:
                                errors.append(f"request {n}: wrong vectors")

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        stats = requests.get(f"{url}/stats").json()["total"]

    print(
        f"\n{REQUESTS} requests ({REQUESTS * PER_REQUEST} texts) from {CLIENTS} clients in "
        f"{elapsed:.2f}s: {REQUESTS / elapsed:.0f} requests/s"
    )
    assert errors == []
    distinct = {t for n in range(REQUESTS) for t in texts_of(n)}
    # Single-flight: each distinct text went upstream exactly once, however many asked at once.
    assert sorted(small.sent) == sorted(distinct)
    assert stats["texts"] == REQUESTS * PER_REQUEST
    assert stats["misses"] == len(distinct)
    assert stats["hits"] == REQUESTS * PER_REQUEST - len(distinct)
    assert stats["calls"] == REQUESTS
