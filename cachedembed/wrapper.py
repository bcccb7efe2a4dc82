"""``Cached``: the caching wrapper around any embedding function, and the ``@cached`` decorator.

The hit path is the product: one hash per text, one batched primary-key lookup, one
``numpy.frombuffer`` over the joined blobs, no per-row Python objects beyond the DB
driver's tuples. Only misses reach the provider, each distinct text once, each batch
written (vectors, tokens and the stats that paid for them in one transaction) as soon
as it arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any, Literal

import numpy as np

from .embedding_functions._base import (
    EmbeddedBatch,
    ProviderEmbeddingFunction,
    as_matrix,
    check_input,
)
from .embedding_functions._parallel import check_concurrency, run_jobs
from .errors import ConfigurationError, InvalidInputError, ProviderResponseError, StoreError
from .fleet import Leases
from .identity import foreign_identity
from .keys import HashName, ItemHasher, ItemKind, NamespaceSpec, Role
from .stores import Store, open_store
from .stores.base import FLAG_TOKENS_ESTIMATED, UNREGISTERED_NS, EntryBatch, Namespace, Row
from .usage import UsageDelta, apportion, estimate_tokens, today

log = logging.getLogger("cachedembed")

StorageDtype = Literal["float32", "float16"]
UnicodeForm = Literal["NFC", "NFD", "NFKC", "NFKD"]
OnStoreError = Literal["warn", "raise"]
PendingPolicy = Literal["error", "wait", "embed"]

_ITEMSIZE = {"float32": 4, "float16": 2}


@dataclass
class _Found:
    """Result of a lookup: positions (into the unique ids) found intact, and their columns."""

    pos: np.ndarray
    vectors: np.ndarray
    tokens: np.ndarray
    flags: np.ndarray
    used: np.ndarray
    stale: list[int]
    """Ids of damaged entries of this namespace (wrong length), to replace."""


@dataclass
class Embedded:
    """What :meth:`Cached.embed_with_usage` returns: the vectors and what this one call cost.

    For callers that meter each request (the HTTP server reports ``usage`` and metrics
    from it); the same counters also go to the store's stats, as for :meth:`Cached.embed`.
    """

    vectors: np.ndarray
    """(n, dim) float32 in input order, exactly what :meth:`Cached.embed` returns."""
    tokens: np.ndarray
    """(n,) int64: the tokens each text cost when embedded (for a hit, as recorded in its entry)."""
    usage: UsageDelta = field(default_factory=UsageDelta)
    """This call's counters: hits, misses, provider calls and seconds, tokens embedded and saved."""
    provider_seconds: list[float] = field(default_factory=list)
    """Duration of each provider round trip made by this call (empty when all were cached)."""
    store_errors: int = 0
    """Writes of this call that failed (``on_store_error="warn"``): its vectors are exact but not cached."""


@dataclass
class _Call:
    """The working state of one embedding call, indexed by unique item (ids sorted ascending)."""

    texts: list[Any]
    """The items: texts, or images when ``kind`` is ``"image"``."""
    role: Role
    state: _Namespaced
    uniq: np.ndarray
    """Unique item ids, sorted."""
    first: np.ndarray
    """Index in ``texts`` of each unique item's first occurrence."""
    checks: np.ndarray
    tokens: np.ndarray
    """Tokens recorded for each item's entry (what a hit on it saves)."""
    estimated: np.ndarray
    served_by_me: np.ndarray
    """Items this call paid the provider for (its misses)."""
    served_by_others: np.ndarray
    """Items this call claimed but found stored by another caller (thread or process) meanwhile."""
    result: Embedded
    out: np.ndarray | None = None
    """One vector per unique item, allocated once the dimension is known."""
    kind: ItemKind = "text"

    def vectors(self, dim: int) -> np.ndarray:
        if self.out is None:
            self.out = np.empty((len(self.uniq), dim), dtype=np.float32)
        return self.out


@dataclass
class _Namespaced:
    """Per-role state, resolved once per wrapper: namespace row and storage dtype.

    (The item hasher lives apart, in ``Cached._hashers``: input is hashed, and so
    validated, before the namespace row is created.)
    """

    ns: Namespace
    dtype: np.dtype[Any]


