"""Child-process workloads for the concurrency and crash tests.

``concurrency`` (run as a script): several threads embed overlapping random text sets
through one cache, check every vector bit for bit against the provider, and write a
JSON log of what they asked for and what reached the provider. :func:`crash` (run in a forked child): embed
new and old texts in a loop until the parent kills the process.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cachedembed import Cached
from cachedembed.stores import close_all
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import same_bits

POOL = [f"text {i} " + "é" * (i % 5) + "😀" * (i % 3) for i in range(400)]
"""The texts every worker draws from: heavy overlap between threads and processes."""


class SlowFakeEF(FakeEF):
    """FakeEF that takes a little time per call, widening the windows races need."""

    latency = 0.002
    """Seconds each provider call takes."""

    def __call__(self, input: list[str]) -> list[Any]:
        time.sleep(self.latency)
        return super().__call__(input)


def start_together(ready_dir: Path, proc: int, processes: int) -> None:
    """A barrier across processes: announce readiness, wait until every worker is ready."""
    (ready_dir / str(proc)).touch()
    deadline = time.monotonic() + 60
    while len(list(ready_dir.iterdir())) < processes and time.monotonic() < deadline:
        time.sleep(0.005)


def concurrency(
    url: str,
    proc: int,
    threads: int,
    calls: int,
    processes: int,
    log: Path,
    lease: float | None = None,
    latency: float = SlowFakeEF.latency,
) -> int:
    ef = SlowFakeEF(dim=16)
    ef.latency = latency
    wrapper = Cached(ef, url, store_text=True, batch_size=7, lease=lease)
    wrapper.embed(["warm-up " + str(proc)])  # opens the store and namespace before the race
    requested = [1]
    n_calls = [1]
    errors: list[str] = []
    mismatches = [0]
    lock = threading.Lock()

    def run(thread: int) -> None:
        rng = random.Random(proc * 1000 + thread)
        try:
            for _ in range(calls):
                texts = [rng.choice(POOL) for _ in range(rng.randint(1, 40))]
                got = wrapper.embed(texts)
                want = [fake_vector(t, ef.dim, ef.model) for t in texts]
                bad = sum(not same_bits(g, w) for g, w in zip(got, want, strict=False)) + abs(
                    len(got) - len(texts)
                )
                with lock:
                    requested[0] += len(texts)
                    n_calls[0] += 1
                    mismatches[0] += bad
        except BaseException:
            with lock:
                errors.append(traceback.format_exc())

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    start_together(
        log.parent / "ready", proc, processes
    )  # every process starts its threads at once
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    close_all()  # flushes the buffered hit counters
    log.write_text(
        json.dumps(
            {
                "requested": requested[0],
                "calls": n_calls[0],
                "provider_texts": ef.texts_embedded,
                "mismatches": mismatches[0],
                "errors": errors,
            }
        )
    )
    return 1 if errors else 0


def crash(url: str, rep: int, dim: int, ready: Any = None) -> None:
    """Write as fast as possible until killed: new texts (misses) mixed with old ones (hits)."""
    wrapper = Cached(FakeEF(dim=dim), url, store_text=True, batch_size=5)
    wrapper.embed(["warm-up"])  # schema and namespace exist before the parent starts its clock
    if ready is not None:
        ready.set()
    rng = random.Random(rep)
    for i in range(1_000_000):
        new = [f"rep {rep} item {i} {k}" for k in range(rng.randint(1, 12))]
        old = [f"rep {rng.randrange(rep + 1)} item {rng.randrange(i + 1)} 0"]
        wrapper.embed(new + old)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["concurrency"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--proc", type=int, default=0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--lease", type=float, default=None)
    parser.add_argument("--latency", type=float, default=SlowFakeEF.latency)
    args = parser.parse_args()
    return concurrency(
        args.url,
        args.proc,
        args.threads,
        args.calls,
        args.processes,
        args.log,
        args.lease,
        args.latency,
    )


if __name__ == "__main__":
    sys.exit(main())
