"""Hash collisions: a row that merely shares an id is never served.

An entry is found by a 64-bit id, then accepted only if its namespace and a second,
independent 64-bit check both match. These tests forge the rows an attacker (or a
one-in-2^64 accident) would produce and show they are treated as misses, on every
backend. ``hash="blake2b"`` keys items with a secret and never mixes with xxh3 entries.
"""

from __future__ import annotations

import numpy as np
import pytest

from cachedembed import Cached
from cachedembed.keys import ItemHasher
from cachedembed.stores import EntryBatch
from tests.conftest import FakeEF, fake_vector
from tests.reliability._helpers import same_bits

EVIL = np.full((1, 8), 6.66, dtype="<f4")


def forge(wrapper: Cached, text: str, *, ns_id: int | None = None, check_delta: int = 0) -> None:
    """Plant ``EVIL`` under ``text``'s id, with a different check and/or namespace."""
    state = wrapper._engine.state("document")
    ids, checks = wrapper._engine.hasher("document").text_keys([text])
    wrapper.store.write_entries(
        state.ns.id if ns_id is None else ns_id,
        EntryBatch(
            ids=ids, checks=[(checks[0] + check_delta) % 2**63], vectors=EVIL, tokens=[1], flags=[0]
        ),
    )
    wrapper.store.set_dimension(state.ns, 8)


@pytest.mark.parametrize("forgery", ["other-check", "other-namespace", "both"])
def test_forged_row_with_the_same_id_is_never_served(cache_url: str, forgery: str) -> None:
    ef = FakeEF()
    wrapper = Cached(ef, cache_url)
    other = Cached(FakeEF(model="other"), cache_url)._engine.state("document").ns
    forge(
        wrapper,
        "victim",
        ns_id=other.id if forgery != "other-check" else None,
        check_delta=0 if forgery == "other-namespace" else 1,
    )
    # Stores keyed by item id alone see the forged row at the victim's id; stores that keep
    # namespaces apart in their keys (Redis) only see it there for a forged check.
    state = wrapper._engine.state("document")
    (victim_id,), _ = wrapper._engine.hasher("document").text_keys(["victim"])
    shadowed = len(wrapper.store.lookup(state.ns.id, [victim_id])) == 1
    assert shadowed or forgery != "other-check"
    want = fake_vector("victim", 8, "fake-1")
    for _ in range(2):  # the forged row stays in place but is never taken for a hit
        got = wrapper.embed(["victim", "bystander"])
        assert same_bits(got[0], want)
        assert same_bits(got[1], fake_vector("bystander", 8, "fake-1"))
    # A shadowing row is never overwritten, so the victim is embedded on every call.
    assert ef.texts_embedded.count("victim") == (2 if shadowed else 1)


def test_blake2b_namespaces_work_and_never_mix_with_xxh3(
    cache_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "a shared secret")
    texts = ["alpha", "beta", "alpha"]
    want = np.array([fake_vector(t, 8, "fake-1") for t in texts])
    ef = FakeEF()
    blake = Cached(ef, cache_url, hash="blake2b")
    assert same_bits(blake.embed(texts), want)
    assert same_bits(blake.embed(texts), want)
    assert ef.texts_embedded == ["alpha", "beta"]
    # The hash is part of the namespace: an xxh3 wrapper of the same model starts cold ...
    xxh3 = Cached(ef, cache_url)
    assert same_bits(xxh3.embed(texts), want)
    assert ef.texts_embedded == ["alpha", "beta", "alpha", "beta"]
    assert blake._engine.state("document").ns.id != xxh3._engine.state("document").ns.id
    # ... and the two derive unrelated item ids from the same text.
    b_ids, _ = blake._engine.hasher("document").text_keys(["alpha"])
    x_ids, _ = xxh3._engine.hasher("document").text_keys(["alpha"])
    assert b_ids != x_ids


def test_blake2b_ids_depend_on_the_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = Cached(FakeEF(), "memory://keys", hash="blake2b").spec("document")
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "key one")
    one = ItemHasher(spec).text_keys(["text"])
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "key two")
    two = ItemHasher(spec).text_keys(["text"])
    # Without the key nobody can compute (let alone collide) another party's ids.
    assert one != two
    assert one[0][0] != two[0][0] and one[1][0] != two[1][0]