class _ForeignEmbedder:
    """Presents a Chroma-protocol function (or a plain callable) as batches of vectors."""

    def __init__(
        self, ef: Any, batch_size: int, call: Callable[[list[str], Role], Any] | None = None
    ) -> None:
        self.ef = ef
        self.batch_size = batch_size
        self.bypass_cache = False
        # A Chroma-protocol function may be multimodal (it decides); an adapter's call embeds texts.
        self.accepts_images = call is None
        self._call = call or self._chroma_call
        self.label = _label(ef)

    def _chroma_call(self, texts: list[Any], role: Role) -> Any:
        if role == "query" and callable(getattr(self.ef, "embed_query", None)):
            return self.ef.embed_query(input=texts)
        return self.ef(input=texts)

    default_concurrency = 1
    """Unknown code may not be thread-safe: one call at a time unless asked for more."""

    def embed_batches(self, texts: Sequence[Any], role: Role) -> Iterator[EmbeddedBatch]:
        return self.embed_batches_concurrently(texts, role, 1)

    def embed_batches_concurrently(
        self, texts: Sequence[Any], role: Role, concurrency: int
    ) -> Iterator[EmbeddedBatch]:
        jobs = [
            partial(self._embed_chunk, start, list(texts[start : start + self.batch_size]), role)
            for start in range(0, len(texts), self.batch_size)
        ]
        return run_jobs(jobs, concurrency)

    def _embed_chunk(self, start: int, chunk: list[Any], role: Role) -> EmbeddedBatch:
        began = time.perf_counter()
        vectors = self._call(chunk, role)
        if isinstance(vectors, list) and vectors and isinstance(vectors[0], np.ndarray):
            vectors = (
                np.stack(vectors)
                if len({v.shape for v in vectors}) == 1
                else [list(v) for v in vectors]
            )
        matrix = as_matrix(self.label, vectors, len(chunk))
        return EmbeddedBatch(start, matrix, None, time.perf_counter() - began)


def _waiter_value(
    vectors: np.ndarray, tokens: np.ndarray, estimated: bool, k: int
) -> tuple[np.ndarray, int, bool]:
    """What a concurrent caller waiting on row ``k`` of a fresh batch receives."""
    return vectors[k], int(tokens[k]), estimated


def _flight_keys(ns_id: int, ids: np.ndarray) -> list[tuple[int, int]]:
    """Single-flight keys for item ``ids`` of a namespace, built without per-row numpy scalars."""
    return list(zip(repeat(ns_id), ids.tolist()))


