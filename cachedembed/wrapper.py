"""``Cached``, the caching wrapper around any embedding function.

This is the public face: construction, the Chroma embedding-function protocol, the
config round trip, stats. The work of a call (lookup, single-flight miss filling,
publication, accounting) is :mod:`cachedembed._engine`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._engine import Embedded, Engine, _Namespaced
from .embedder import as_embedder, label
from .embedding_functions._parallel import check_concurrency
from .errors import ConfigurationError, StoreError
from .fleet import Leases
from .frameworks import adapt, framework_of
from .keys import HashName, ItemHasher, ItemKind, NamespaceSpec, Role
from .options import (
    OnEngine,
    OnStoreError,
    PendingPolicy,
    StorageDtype,
    UnicodeForm,
    check_batch_size,
    check_options,
)
from .persisted import build_inner, check_config_update, inner_config
from .stores import Store, open_store, private_url, public_url
from .stores.base import UNREGISTERED_NS, Namespace
from .stores.deferred import open_or_defer
from .usage import UsageDelta

__all__ = ["Cached", "Embedded", "check_batch_size"]


class Cached:
    """A persistent, content-addressed cache in front of an embedding function.

    ``Cached(ef)`` is itself a Chroma embedding function: pass it to a collection, call
    it with documents, or ``embed_query`` with queries. Guarantees:

    * The result has one float32 vector per input, in input order, bit-identical to what
      the provider returned when the text was first embedded.
    * Only texts missing from the cache reach the provider; duplicates inside a call and
      concurrent requests for the same text (threads or tasks of one process) are
      embedded once.
    * Each provider batch is cached as soon as it arrives, with the tokens it cost and
      the counters that paid for it, in one transaction: a later failure keeps it.
    * Bad input raises :class:`~cachedembed.errors.InvalidInputError` before any
      lookup or provider call. Malformed provider output raises and is never cached.

    Args:
        ef: The function to wrap: any object with Chroma's ``__call__(input)`` (and
            optionally ``embed_query``, ``name``, ``get_config``), including
            cachedembed's own provider classes. A LangChain ``Embeddings``, a LlamaIndex
            ``BaseEmbedding`` or a ``SentenceTransformer`` returns that framework's adapter
            instead (see :mod:`cachedembed.adapters`), which presents the same interface.
        cache: A store or URL (``sqlite:///path.db``, ``diskcache:///dir``, ``memory://``,
            ``postgresql+psycopg://...``). Default: ``$CACHEDEMBED_URL`` or a SQLite
            file in the user cache folder.
        namespace: Explicit namespace instead of one derived from ``ef``; required when
            ``ef`` has no ``name()``.
        store_text: Also keep each text (off by default, for privacy), so an export can
            be re-embedded with another model.
        dtype: ``"float32"`` (exact) or ``"float16"`` (half the space; values rounded to
            float16, both when embedded and when served, so results are consistent).
        hash: ``"xxh3"`` (fast, default) or ``"blake2b"`` (keyed with
            ``$CACHEDEMBED_HASH_KEY``; collision resistant, for caches shared with
            untrusted writers).
        normalize_unicode: Normalise texts to this Unicode form before hashing and
            embedding, so NFC and NFD spellings share entries. Off by default: texts are
            keyed byte for byte.
        batch_size: Texts per call to a foreign ``ef`` (cachedembed's own functions
            batch to their provider's limits themselves).
        on_store_error: ``"warn"`` (default): when the cache cannot be read or written
            (server down, disk full, read-only), calls still return the provider's
            vectors; the failure is logged once per outage and counted in
            ``stats()["store_errors"]``, a failing server is skipped between probes (1 s
            doubling to 30 s), and unwritten batches are kept (bounded) and written when
            it answers again. ``"raise"``: the failure raises
            :class:`~cachedembed.errors.StoreError` (batches stored before it are kept).
        pending_batches: What a call does with misses that a submitted, not yet collected
            batch job covers (:meth:`submit_batch`): ``"error"`` raises
            :class:`~cachedembed.errors.PendingBatchError` (default: never pay twice),
            ``"wait"`` waits for the job and collects it, ``"embed"`` embeds them now.
        concurrency: Provider requests sent at once for the misses of a call, each batch
            cached as it arrives. Default: the function's ``default_concurrency`` (4 for
            remote providers, 1 for in-process models and foreign functions). Rate limits
            (``requests_per_minute=``, ``tokens_per_minute=`` on the provider) hold across
            every wrapper and thread sharing the provider instance.
        lease: Seconds a text being embedded stays leased to this process in a shared
            store (SQLite file, diskcache folder, PostgreSQL, MySQL, Redis), so other
            processes wait for its entry instead of paying for it again; renewed while the
            provider call runs, taken over by a waiter once it runs out (a killed worker).
            Default: 30 s, or three times the slowest provider batch seen. ``0`` turns
            leases off (processes then only share what is already stored).
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
        # is imported for anybody else.
        # (cachedembed.wrap does the same, typed for type checkers.)
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
        self.ef = ef
        self.store: Store = (
            cache
            if isinstance(cache, Store)
            else open_store(cache)
            if on_store_error == "raise"
            else open_or_defer(cache)  # a cache server down at start: fail open, as later
        )
        self.namespace = namespace
        self.dtype: StorageDtype = dtype
        self.hash: HashName = hash
        self.normalize_unicode = normalize_unicode
        self.batch_size = batch_size
        embedder = as_embedder(ef, batch_size)
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
            concurrency=check_concurrency(
                embedder.default_concurrency if concurrency is None else concurrency
            ),
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

    def _role(self, role: Role, kind: ItemKind = "text") -> _Namespaced:
        return self._engine.state(role, kind)

    def _hasher(self, role: Role, kind: ItemKind = "text") -> ItemHasher:
        return self._engine.hasher(role, kind)

    def dimension(self, role: Role = "document") -> int | None:
        """The size of the vectors cached for ``role``; ``None`` until one was embedded."""
        ns = self._role(role).ns
        if ns.dim is not None or ns.id == UNREGISTERED_NS:
            return ns.dim
        try:
            return self.store.known_dimension(ns)
        except StoreError as exc:  # not known while the cache cannot be read
            self._engine.store_failed(exc, "vector size not known yet")
            return None

    # -- Chroma's EmbeddingFunction protocol --------------------------------------

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

    @staticmethod
    def name() -> str:
        return "cachedembed"

    def get_config(self) -> dict[str, Any]:
        """What Chroma persists with a collection, in plain text: no password, no key."""
        return {
            "inner": inner_config(self.ef),
            "cache": public_url(self.store.url),
            "namespace": self.namespace,
            "store_text": self.store_text,
            "dtype": self.dtype,
            "hash": self.hash,
            "normalize_unicode": self.normalize_unicode,
            "batch_size": self.batch_size,
            "on_store_error": self.on_store_error,
        }

    @classmethod
    def build_from_config(cls, config: Mapping[str, Any]) -> Cached:
        """Rebuild from :meth:`get_config` output, sharing the open store (Chroma does this per operation)."""
        return cls(
            build_inner(config["inner"]),
            private_url(config["cache"]),
            namespace=config.get("namespace"),
            store_text=config.get("store_text", False),
            dtype=config.get("dtype", "float32"),
            hash=config.get("hash", "xxh3"),
            normalize_unicode=config.get("normalize_unicode"),
            batch_size=config.get("batch_size", 256),
            on_store_error=config.get("on_store_error", "warn"),
        )

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        fn = getattr(self.ef, "default_space", None)
        return fn() if callable(fn) else "l2"

    def supported_spaces(self) -> list[str]:
        fn = getattr(self.ef, "supported_spaces", None)
        return list(fn()) if callable(fn) else ["cosine", "l2", "ip"]

    @staticmethod
    def validate_config(config: Mapping[str, Any]) -> None:
        if "inner" not in config and "namespace" not in config:
            raise ValueError(
                "cachedembed config needs the wrapped function ('inner') or a namespace"
            )

    def validate_config_update(
        self, old_config: Mapping[str, Any], new_config: Mapping[str, Any]
    ) -> None:
        """Chroma's check before ``collection.modify``: the wrapped function's own, then ours.

        Raises ``ValueError`` for a change the wrapped function refuses, or one that would
        move the collection to another cache namespace (its vectors and the new ones mixed).
        """
        check_config_update(self.ef, old_config, new_config)

    # -- the cache ----------------------------------------------------------------

    def embed(self, input: Sequence[Any], role: Role = "document") -> np.ndarray:
        """Embed ``input`` for ``role`` through the cache; an (n, dim) float32 matrix in input order."""
        return self._engine.embed(input, role).vectors

    def embed_with_usage(self, input: Sequence[Any], role: Role = "document") -> Embedded:
        """:meth:`embed`, also returning each item's tokens and this call's counters."""
        return self._engine.embed(input, role)

    def prepared_texts(self, texts: list[str]) -> list[str]:
        """``texts`` as they are hashed and embedded (Unicode-normalised when asked)."""
        return self._engine.prepared_texts(texts)

    # -- batch APIs ---------------------------------------------------------------

    def submit_batch(self, input: Sequence[str], role: Role = "document") -> Any:
        """Send the misses among ``input`` to the provider's batch API (half price, within 24 h).

        Only texts neither cached nor in a pending job go, deduplicated and split to the
        provider's limits. Returns a :class:`~cachedembed.batchjobs.Submitted` whose
        ``jobs`` are handles with ``status()``, ``wait()`` and ``collect()``. Jobs are
        recorded in the cache: ``cachedembed batch collect`` finishes them from anywhere.
        """
        from .batchjobs import submit

        return submit(self, input, role)

    def batch_jobs(self, pending: bool = False) -> list[Any]:
        """Handles of this wrapper's recorded batch jobs (only uncollected ones with ``pending``)."""
        from .batchjobs import JobHandle

        ns_ids = {ns.id for ns in self.namespaces()}
        return [
            JobHandle(self.store, job.id)
            for job in self.store.jobs(pending=pending)
            if job.ns in ns_ids
        ]

    # -- stats --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Lifetime totals of this wrapper's namespaces in the cache (documents and queries).

        Counts every call ever made to these namespaces, by any process sharing the
        cache, with a per-role breakdown under ``"by_role"``. Flushes this process's
        buffered counters first, so the numbers include every call made here so far.
        For what this object alone did, see :meth:`session_stats`.
        """
        from .stats import WithPending, namespace_totals, role_totals

        source: Any = self.store
        try:
            self.store.flush()
        except StoreError as exc:
            self._engine.store_failed(exc, "could not save usage counters yet")
            source = WithPending(self.store)
        try:
            totals = namespace_totals(source, self.namespaces())
        except StoreError as exc:
            # The cache cannot be read: what this object counted is all there is to show.
            self._engine.store_failed(exc, "stats() shows this process's counters only")
            totals = role_totals(self.session_usage())
        return {**totals, "store_errors": self.store.store_errors}

    def session_stats(self) -> dict[str, Any]:
        """What this object did since it was built: the keys of :meth:`stats`, counted per call.

        Only this wrapper's own calls count (not other wrappers, threads of other
        wrappers or processes sharing the cache); nothing is read from the store.
        """
        from .stats import role_totals

        usage, store_errors = self._engine.session.snapshot()
        return {**role_totals(usage), "store_errors": store_errors}

    def session_usage(self) -> dict[Role, UsageDelta]:
        """This object's counters so far, per role (copies: safe to keep or add up)."""
        return self._engine.session.snapshot()[0]

    def namespaces(self) -> list[Namespace]:
        """The namespaces this wrapper reads and writes: documents, then queries; then their
        image twins, where images were embedded (by this wrapper or into its store before)."""
        roles: tuple[Role, Role] = ("document", "query")
        found = [self._role(role).ns for role in roles]
        stored: set[str] | None = None
        for role in roles:
            if not self._engine.has_state(role, "image"):
                if stored is None:
                    stored = {ns.key for ns in self.store.namespaces()}
                if self.spec(role, "image").key not in stored:
                    continue  # never create an image namespace just to report on it
            found.append(self._role(role, "image").ns)
        return found

    def flush(self) -> None:
        """Commit buffered hit counters and last-use touches now (they are also flushed every second and at exit)."""
        self.store.flush()

    def __repr__(self) -> str:
        return f"Cached({self.ef!r}, cache={self.store.url!r})"
