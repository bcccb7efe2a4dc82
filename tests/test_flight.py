"""Single-flight: one caller embeds a missing key, concurrent callers wait for its result."""

from __future__ import annotations

import threading

import pytest

from cachedembed.flight import SingleFlight


def test_the_first_claimer_owns_keys_and_later_claimers_get_futures() -> None:
    flights = SingleFlight()
    mine, theirs = flights.claim(["a", "b"])
    assert mine == [0, 1] and theirs == []
    mine2, theirs2 = flights.claim(["b", "c"])
    assert mine2 == [1] and [pos for pos, _ in theirs2] == [0]
    built: list[int] = []

    def value_at(i: int) -> str:
        built.append(i)
        return f"value {i}"

    flights.resolve(["a", "b"], value_at)
    assert built == [1]  # only the key somebody waits on gets a value built
    assert theirs2[0][1].result(timeout=1) == "value 1"
    assert flights.claim(["a", "b"]) == ([0, 1], [])  # released: claimable again


def test_a_waiter_in_another_thread_receives_the_result() -> None:
    flights = SingleFlight()
    flights.claim(["k"])
    got: list[object] = []
    ready = threading.Event()

    def wait() -> None:
        _, theirs = flights.claim(["k"])
        ready.set()
        got.append(theirs[0][1].result(timeout=5))

    t = threading.Thread(target=wait)
    t.start()
    assert ready.wait(5)
    flights.resolve(["k"], lambda i: "done")
    t.join(5)
    assert got == ["done"]


def test_failing_claimed_keys_raises_in_waiters_and_releases_the_keys() -> None:
    flights = SingleFlight()
    flights.claim(["x", "y"])
    _, theirs = flights.claim(["x"])
    flights.fail(["x", "y"], RuntimeError("provider down"))
    with pytest.raises(RuntimeError, match="provider down"):
        theirs[0][1].result(timeout=1)
    assert flights.claim(["x", "y"]) == ([0, 1], [])