def _label(ef: Any) -> str:
    name = getattr(ef, "name", None)
    try:
        value = name() if callable(name) else None
    except Exception:
        value = None
    return value if isinstance(value, str) else type(ef).__name__


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

    def __new__(cls, ef: Any = None, *args: Any, **kwargs: Any) -> Any:
        # A LangChain, LlamaIndex or sentence-transformers object gets its framework's
        # adapter (itself backed by a Cached). Recognised by module name, so no framework
        # is imported for anybody else.
        if cls is Cached:
            from .adapters import framework_of, wrap

            if framework_of(ef) is not None:
                return wrap(ef, *args, **kwargs)
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
        if on_store_error not in ("warn", "raise"):
            raise ConfigurationError(
                f"on_store_error must be 'warn' or 'raise', got {on_store_error!r}"
            )
        if pending_batches not in ("error", "wait", "embed"):
            raise ConfigurationError(
                f"pending_batches must be 'error', 'wait' or 'embed', got {pending_batches!r}"
            )
        if dtype not in _ITEMSIZE:
            raise ConfigurationError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        if normalize_unicode not in (None, "NFC", "NFD", "NFKC", "NFKD"):
            raise ConfigurationError(
                f"normalize_unicode must be NFC, NFD, NFKC, NFKD or None, got {normalize_unicode!r}"
            )
        if isinstance(ef, Cached):
            raise ConfigurationError("ef is already Cached; wrap the inner function once")
        check_batch_size(batch_size)
        self.ef = ef
        self.store: Store = cache if isinstance(cache, Store) else open_store(cache)
        self.namespace = namespace
        self.store_text = store_text
        self.dtype: StorageDtype = dtype
        self.hash: HashName = hash
        self.normalize_unicode = normalize_unicode
        self.batch_size = batch_size
        self.on_store_error: OnStoreError = on_store_error
        self.pending_batches: PendingPolicy = pending_batches
        self.batch_poll = 5.0
        """First seconds between status checks when waiting for a batch job (doubling)."""
        self._pending_memo: dict[tuple[str, int], list[int]] = {}
        # Shipped functions and adapters' embedders (a _ForeignEmbedder with its own
        # cache_identity) already yield batches; anything else is presented as batches.
        direct = isinstance(ef, (ProviderEmbeddingFunction, _ForeignEmbedder))
        self._embedder: Any = ef if direct else _ForeignEmbedder(ef, batch_size)
        self.concurrency = check_concurrency(
            self._embedder.default_concurrency if concurrency is None else concurrency
        )
        self._leases = Leases(self.store, lease)
        self._roles: dict[tuple[Role, ItemKind], _Namespaced] = {}
        self._hashers: dict[tuple[Role, ItemKind], ItemHasher] = {}
        self._warned_bypass = False
        # What this object did (session_stats()), apart from the cache's lifetime stats().
        self._session: dict[Role, UsageDelta] = {}
        self._session_store_errors = 0
        self._session_lock = threading.Lock()

    # -- identity ----------------------------------------------------------------

    def identity(self, role: Role) -> dict[str, Any]:
        """The model identity for ``role`` that names this wrapper's namespace."""
        if self.namespace is not None:
            base: dict[str, Any] = {"provider": "custom", "namespace": self.namespace}
        elif hasattr(self._embedder, "cache_identity"):
            base = dict(self._embedder.cache_identity(role))
        else:
            base = foreign_identity(self.ef)
        if self.normalize_unicode:
            base["unicode"] = self.normalize_unicode
        return base

    def spec(self, role: Role, kind: ItemKind = "text") -> NamespaceSpec:
        return NamespaceSpec(
            identity=self.identity(role), role=role, dtype=self.dtype, hash=self.hash, kind=kind
        )

    def _role(self, role: Role, kind: ItemKind = "text") -> _Namespaced:
        state = self._roles.get((role, kind))
        if state is None:
            spec = self.spec(role, kind)
            dtype = np.dtype(self.dtype).newbyteorder("<")
            try:
                ns = self.store.namespace(spec)
            except StoreError as exc:
                # A new model on a cache that cannot be written (read-only, full): serve it
                # uncached, and try to register it again on the next call.
                self._store_failed(exc, "model served uncached, its namespace could not be created")
                return _Namespaced(Namespace(UNREGISTERED_NS, spec.key, spec), dtype)
            state = self._roles[role, kind] = _Namespaced(ns, dtype)
        return state

    def _store_failed(self, exc: StoreError, consequence: str) -> None:
        """A write failed: raise it (``on_store_error="raise"``) or count it and carry on."""
        if self.on_store_error == "raise":
            raise exc
        self.store.report_failure(exc, consequence)

    def _hasher(self, role: Role, kind: ItemKind = "text") -> ItemHasher:
        """The item hasher for ``role`` and ``kind``, available without touching the store."""
        hasher = self._hashers.get((role, kind))
        if hasher is None:
            hasher = self._hashers[role, kind] = ItemHasher(self.spec(role, kind))
        return hasher

    def dimension(self, role: Role = "document") -> int | None:
        """The size of the vectors cached for ``role``; ``None`` until one was embedded."""
        ns = self._role(role).ns
        if ns.dim is not None or ns.id == UNREGISTERED_NS:
            return ns.dim
        try:
            return self.store.known_dimension(ns)
        except StoreError as exc:  # not known while the cache cannot be read
            self._store_failed(exc, "vector size not known yet")
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
        """``__call__`` for async code: store and provider I/O run in a worker thread."""
        return list(await asyncio.to_thread(self.embed, input, "document"))

    async def aembed_query(self, input: Sequence[Any]) -> list[np.ndarray]:
        """``embed_query`` for async code; single-flight holds across tasks and threads."""
        return list(await asyncio.to_thread(self.embed, input, "query"))

    @staticmethod
    def name() -> str:
        return "cachedembed"

    def get_config(self) -> dict[str, Any]:
        from .chroma import wrapper_config

        return wrapper_config(self)

    @staticmethod
    def build_from_config(config: Mapping[str, Any]) -> Cached:
        from .chroma import wrapper_from_config

        return wrapper_from_config(config)

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
        from .chroma import check_config_update

        check_config_update(self, old_config, new_config)

    # -- the cache ----------------------------------------------------------------

    def embed(self, input: Sequence[Any], role: Role = "document") -> np.ndarray:
        """Embed ``input`` for ``role`` through the cache; an (n, dim) float32 matrix in input order."""
        return self.embed_with_usage(input, role).vectors

    def embed_with_usage(self, input: Sequence[Any], role: Role = "document") -> Embedded:
        """:meth:`embed`, also returning each item's tokens and this call's counters."""
        kind, items = self._classify(input)
        if kind == "image":
            # Images are keyed by dtype, shape and pixels; their namespace is the text one's
            # twin, so text and image entries of one model never meet.
            ids, checks = self._hasher(role, kind).array_keys(items)
        else:
            items = self.prepared_texts(items)
            # Hash first: it rejects texts UTF-8 cannot encode (lone surrogates) before the
            # namespace is registered, so bad input writes nothing at all.
            ids, checks = self._hasher(role).text_key_arrays(items)
        state = self._role(role, kind)
        result = Embedded(np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
        try:
            if len(ids) == 1 and not self._embedder.bypass_cache:
                hit = self._hit_one(int(ids[0]), int(checks[0]), state)
                if hit is not None:
                    result = hit
                    return hit
            if self._embedder.bypass_cache:
                self._bypass(items, role, state, result, kind)
            else:
                self._lookup_and_fill(items, ids, checks, role, state, result, kind)
            return result
        finally:
            # Also after a failure: the batches stored before it were this object's doing.
            self._count_session(role, result.usage, result.store_errors)

    def _count_session(self, role: Role, usage: UsageDelta, store_errors: int) -> None:
        if usage.is_empty() and not store_errors:
            return
        with self._session_lock:
            self._session.setdefault(role, UsageDelta()).add(usage)
            self._session_store_errors += store_errors

    def prepared_texts(self, texts: list[str]) -> list[str]:
        """``texts`` as they are hashed and embedded (Unicode-normalised when asked)."""
        if self.normalize_unicode:
            form = self.normalize_unicode
            return [unicodedata.normalize(form, t) for t in texts]
        return texts

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

    def _pending_ids(self, ns_id: int) -> dict[int, str]:
        """Item id -> job id of the texts of ``ns_id`` waiting in uncollected batch jobs.

        Runs on every call with misses: one small query, and a job's document is parsed
        only once per revision (a job holds up to 50,000 ids).
        """
        import json

        covered: dict[int, str] = {}
        with self.store.guarded(self.store.outage.reads):
            rows = self.store._job_rows(True)
        for job_id, ns, _state, rev, doc in rows:
            if int(ns) != ns_id:
                continue
            ids = self._pending_memo.get((job_id, rev))
            if ids is None:
                requests = json.loads(doc)["requests"]
                ids = [item[0] for items in requests.values() for item in items]
                self._pending_memo[(job_id, rev)] = ids
            covered.update(dict.fromkeys(ids, job_id))
        return covered

    def _await_batches(self, ns_id: int, ids: np.ndarray) -> None:
        """Refuse (or wait for and collect) misses that a pending batch job will deliver."""
        if self.pending_batches == "embed" or ns_id == UNREGISTERED_NS:
            return
        try:
            covered = self._pending_ids(ns_id)
        except StoreError as exc:
            self._store_failed(exc, "pending batch jobs not checked")
            return
        if not covered:
            return
        jobs = sorted({covered[i] for i in ids.tolist() if i in covered})
        if not jobs:
            return
        from .batchjobs import JobHandle
        from .errors import PendingBatchError

        if self.pending_batches == "error":
            n = sum(1 for i in ids.tolist() if i in covered)
            raise PendingBatchError(
                f"{n} of these texts are in batch job{'s' if len(jobs) > 1 else ''} "
                f"{', '.join(jobs)}, not yet collected: run `cachedembed batch collect` once "
                "finished, or pass pending_batches='wait' (wait for it) or 'embed' "
                "(pay the synchronous price now)"
            )
        for job_id in jobs:
            handle = JobHandle(self.store, job_id)
            handle.wait(poll=self.batch_poll)
            handle.collect()

    def _classify(self, input: Any) -> tuple[ItemKind, list[Any]]:
        """Texts or images, validated; images only when the wrapped function takes them."""
        kind, items = check_input(input)
        if kind == "image" and not getattr(self._embedder, "accepts_images", False):
            raise InvalidInputError(
                f"{_label(self.ef)} embeds texts only; wrap a multimodal function to embed "
                "images (OpenCLIPEmbeddingFunction, or a remote one that takes images)"
            )
        return kind, items

    def _hit_one(self, item_id: int, check: int, state: _Namespaced) -> Embedded | None:
        """The single-text hit (a search query): one row, no arrays beyond the result.

        Returns ``None`` unless the entry is stored intact; the general path then handles
        the miss, collision or damage. Accounting is the general path's for one hit.
        """
        ns = state.ns
        if ns.dim is None:
            return None
        rows = self._lookup(ns.id, (item_id,))
        if len(rows) != 1:
            return None
        _id, row_ns, row_chk, tokens, flags, used, vec = rows[0]
        if row_ns != ns.id or row_chk != check or len(vec) != ns.dim * state.dtype.itemsize:
            return None
        delta = UsageDelta(
            calls=1,
            hits=1,
            tokens_saved=tokens,
            tokens_saved_estimated=tokens if flags & FLAG_TOKENS_ESTIMATED else 0,
        )
        self.store.record(ns.id, delta, (item_id,) if used < today() else ())
        # astype copies: the caller gets a writable float32 row, whatever the storage dtype.
        vector = np.frombuffer(vec, dtype=state.dtype).astype(np.float32).reshape(1, ns.dim)
        return Embedded(vector, np.array([tokens], dtype=np.int64), delta)

    def _lookup_and_fill(
        self,
        texts: list[str],
        ids: np.ndarray,
        checks: np.ndarray,
        role: Role,
        state: _Namespaced,
        result: Embedded,
        kind: ItemKind = "text",
    ) -> None:
        store, ns = self.store, state.ns
        if len(ids) == 1:
            uniq, first, inverse, counts = (
                ids,
                np.zeros(1, np.intp),
                np.zeros(1, np.intp),
                np.ones(1, np.int64),
            )
        else:
            uniq, first, inverse, counts = np.unique(
                ids, return_index=True, return_inverse=True, return_counts=True
            )
        checks_u = checks[first]
        n_u = len(uniq)

        found = self._read(state, uniq, checks_u)
        found_pos = found.pos
        out: np.ndarray | None = None
        gathered: np.ndarray | None = None
        if len(found_pos) == n_u:
            # All hits (the warm case): gather straight from the joined blobs into input
            # order - one copy, where scattering into `out` first would make two.
            row_of = np.empty(n_u, dtype=np.intp)
            row_of[found_pos] = np.arange(n_u)
            take = row_of[inverse]
            gathered = (
                found.vectors
                if len(take) == n_u and bool((take == np.arange(n_u)).all())
                else found.vectors[take]
            )
        elif ns.dim is not None:
            out = np.empty((n_u, ns.dim), dtype=np.float32)
            if len(found_pos):
                out[found_pos] = found.vectors
        call = _Call(
            texts=texts,
            role=role,
            state=state,
            uniq=uniq,
            first=first,
            checks=checks_u,
            tokens=np.zeros(n_u, dtype=np.int64),
            estimated=np.zeros(n_u, dtype=bool),
            served_by_me=np.zeros(n_u, dtype=bool),
            served_by_others=np.zeros(n_u, dtype=bool),
            result=result,
            out=out,
            kind=kind,
        )
        call.tokens[found_pos] = found.tokens
        call.estimated[found_pos] = (found.flags & FLAG_TOKENS_ESTIMATED) != 0

        if len(found_pos) < n_u:
            missing = np.ones(n_u, dtype=bool)
            missing[found_pos] = False
            miss_pos = np.flatnonzero(missing)
            # Send misses in input order (the unique ids are sorted by hash).
            miss_pos = miss_pos[np.argsort(first[miss_pos], kind="stable")]
            self._fill_misses(call, miss_pos, found.stale)
        out, tokens_u, est_u = call.out, call.tokens, call.estimated

        # Accounting: a text counts as a miss once, where this call paid for it; every
        # other occurrence (cached, a duplicate, or embedded by a concurrent caller) is a
        # hit whose saving is the tokens recorded for its entry.
        hit_counts = counts - call.served_by_me
        saved = hit_counts * tokens_u
        # Last use is tracked per day: only entries last used before today are touched,
        # so a warm re-run writes nothing per hit.
        touched = uniq[found_pos][found.used < today()] if len(found_pos) else uniq[:0]
        delta = UsageDelta(
            calls=1,
            hits=int(hit_counts.sum()),
            tokens_saved=int(saved.sum()),
            tokens_saved_estimated=int(saved[est_u].sum()),
        )
        store.record(ns.id, delta, touched.tolist() if len(touched) else ())
        result.usage.add(delta)
        in_order = len(ids) == 1 or (
            n_u == len(ids) and bool((inverse == np.arange(len(ids))).all())
        )
        if gathered is not None:
            result.vectors = gathered
        else:
            assert out is not None
            result.vectors = out if in_order else out[inverse]
        result.tokens = tokens_u if in_order else tokens_u[inverse]

    def _read(self, state: _Namespaced, uniq: np.ndarray, checks_u: np.ndarray) -> _Found:
        """Look ``uniq`` (sorted ascending) up; return the entries found intact, and the ids of damaged ones.

        A row counts only if its namespace and check match (else: an id collision) and its
        blob has the namespace's dimension (else: damaged). Bad rows are reported so the
        fresh vector can replace them.
        """
        ns = state.ns
        rows = self._lookup(ns.id, uniq.tolist())
        if rows and ns.dim is None:
            try:
                self.store.known_dimension(ns)  # another process stored the first vectors
            except StoreError as exc:
                self._store_failed(exc, "served from the provider, the cache could not be read")
        if not rows or ns.dim is None:
            empty = np.zeros(0, dtype=np.intp)
            return _Found(empty, np.zeros((0, ns.dim or 0), np.float32), empty, empty, empty, [])
        row_ids, row_ns, row_chk, row_tokens, row_flags, row_used, row_vec = zip(*rows)
        pos = np.searchsorted(uniq, np.array(row_ids, dtype=np.int64))
        width = ns.dim * state.dtype.itemsize
        ok = (np.array(row_ns) == ns.id) & (np.array(row_chk, dtype=np.int64) == checks_u[pos])
        lengths = np.fromiter(map(len, row_vec), dtype=np.int64, count=len(row_vec))
        ok &= lengths == width
        stale: list[int] = []
        # A bytearray, so the vectors served straight from it are writable.
        blob: bytes | bytearray
        if ok.all():
            blob = bytearray().join(row_vec)
        else:
            bad = np.flatnonzero(~ok)
            # Collisions (other namespace or check) are left alone; wrong-length blobs of
            # this namespace are damaged entries to replace.
            stale = [
                row_ids[i] for i in bad if row_ns[i] == ns.id and row_chk[i] == checks_u[pos[i]]
            ]
            if len(stale):
                log.warning(
                    "cache %s: %d damaged entries will be re-embedded", self.store.url, len(stale)
                )
            keep = np.flatnonzero(ok)
            blob = b"".join([row_vec[i] for i in keep])
            pos = pos[keep]
            row_tokens = tuple(row_tokens[i] for i in keep)
            row_flags = tuple(row_flags[i] for i in keep)
            row_used = tuple(row_used[i] for i in keep)
        vectors = np.frombuffer(blob, dtype=state.dtype).reshape(len(pos), ns.dim)
        if state.dtype != np.float32:
            vectors = vectors.astype(np.float32)
        return _Found(
            pos,
            vectors,
            np.array(row_tokens, dtype=np.int64),
            np.array(row_flags, dtype=np.int64),
            np.array(row_used, dtype=np.int64),
            stale,
        )

    def _lookup(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        """Stored rows of ``ids``; none while the cache cannot be read (``"warn"``): all
        misses then, served by the provider."""
        if ns_id == UNREGISTERED_NS:
            return []
        try:
            return self.store.lookup(ns_id, ids)
        except StoreError as exc:
            self._store_failed(exc, "served from the provider, the cache could not be read")
            return []

    def _fill_misses(self, call: _Call, miss_pos: np.ndarray, stale: list[int]) -> None:
        """Get the vectors for ``miss_pos`` (positions into ``call.uniq``, in input order).

        Claims them (single-flight); embeds and stores the ones this call owns; waits for
        the ones another caller is already embedding.
        """
        store, ns, uniq = self.store, call.state.ns, call.uniq
        mine_idx, theirs = store.flights.claim(_flight_keys(ns.id, uniq[miss_pos]))
        mine = miss_pos[mine_idx]
        try:
            if stale:
                try:
                    store.delete(ns.id, stale)
                except StoreError as exc:  # a read-only cache: the fresh vectors are not stored either
                    self._store_failed(exc, "damaged entries not replaced")
            if len(mine):
                self._await_batches(ns.id, uniq[mine])
                # Leased to this process, served once stored elsewhere, or waited for.
                self._leases.fill(call, mine, self._serve_stored, self._embed_and_store)
        except BaseException as exc:
            # Only keys never resolved are still ours: a resolved key may already be
            # claimed by a later caller, whose waiters must not get this exception.
            unfinished = mine[~(call.served_by_me | call.served_by_others)[mine]]
            store.flights.fail(_flight_keys(ns.id, uniq[unfinished]), exc)
            raise
        for p_index, fut in theirs:
            p = miss_pos[p_index]
            vec, tok, est = fut.result()
            call.vectors(len(vec))[p] = vec
            call.tokens[p] = tok
            call.estimated[p] = est

    def _serve_stored(self, call: _Call, claimed: np.ndarray) -> np.ndarray:
        """Fill those of ``claimed`` that another caller stored since our lookup; return them.

        Their single-flight claims are resolved, so this process's waiters get them too.
        """
        # `claimed` is in input order, but _read needs ids sorted (it binary-searches
        # them): positions into the sorted `uniq`, sorted, give sorted ids.
        recheck = np.sort(claimed)
        again = self._read(call.state, call.uniq[recheck], call.checks[recheck])
        got = recheck[again.pos]
        if len(got):
            filled = call.vectors(again.vectors.shape[1])
            filled[got] = again.vectors
            call.tokens[got] = again.tokens
            call.estimated[got] = (again.flags & FLAG_TOKENS_ESTIMATED) != 0
            call.served_by_others[got] = True
            self.store.flights.resolve(
                _flight_keys(call.state.ns.id, call.uniq[got]),
                lambda i: (
                    filled[got[i]].copy(),
                    int(call.tokens[got[i]]),
                    bool(call.estimated[got[i]]),
                ),
            )
        return got

    def _embed_and_store(self, call: _Call, mine: np.ndarray) -> None:
        """Embed the texts at ``mine`` and store each provider batch as soon as it arrives."""
        store, state = self.store, call.state
        ns = state.ns
        to_embed = [call.texts[i] for i in call.first[mine].tolist()]
        done = np.zeros(len(mine), dtype=bool)
        self._prepare_embedder()
        started = time.perf_counter()
        # Batches may arrive in any order (`batch.start` places each one); if storing one
        # fails, the iterator is not resumed, so no further request is sent.
        for batch in self._embedder.embed_batches_concurrently(
            to_embed, call.role, self.concurrency
        ):
            elapsed = batch.seconds if batch.seconds is not None else time.perf_counter() - started
            vectors = batch.vectors
            n = len(vectors)
            writable = self._fix_dimension(ns, vectors.shape[1], call)
            idx = np.arange(batch.start, batch.start + n)
            pos = mine[idx]
            batch_texts = to_embed[batch.start : batch.start + n]
            estimates = _token_estimates(call.kind, batch_texts)
            if batch.tokens is None:
                tokens, flags = estimates, np.full(n, FLAG_TOKENS_ESTIMATED, dtype=np.int64)
            else:
                tokens, flags = apportion(int(batch.tokens), estimates), np.zeros(n, dtype=np.int64)
            with np.errstate(over="ignore"):  # overflow is reported below, not as a RuntimeWarning
                stored = vectors.astype(state.dtype, copy=False)
            served = stored.astype(np.float32) if state.dtype != np.float32 else vectors
            if state.dtype != np.float32 and not np.isfinite(stored).all():
                # float16 tops out at 65504: larger values would be stored (and served) as inf.
                raise ProviderResponseError(
                    _label(self.ef),
                    "vectors hold values beyond the float16 range (65504); use dtype='float32' for this model",
                )
            delta = UsageDelta(
                misses=n,
                provider_calls=1,
                provider_seconds=elapsed,
                tokens_embedded=int(tokens.sum()),
                tokens_embedded_estimated=int(tokens.sum()) if batch.tokens is None else 0,
            )
            entries = EntryBatch(
                ids=call.uniq[pos].tolist(),
                checks=call.checks[pos].tolist(),
                vectors=stored,
                tokens=tokens.tolist(),
                flags=flags.tolist(),
                # Texts only: pixels are never stored, whatever store_text says.
                texts=batch_texts if self.store_text and call.kind == "text" else None,
            )
            if writable:
                self._publish(call, entries, delta)
            call.result.usage.add(delta)
            call.result.provider_seconds.append(elapsed)
            call.vectors(vectors.shape[1])[pos] = served
            call.tokens[pos] = tokens
            call.estimated[pos] = batch.tokens is None
            call.served_by_me[pos] = True
            store.flights.resolve(
                _flight_keys(ns.id, call.uniq[pos]),
                partial(_waiter_value, served, tokens, batch.tokens is None),
            )
            done[idx] = True
            started = time.perf_counter()
        if not done.all():
            raise ProviderResponseError(
                _label(self.ef),
                f"returned vectors for {int(done.sum())} of {len(to_embed)} texts",
            )

    def _prepare_embedder(self) -> None:
        """Load what the embedder needs (a local model) before the provider clock starts.

        A model's load is paid once per process; timed as provider time it would inflate
        ``provider_seconds``, and through the seconds per text every later ``time saved``.
        """
        prepare = getattr(self._embedder, "prepare", None)
        if callable(prepare):
            prepare()

    def _fix_dimension(self, ns: Namespace, dim: int, call: _Call) -> bool:
        """Check ``dim`` against the namespace (fixing it on first use); whether batches can be written.

        The dimension is fixed before writing: another process may have fixed a different
        one since we looked, and mixed dimensions must not be stored. When the cache cannot
        record it (``on_store_error="warn"``), the batch is served but not written, and
        checked against this call's earlier batches instead.
        """
        if ns.dim is None and ns.id != UNREGISTERED_NS:
            try:
                self.store.set_dimension(ns, dim)
            except StoreError as exc:
                self._store_failed(exc, "vectors returned but not cached")
                call.result.store_errors += 1
        expected = (
            ns.dim if ns.dim is not None else call.out.shape[1] if call.out is not None else dim
        )
        if dim != expected:
            raise ProviderResponseError(
                _label(self.ef),
                f"returned {dim}-d vectors but this namespace holds "
                f"{expected}-d ones; an option that changes the dimension must be part of the cache "
                "namespace (get_config()) or passed as namespace=...",
            )
        return ns.dim is not None

    def _publish(self, call: _Call, entries: EntryBatch, delta: UsageDelta) -> None:
        """Write one paid-for batch with its counters; a failing store costs the caller nothing (``"warn"``).

        A failed write keeps the counters buffered (they are retried with the next write or
        flush) and stores nothing, so those texts are misses again next time.
        """
        try:
            self.store.write(call.state.ns.id, entries, delta)
        except StoreError as exc:
            self._store_failed(exc, "vectors returned but not cached yet")
            call.result.store_errors += 1
            self.store.keep_unsaved(call.state.ns.id, entries)

    def _bypass(
        self,
        texts: list[Any],
        role: Role,
        state: _Namespaced,
        result: Embedded,
        kind: ItemKind = "text",
    ) -> None:
        if not self._warned_bypass:
            warnings.warn(
                f"{_label(self.ef)}: vectors depend on the whole batch (late chunking), so they "
                "are not cached per text; every call goes to the provider",
                UserWarning,
                stacklevel=4,
            )
            self._warned_bypass = True
        self._prepare_embedder()
        started = time.perf_counter()
        parts = []
        for batch in self._embedder.embed_batches(texts, role):
            parts.append(batch)
            result.provider_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
        per_text = []
        for b in parts:
            estimates = _token_estimates(kind, texts[b.start : b.start + len(b.vectors)])
            per_text.append(estimates if b.tokens is None else apportion(int(b.tokens), estimates))
        result.tokens = np.concatenate(per_text)
        delta = UsageDelta(
            calls=1,
            misses=len(texts),
            provider_calls=len(parts),
            provider_seconds=sum(result.provider_seconds),
            tokens_embedded=int(result.tokens.sum()),
        )
        self.store.record(state.ns.id, delta)
        result.usage.add(delta)
        result.vectors = np.concatenate([b.vectors for b in parts])

    # -- stats --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Lifetime totals of this wrapper's namespaces in the cache (documents and queries).

        Counts every call ever made to these namespaces, by any process sharing the
        cache, with a per-role breakdown under ``"by_role"``. Flushes this process's
        buffered counters first, so the numbers include every call made here so far.
        For what this object alone did, see :meth:`session_stats`.
        """
        from .stats import namespace_totals, role_totals

        source: Any = self.store
        try:
            self.store.flush()
        except StoreError as exc:
            self._store_failed(exc, "could not save usage counters yet")
            source = _WithPending(self.store)
        try:
            totals = namespace_totals(source, self.namespaces())
        except StoreError as exc:
            # The cache cannot be read: what this object counted is all there is to show.
            self._store_failed(exc, "stats() shows this process's counters only")
            totals = role_totals(self.session_usage())
        return {**totals, "store_errors": self.store.store_errors}

    def session_stats(self) -> dict[str, Any]:
        """What this object did since it was built: the keys of :meth:`stats`, counted per call.

        Only this wrapper's own calls count (not other wrappers, threads of other
        wrappers or processes sharing the cache); nothing is read from the store.
        """
        from .stats import role_totals

        with self._session_lock:
            store_errors = self._session_store_errors
        return {**role_totals(self.session_usage()), "store_errors": store_errors}

    def session_usage(self) -> dict[Role, UsageDelta]:
        """This object's counters so far, per role (copies: safe to keep or add up)."""
        with self._session_lock:
            return {role: dataclasses.replace(delta) for role, delta in self._session.items()}

    def namespaces(self) -> list[Namespace]:
        """The namespaces this wrapper reads and writes: documents, then queries; then their
        image twins, where images were embedded (by this wrapper or into its store before)."""
        roles: tuple[Role, Role] = ("document", "query")
        found = [self._role(role).ns for role in roles]
        stored: set[str] | None = None
        for role in roles:
            if (role, "image") not in self._roles:
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


def _token_estimates(kind: ItemKind, items: Sequence[Any]) -> np.ndarray:
    """Estimated tokens per item: by text length; none for an image (providers that bill
    images report their tokens, which are then apportioned evenly)."""
    if kind == "text":
        return estimate_tokens(items)
    return np.zeros(len(items), dtype=np.int64)


def check_batch_size(batch_size: object) -> None:
    """Refuse a batch size that is not a positive integer (0 would loop forever, -1 embed nothing)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
class _WithPending:
    """A store's committed stats rows plus the counters it could not commit yet."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def stats_rows(self, since_day: int | None = None) -> list[tuple[int, int, UsageDelta]]:
        return self.store.stats_rows(since_day) + self.store.pending_rows()


class _PlainFunction:
    """A bare ``list[str] -> vectors`` function given a model name (for ``@cached``)."""

    def __init__(self, fn: Callable[[list[str]], Any], model: str) -> None:
        self.fn = fn
        self.model = model

    def __call__(self, input: list[str]) -> Any:
        return self.fn(input)

    def name(self) -> str:
        return f"function:{getattr(self.fn, '__qualname__', 'fn')}"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model}


def cached(
    model: str, cache: Store | str | None = None, **options: Any
) -> Callable[[Callable[[list[str]], Any]], Cached]:
    """Decorate a plain ``list[str] -> vectors`` function with a persistent cache.

    ``model`` names the model (and any options that change its output); it is the
    namespace, so two functions with the same ``model`` share entries::

        @cached(model="my-model-v2")
        def embed(texts: list[str]) -> list[list[float]]: ...

        embed(["a", "b"])          # list of float32 numpy vectors
    """
    if not model:
        raise ConfigurationError("@cached needs model='...': it names the cache namespace")

    def decorate(fn: Callable[[list[str]], Any]) -> Cached:
        return Cached(_PlainFunction(fn, model), cache, namespace=f"model:{model}", **options)

    return decorate
