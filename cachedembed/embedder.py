"""The ``Embedder`` protocol ``Cached`` drives, and the adapter presenting Chroma-style functions as one."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .embedding_functions._base import EmbeddedBatch, ProviderEmbeddingFunction, as_matrix
from .embedding_functions._parallel import AsyncScope, run_jobs, run_on_loop
from .identity import foreign_identity
from .keys import Role


@runtime_checkable
class Embedder(Protocol):
    """What the cache engine needs from the thing it wraps: batches of vectors and an identity.

    cachedembed's provider classes are embedders; anything else is presented as one by
    :class:`ChromaStyleEmbedder` (or an adapter's subclass of it).
    """

    @property
    def bypass_cache(self) -> bool:
        """Vectors depend on the whole batch (late chunking): never cache them per text."""
        ...

    @property
    def accepts_images(self) -> bool:
        """Whether image inputs (numpy arrays) may be sent."""
        ...

    @property
    def default_concurrency(self) -> int:
        """Provider requests in flight at once for one call, unless the wrapper says otherwise."""
        ...

    def cache_identity(self, role: Role) -> dict[str, Any]:
        """What names the cache namespace for ``role`` (model and output-changing options)."""
        ...

    def prepare(self) -> None:
        """Load what embedding needs (a local model) before the provider clock starts."""
        ...

    def embed_batches(self, texts: Sequence[Any], role: Role) -> Iterator[EmbeddedBatch]:
        """Vectors for ``texts``, one batch at a time, each placed by its ``start``."""
        ...

    def embed_batches_concurrently(
        self, texts: Sequence[Any], role: Role, concurrency: int, scope: AsyncScope | None = None
    ) -> Iterator[EmbeddedBatch]:
        """:meth:`embed_batches` with up to ``concurrency`` requests at once (any order); with
        ``scope``, as coroutines on its event loop where the embedder has an async interface."""
        ...


class ChromaStyleEmbedder:
    """Presents a Chroma-protocol function (or a plain callable) as batches of vectors.

    ``call(texts, role)`` embeds one batch; ``acall(texts, role)``, when given (a framework
    model's own async method), embeds it as a coroutine for async calls.
    """

    bypass_cache = False
    default_concurrency = 1
    """Unknown code may not be thread-safe: one call at a time unless asked for more."""

    def __init__(
        self,
        ef: Any,
        batch_size: int,
        call: Callable[[list[Any], Role], Any] | None = None,
        acall: Callable[[list[Any], Role], Awaitable[Any]] | None = None,
    ) -> None:
        self.ef = ef
        self.batch_size = batch_size
        # A Chroma-protocol function may be multimodal (it decides); an adapter's call embeds texts.
        self.accepts_images = call is None
        self._call = call or self._chroma_call
        self._acall = acall
        self.label = label(ef)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return foreign_identity(self.ef)

    def prepare(self) -> None:
        """Nothing to load: a foreign function loads what it needs on its first call."""

    def _chroma_call(self, texts: list[Any], role: Role) -> Any:
        if role == "query" and callable(getattr(self.ef, "embed_query", None)):
            return self.ef.embed_query(input=texts)
        return self.ef(input=texts)

    def embed_batches(self, texts: Sequence[Any], role: Role) -> Iterator[EmbeddedBatch]:
        return self.embed_batches_concurrently(texts, role, 1)

    def embed_batches_concurrently(
        self, texts: Sequence[Any], role: Role, concurrency: int, scope: AsyncScope | None = None
    ) -> Iterator[EmbeddedBatch]:
        chunks = [
            (start, list(texts[start : start + self.batch_size]))
            for start in range(0, len(texts), self.batch_size)
        ]
        if scope is not None and self._acall is not None:
            acall = self._acall
            ajobs = [partial(self._aembed_chunk, acall, start, c, role) for start, c in chunks]
            return run_on_loop(scope, ajobs, concurrency)
        # No async interface: a blocking function runs in worker threads, also for async calls.
        jobs = [partial(self._embed_chunk, start, chunk, role) for start, chunk in chunks]
        return run_jobs(jobs, concurrency)

    def _embed_chunk(self, start: int, chunk: list[Any], role: Role) -> EmbeddedBatch:
        began = time.perf_counter()
        return self._batch(start, chunk, self._call(chunk, role), began)

    async def _aembed_chunk(
        self,
        acall: Callable[[list[Any], Role], Awaitable[Any]],
        start: int,
        chunk: list[Any],
        role: Role,
    ) -> EmbeddedBatch:
        began = time.perf_counter()
        return self._batch(start, chunk, await acall(chunk, role), began)

    def _batch(self, start: int, chunk: list[Any], vectors: Any, began: float) -> EmbeddedBatch:
        """One answer of the function, checked: a float matrix with a row per item of ``chunk``."""
        if isinstance(vectors, list) and vectors and isinstance(vectors[0], np.ndarray):
            vectors = (
                np.stack(vectors)
                if len({v.shape for v in vectors}) == 1
                else [list(v) for v in vectors]
            )
        matrix = as_matrix(self.label, vectors, len(chunk))
        return EmbeddedBatch(start, matrix, None, time.perf_counter() - began)


def as_embedder(ef: Any, batch_size: int) -> Embedder:
    """``ef`` itself when it already yields batches, else ``ef`` presented as an embedder."""
    if isinstance(ef, (ProviderEmbeddingFunction, ChromaStyleEmbedder)):
        return ef
    return ChromaStyleEmbedder(ef, batch_size)


def label(ef: Any) -> str:
    """How errors name ``ef``: its ``name()`` when it has one, else its class."""
    name = getattr(ef, "name", None)
    try:
        value = name() if callable(name) else None
    except Exception:
        value = None
    return value if isinstance(value, str) else type(ef).__name__
