"""The cache engine on its own: a memory store and a tiny embedder, no Chroma and no ``Cached``.

What the façade promises is decided here: misses embedded once and stored per batch,
hits bit-identical, counters that add up, and a one-text short path that answers exactly
as the general path does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachedembed._engine import Engine, _flight_keys
from cachedembed.embedder import ChromaStyleEmbedder, Embedder
from cachedembed.embedding_functions._base import EmbeddedBatch
from cachedembed.errors import InvalidInputError, ProviderResponseError
from cachedembed.keys import ItemHasher, ItemKind, NamespaceSpec, Role
from cachedembed.stores import Store, open_store
from tests.conftest import fake_vector


class TinyEmbedder:
    """The smallest :class:`Embedder`: fixed vectors per text, batches of ``batch`` texts."""

    bypass_cache = False
    accepts_images = False
    default_concurrency = 1

    def __init__(self, dim: int = 8, batch: int = 2, scale: float = 1.0) -> None:
        self.dim, self.batch, self.scale = dim, batch, scale
        self.sent: list[list[str]] = []
        self.lock = threading.Lock()

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {"provider": "tiny", "dim": self.dim}

    def prepare(self) -> None:
        pass

    def embed_batches(self, texts: Sequence[Any], role: Role) -> Iterator[EmbeddedBatch]:
        return self.embed_batches_concurrently(texts, role, 1)

    def embed_batches_concurrently(
        self, texts: Sequence[Any], role: Role, concurrency: int
    ) -> Iterator[EmbeddedBatch]:
        for start in range(0, len(texts), self.batch):
            chunk = list(texts[start : start + self.batch])
            with self.lock:
                self.sent.append(chunk)
            rows = np.stack([fake_vector(t, self.dim) * self.scale for t in chunk])
            yield EmbeddedBatch(start, rows, 3 * len(chunk), 0.001)


def engine(store: Store, embedder: Embedder, *, dtype: str = "float32", **options: Any) -> Engine:
    def spec(role: Role, kind: ItemKind) -> NamespaceSpec:
        return NamespaceSpec(embedder.cache_identity(role), role, dtype=dtype, kind=kind)

    return Engine(store, embedder, spec, label="tiny", dtype=dtype, **options)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"memory://{tmp_path.name}", shared=False)


def test_the_tiny_embedder_and_foreign_functions_are_embedders() -> None:
    assert isinstance(TinyEmbedder(), Embedder)
    assert isinstance(ChromaStyleEmbedder(lambda input: [[1.0]], batch_size=4), Embedder)


def test_misses_are_embedded_once_in_batches_and_served_bit_identical_after(store: Store) -> None:
    tiny = TinyEmbedder()
    eng = engine(store, tiny)
    texts = ["c", "a", "b", "a", "c"]
    want = np.stack([fake_vector(t) for t in texts])
    first = eng.embed(texts, "document")
    assert tiny.sent == [["c", "a"], ["b"]]  # distinct texts, in input order
    assert np.array_equal(first.vectors, want)
    assert (first.usage.misses, first.usage.hits, first.usage.provider_calls) == (3, 2, 2)
    again = eng.embed(texts, "document")
    assert len(tiny.sent) == 2 and np.array_equal(again.vectors, want)
    assert (again.usage.misses, again.usage.hits, again.usage.tokens_saved) == (0, 5, 15)
    assert again.tokens.tolist() == [3, 3, 3, 3, 3]


def test_the_session_adds_up_every_call_of_every_path(store: Store) -> None:
    eng = engine(store, TinyEmbedder())
    eng.embed(["a", "b"], "query")
    eng.embed(["a"], "query")  # the short path
    eng.embed(["a", "a", "c"], "query")
    usage, store_errors = eng.session.snapshot()
    q = usage["query"]
    assert (q.calls, q.hits, q.misses, q.tokens_embedded, q.tokens_saved) == (3, 3, 3, 9, 9)
    assert store_errors == 0 and "document" not in usage


def test_the_one_text_short_path_answers_as_the_general_path(store: Store) -> None:
    eng = engine(store, TinyEmbedder())
    assert eng._hit_text("q", "query") is None  # namespace not resolved yet
    eng.embed(["q", "other"], "query")
    short = eng._hit_text("q", "query")
    assert short is not None
    state = eng.state("query")
    (item_id,), (check,) = eng.hasher("query").text_keys(["q"])
    general = eng._hit_one(item_id, check, state)
    assert general is not None
    assert short.vectors.shape == (1, 8) and short.vectors.flags.writeable
    assert np.array_equal(short.vectors, general.vectors)
    assert short.tokens.tolist() == general.tokens.tolist()
    assert short.usage == general.usage
    assert eng._hit_text("never embedded", "query") is None  # a miss goes the general way


def test_a_text_utf8_cannot_encode_is_refused_on_the_short_path_too(store: Store) -> None:
    eng = engine(store, TinyEmbedder())
    eng.embed(["ok"], "document")
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        eng.embed(["\ud800"], "document")


@pytest.mark.parametrize("hash", ["xxh3", "blake2b"])
def test_one_text_hashes_to_the_key_the_batch_path_gives(
    hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "k" * 32)
    hasher = ItemHasher(NamespaceSpec({"m": 1}, "document", hash=hash))  # type: ignore[arg-type]
    texts = ["", "a", "é", "naïve query", "x" * 10_000]
    ids, checks = hasher.text_keys(texts)
    assert [hasher.text_key(t) for t in texts] == list(zip(ids, checks))


def test_values_beyond_float16_are_refused_and_nothing_is_stored(store: Store) -> None:
    eng = engine(store, TinyEmbedder(scale=1e6), dtype="float16")
    with pytest.raises(ProviderResponseError, match="float16 range"):
        eng.embed(["big"], "document")
    assert (
        store.lookup(eng.state("document").ns.id, eng.hasher("document").text_keys(["big"])[0])
        == []
    )


def test_a_provider_that_drops_texts_fails_the_call_and_keeps_the_batches_it_paid_for(
    store: Store,
) -> None:
    class Short(TinyEmbedder):
        def embed_batches_concurrently(
            self, texts: Sequence[Any], role: Role, concurrency: int
        ) -> Iterator[EmbeddedBatch]:
            yield next(iter(super().embed_batches_concurrently(texts, role, concurrency)))

    eng = engine(store, Short())
    with pytest.raises(ProviderResponseError, match="2 of 3"):
        eng.embed(["a", "b", "c"], "document")
    tiny = TinyEmbedder()
    later = engine(store, tiny).embed(["a", "b", "c"], "document")
    assert tiny.sent == [["c"]] and later.usage.hits == 2


def test_a_failed_call_releases_its_single_flight_claims(store: Store) -> None:
    class Failing(TinyEmbedder):
        def embed_batches_concurrently(
            self, texts: Sequence[Any], role: Role, concurrency: int
        ) -> Iterator[EmbeddedBatch]:
            raise ProviderResponseError("tiny", "down")

    eng = engine(store, Failing())
    with pytest.raises(ProviderResponseError):
        eng.embed(["a", "b"], "document")
    ns_id = eng.state("document").ns.id
    ids = np.array(eng.hasher("document").text_keys(["a", "b"])[0])
    mine, theirs = store.flights.claim(_flight_keys(ns_id, ids))
    assert mine == [0, 1] and theirs == []  # nobody holds them any more
