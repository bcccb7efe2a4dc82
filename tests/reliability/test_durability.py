"""What is durable when: entries and the misses that paid for them at once; hit counters by exit.

Hit counters are buffered in memory (a hit must not cost a write transaction) and
committed every second, with the next miss, on ``stats()``/``flush()``/close, and when
the interpreter exits. These tests run real child interpreters that exit in the ways
programs do and check what reached the cache file.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

from cachedembed.stores import open_store
from tests.reliability._helpers import PYTHON, stats_total, subprocess_env

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from cachedembed import Cached
    from tests.conftest import FakeEF
    wrapper = Cached(FakeEF(), sys.argv[1])
    wrapper.embed(["a", "b", "c"])          # 3 misses: committed with their entries
    wrapper.embed(["a", "b", "c", "a"])     # 4 hits: buffered
    how = sys.argv[2]
    if how == "return":
        pass
    elif how == "sys.exit":
        sys.exit(0)
    elif how == "exception":
        raise RuntimeError("an uncaught exception ends the program")
    elif how == "os._exit":
        os._exit(0)                          # no clean-up at all, like a kill
    """
)


CASES = [
    ("sqlite", "return"),
    ("sqlite", "sys.exit"),
    ("sqlite", "exception"),
    ("sqlite", "os._exit"),
    ("diskcache", "return"),
]


def test_buffered_hits_reach_the_cache_when_the_program_exits(tmp_path: Path) -> None:
    urls = [
        f"sqlite:///{tmp_path / f'{how}.db'}"
        if backend == "sqlite"
        else f"diskcache://{tmp_path / how}"
        for backend, how in CASES
    ]
    # One child per way of exiting, all at once (each is a fresh interpreter).
    children = [
        subprocess.Popen(
            [PYTHON, "-c", SCRIPT, url, how],
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for url, (_backend, how) in zip(urls, CASES, strict=True)
    ]
    for child in children:
        child.wait(timeout=60)
    for url, (_backend, how) in zip(urls, CASES, strict=True):
        stats = stats_total(open_store(url))
        assert stats.misses == 3, how  # always: they commit with the entries
        # A normal exit flushes the buffer; an abrupt one loses at most the last second of hits.
        assert stats.hits == (0 if how == "os._exit" else 4), how


IDLE_SCRIPT = textwrap.dedent(
    """
    import sys
    from cachedembed import Cached
    from tests.conftest import FakeEF
    wrapper = Cached(FakeEF(), sys.argv[1])
    wrapper.embed(["a", "b", "c"])
    wrapper.embed(["a", "b", "c", "a"])     # 4 hits, buffered; then the program goes idle
    print("idle", flush=True)
    sys.stdin.read()                        # until the test closes our stdin
    """
)


def test_a_process_gone_idle_publishes_its_hits_within_about_a_second(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'idle.db'}"
    child = subprocess.Popen(
        [PYTHON, "-c", IDLE_SCRIPT, url],
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "idle"
        reader = open_store(url, shared=False)
        # Poll with a deadline (the flush is due one flush_interval after the hits).
        deadline = time.monotonic() + 20
        while stats_total(reader).hits < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats_total(reader).hits == 4, "an idle process never published its hits"
        assert child.poll() is None, "the hits must come from the running process, not its exit"
        reader.close()
    finally:
        child.kill()
        child.wait(timeout=30)
