"""A fleet scenario shared by the tests and ``bench/fleet.py``: a lease holder SIGKILLed mid-call.

A victim process starts embedding :data:`SHARED` with a provider that never answers, so it
holds their leases; survivors (forked processes of two threads each) then ask for the
same texts, and the victim is killed. The survivors must take its leases over once they
run out and finish with the provider's exact vectors, paying for each text once.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachedembed import Cached
from cachedembed.keys import ItemHasher
from cachedembed.stores import close_all
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import same_bits

FORK = mp.get_context("fork")
SHARED = [f"shared text {i} ü" for i in range(30)]
SURVIVORS = 3


class BlockingEF(FakeEF):
    """A provider that never answers (until its process is killed)."""

    def __init__(self, entered: Any) -> None:
        super().__init__(dim=16)
        self.entered = entered

    def __call__(self, input: list[str]) -> list[Any]:
        self.entered.set()
        time.sleep(600)
        raise AssertionError("the victim should have been killed")


def victim(url: str, lease: float, entered: Any) -> None:
    Cached(BlockingEF(entered), url, namespace="fleet", lease=lease).embed(SHARED)


def survivor(url: str, lease: float, k: int, log: Path) -> None:
    """Two threads embed the shared texts (in their own orders) and one text of their own each."""
    ef = FakeEF(dim=16)
    wrapper = Cached(ef, url, namespace="fleet", lease=lease)
    bad: list[str] = []

    def run(t: int) -> None:
        texts = [*random.Random(k * 10 + t).sample(SHARED, len(SHARED)), f"own {k} {t}"]
        got = wrapper.embed(texts)
        bad.extend(x for x, g in zip(texts, got) if not same_bits(g, fake_vector(x, 16, "fake-1")))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close_all()
    log.write_text(json.dumps({"provider_texts": ef.texts_embedded, "mismatches": bad}))


@dataclass
class KillOutcome:
    held: bool
    """Whether the victim held every shared text's lease when it was killed."""
    exitcodes: list[int | None]
    results: list[dict[str, Any]]
    """Each survivor's log: the texts its provider embedded, and its wrong vectors."""
    seconds: float
    """From the kill until the last survivor finished."""


def kill_a_lease_holder(url: str, logs: Path, lease: float) -> KillOutcome:
    probe = Cached(FakeEF(dim=16), url, namespace="fleet")
    spec = probe.spec("document")
    ns = probe.store.namespace(spec)
    ids = ItemHasher(spec).text_key_arrays(SHARED)[0].tolist()

    entered = FORK.Event()
    doomed = FORK.Process(target=victim, args=(url, lease, entered))
    doomed.start()
    assert entered.wait(30), "the victim never reached its provider"
    held = probe.store.claim_leases(ns.id, ids, "probe", 1) == [False] * len(ids)
    logs.mkdir(parents=True, exist_ok=True)
    files = [logs / f"survivor{k}.json" for k in range(SURVIVORS)]
    others = [
        FORK.Process(target=survivor, args=(url, lease, k, files[k])) for k in range(SURVIVORS)
    ]
    for p in others:
        p.start()
    assert doomed.pid is not None
    os.kill(doomed.pid, signal.SIGKILL)
    killed = time.perf_counter()
    doomed.join()
    for p in others:
        p.join(60)  # lease + a second in practice
    seconds = time.perf_counter() - killed
    results = [json.loads(f.read_text()) for f in files if f.exists()]
    return KillOutcome(held, [p.exitcode for p in others], results, seconds)
