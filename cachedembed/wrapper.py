"""``Cached``, the caching wrapper around any embedding function.

This is the public face: construction, the Chroma embedding-function protocol, the
config round trip, stats. The work of a call (lookup, single-flight miss filling,
publication, accounting) is :mod:`cachedembed._engine`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._engine import Embedded, Engine
from .embedder import as_embedder, label
from .embedding_functions._parallel import check_concurrency
from .errors import ConfigurationError
from .fleet import Leases
from .frameworks import adapt, framework_of
from .keys import HashName, ItemKind, NamespaceSpec, Role
from .options import (
    OnEngine,
    OnStoreError,
    PendingPolicy,
    StorageDtype,
    UnicodeForm,
    check_batch_size,
    check_options,
)
from .persisted import ChromaConfig, rebuilt_arguments, saved_config
from .stats import lifetime_stats, session_stats
from .stores import Store
from .stores.base import Namespace
from .stores.deferred import store_of
from .usage import UsageDelta

__all__ = ["Cached", "Embedded", "check_batch_size"]


class Cached(ChromaConfig):
    """A persistent, content-addressed cache in front of an embedding function.

    ``Cached(ef)`` is itself a Chroma embedding function: pass it to a collection, call
    it with documents, or ``embed_query`` with queries. Guarantees:

    * One float32 vector per input, in input order, bit-identical to what the provider
      returned when the text was first embedded.
    * Only texts missing from the cache reach the provider; duplicates in a call and
      concurrent requests for a text (threads or tasks of a process) are embedded once.
    * Each provider batch is cached as it arrives, with the tokens it cost and the
      counters that paid for it, in one transaction: a later failure keeps it.
    * Bad input raises :class:`~cachedembed.errors.InvalidInputError` before any lookup
      or provider call; malformed provider output raises and is never cached.

    Args:
        ef: The function to wrap: any object with Chroma's ``__call__(input)`` (and
            optionally ``embed_query``, ``name``, ``get_config``). A LangChain, LlamaIndex
            or sentence-transformers model gets its adapter (:mod:`cachedembed.adapters`).
        cache: A store or URL (``sqlite:///path.db``, ``diskcache:///dir``, ``memory://``,
            ``postgresql+psycopg://...``); default ``$CACHEDEMBED_URL``, else a SQLite
            file in the user cache folder.
        namespace: Explicit namespace instead of one derived from ``ef`` (required when
            ``ef`` has no ``name()``).
        store_text: Also keep each text (off for privacy), so an export can be re-embedded.
        dtype: ``"float32"`` (exact) or ``"float16"`` (half the space; rounded alike when
            embedded and when served).
        hash: ``"xxh3"`` (fast, default) or ``"blake2b"`` (keyed with
            ``$CACHEDEMBED_HASH_KEY``, for caches shared with untrusted writers).
        normalize_unicode: Unicode form texts are normalised to before hashing and
            embedding (NFC and NFD spellings then share entries); default: byte for byte.
        batch_size: Texts per call to a foreign ``ef`` (cachedembed's own functions batch
            to their provider's limits).
        on_store_error: ``"warn"`` (default): a cache that cannot be read or written fails
            no call; the failure is logged once per outage, counted in
            ``stats()["store_errors"]``, and unwritten batches are written once it answers
            (docs/reliability.md). ``"raise"``: it raises :class:`~cachedembed.errors.StoreError`.
        pending_batches: Misses a submitted, uncollected batch job covers
            (:meth:`submit_batch`): ``"error"`` raises
            :class:`~cachedembed.errors.PendingBatchError` (default: never pay twice),
            ``"wait"`` waits for and collects the job, ``"embed"`` embeds them now.
        concurrency: Provider requests at once for a call's misses; default: the
            function's ``default_concurrency`` (4 remote, 1 in-process or foreign). A
            provider's rate limits hold across all its users (docs/performance.md).
        lease: Seconds a text being embedded stays leased to this process in a shared
            store, so other processes wait for it instead of paying again
            (docs/shared-cache.md); default 30 s or three times the slowest batch seen,
            ``0`` for none.
    """

    store_text: OnEngine[bool] = OnEngine()
    on_store_error: OnEngine[OnStoreError] = OnEngine()
    pending_batches: OnEngine[PendingPolicy] = OnEngine()
    concurrency: OnEngine[int] = OnEngine()
    batch_poll: OnEngine[float] = OnEngine()
    """First seconds between status checks when waiting for a batch job (doubling)."""

    def __new__(cls, ef: Any = None, *args: Any, **kwargs: Any) -> Any:
        # A LangChain, LlamaIndex or sentence-transformers object gets its framework's
        # adapter (itself backed by a Cached). Recognised by module name, so no framework
        # is imported for anybody else. (cachedembed.wrap does the same, typed.)
        if cls is Cached and framework_of(ef) is not None:
            return adapt(ef, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        ef: Any,
        cache: Store | str | None = None,
        *,
        namespace: str | None = None,
        store_text: bool = False,
        dtype: StorageDtype = "float32",
        hash: HashName = "xxh3",
        normalize_unicode: UnicodeForm | None = None,
        batch_size: int = 256,
        on_store_error: OnStoreError = "warn",
        pending_batches: PendingPolicy = "error",
        concurrency: int | None = None,
        lease: float | None = None,
    ) -> None:
        if isinstance(ef, Cached):
            raise ConfigurationError("ef is already Cached; wrap the inner function once")
        check_options(dtype, normalize_unicode, batch_size, on_store_error, pending_batches)
        self.ef, self.namespace, self.batch_size = ef, namespace, batch_size
        self.dtype, self.hash, self.normalize_unicode = dtype, hash, normalize_unicode
        # A cache server down at start fails open (``"warn"``), as it does later.
        self.store: Store = store_of(cache, fail_open=on_store_error != "raise")
        embedder = as_embedder(ef, batch_size)
        concurrency = embedder.default_concurrency if concurrency is None else concurrency
        self._engine = Engine(
            self.store,
            embedder,
            self.spec,
            label=label(ef),
            dtype=dtype,
            store_text=store_text,
            normalize_unicode=normalize_unicode,
            on_store_error=on_store_error,
            pending_batches=pending_batches,
            concurrency=check_concurrency(concurrency),
            leases=Leases(self.store, lease),
        )

    # -- identity ----------------------------------------------------------------

    def identity(self, role: Role) -> dict[str, Any]:
        """The model identity for ``role`` that names this wrapper's namespace."""
        if self.namespace is not None:
            base: dict[str, Any] = {"provider": "custom", "namespace": self.namespace}
        else:
            base = dict(self._engine.embedder.cache_identity(role))
        if self.normalize_unicode:
            base["unicode"] = self.normalize_unicode
        return base

    def spec(self, role: Role, kind: ItemKind = "text") -> NamespaceSpec:
        return NamespaceSpec(
            identity=self.identity(role), role=role, dtype=self.dtype, hash=self.hash, kind=kind
        )

    def dimension(self, role: Role = "document") -> int | None:
        """The size of the vectors cached for ``role``; ``None`` until one was embedded."""
        return self._engine.dimension(role)

    # -- Chroma's EmbeddingFunction protocol (the rest: persisted.ChromaConfig) ----

    def __call__(self, input: Sequence[Any]) -> list[np.ndarray]:
        """Embed documents (texts, or images as numpy arrays) through the cache; one float32
        vector per input, in order."""
        return list(self.embed(input, "document"))

    def embed_query(self, input: Sequence[Any]) -> list[np.ndarray]:
        """Embed queries (texts or images) through the cache (kept apart from documents)."""
        return list(self.embed(input, "query"))

    async def acall(self, input: Sequence[Any]) -> list[np.ndarray]:
        """``__call__`` for async code: the misses go out as coroutines on the running loop
        (``concurrency`` at once, through the provider's async client), the store is read
        and written in one worker thread. Cancelling stops the requests in flight."""
        return list((await self._engine.aembed(input, "document")).vectors)

    async def aembed_query(self, input: Sequence[Any]) -> list[np.ndarray]:
        """``embed_query`` for async code; single-flight holds across tasks and threads."""
        return list((await self._engine.aembed(input, "query")).vectors)

    async def aembed(self, input: Sequence[Any], role: Role = "document") -> np.ndarray:
        """:meth:`embed` for async code (see :meth:`acall`)."""
        return (await self._engine.aembed(input, role)).vectors

    def get_config(self) -> dict[str, Any]:
        """What Chroma persists with a collection, in plain text: no password, no key."""
        return saved_config(self)

    @classmethod
    def build_from_config(cls, config: Mapping[str, Any]) -> Cached:
        """Rebuild from :meth:`get_config` output, sharing the open store (Chroma does this per operation)."""
        ef, cache, options = rebuilt_arguments(config)
        return cls(ef, cache, **options)

    # -- the cache ----------------------------------------------------------------

    def embed(self, input: Sequence[Any], role: Role = "document") -> np.ndarray:
        """Embed ``input`` for ``role`` through the cache; an (n, dim) float32 matrix in input order."""
        return self._engine.embed(input, role).vectors

    def embed_with_usage(self, input: Sequence[Any], role: Role = "document") -> Embedded:
        """:meth:`embed`, also returning each item's tokens and this call's counters."""
        return self._engine.embed(input, role)

    # -- batch APIs ---------------------------------------------------------------

    def submit_batch(self, input: Sequence[str], role: Role = "document") -> Any:
        """Send the misses among ``input`` (deduplicated, minus texts in pending jobs) to the
        provider's batch API: half price, within 24 h (docs/batch.md).

        Returns a :class:`~cachedembed.batchjobs.Submitted` whose ``jobs`` have ``status()``,
        ``wait()`` and ``collect()``; ``cachedembed batch collect`` finishes them from anywhere.
        """
        from .batchjobs import submit

        return submit(self, input, role)

    def batch_jobs(self, pending: bool = False) -> list[Any]:
        """Handles of this wrapper's recorded batch jobs (only uncollected ones with ``pending``)."""
        from .batchjobs import jobs_of

        return jobs_of(self, pending)

    # -- stats --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Lifetime totals of this wrapper's namespaces: every call by any process sharing
        the cache (this one's buffered counters flushed first), per role under ``"by_role"``."""
        return lifetime_stats(self._engine)

    def session_stats(self) -> dict[str, Any]:
        """What this object alone did since it was built: the keys of :meth:`stats`, counted
        per call, without reading the store."""
        return session_stats(self._engine.session)

    def session_usage(self) -> dict[Role, UsageDelta]:
        """This object's counters so far, per role (copies: safe to keep or add up)."""
        return self._engine.session.snapshot()[0]

    def namespaces(self) -> list[Namespace]:
        """The namespaces this wrapper reads and writes: documents, then queries; then their
        image twins, where images were embedded (by this wrapper or into its store before)."""
        return self._engine.namespaces()

    def flush(self) -> None:
        """Commit buffered hit counters and last-use touches now (they are also flushed every second and at exit)."""
        self.store.flush()

    def __repr__(self) -> str:
        return f"Cached({self.ef!r}, cache={self.store.url!r})"
