"""The cache engine behind ``Cached``: one call's lookup, miss filling (single-flight) and publication.

The hit path is the product: one hash per text, one batched primary-key lookup, one
``numpy.frombuffer`` over the joined blobs, no per-row Python objects beyond the DB
driver's tuples. Only misses reach the provider, each distinct text once, each batch
written (vectors, tokens and the stats that paid for them in one transaction) as soon
as it arrives. Nothing here knows Chroma: it drives an :class:`~cachedembed.embedder.Embedder`
against a :class:`~cachedembed.stores.Store`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import time
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np

from .embedder import Embedder
from .embedding_functions._base import EmbeddedBatch, check_input
from .embedding_functions._parallel import AsyncScope
from .errors import InvalidInputError, PendingBatchError, ProviderResponseError, StoreError
from .fleet import Leases
from .keys import ItemHasher, ItemKind, NamespaceSpec, Role
from .options import OnStoreError, PendingPolicy, UnicodeForm
from .stores import Store
from .stores.base import FLAG_TOKENS_ESTIMATED, UNREGISTERED_NS, EntryBatch, Namespace, Row
from .usage import UsageDelta, apportion, estimate_tokens, today

log = logging.getLogger("cachedembed")


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
class _Namespaced:
    """Per-role state, resolved once per wrapper: namespace row and storage dtype."""

    ns: Namespace
    dtype: np.dtype[Any]


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
    inverse: np.ndarray
    """Index in ``uniq`` of each input item."""
    counts: np.ndarray
    """Occurrences of each unique item in the input."""
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
    scope: AsyncScope | None = None
    """The event loop of an async call, where its provider requests run as coroutines."""

    def vectors(self, dim: int) -> np.ndarray:
        if self.out is None:
            self.out = np.empty((len(self.uniq), dim), dtype=np.float32)
        return self.out


@dataclass
class _Priced:
    """One provider batch, checked and priced: what is stored, what is served, what it cost."""

    stored: np.ndarray
    served: np.ndarray
    tokens: np.ndarray
    flags: np.ndarray
    estimated: bool

    def usage(self, elapsed: float) -> UsageDelta:
        """What paying for this batch cost: a miss per item, one provider call of ``elapsed`` seconds."""
        embedded = int(self.tokens.sum())
        return UsageDelta(
            misses=len(self.tokens),
            provider_calls=1,
            provider_seconds=elapsed,
            tokens_embedded=embedded,
            tokens_embedded_estimated=embedded if self.estimated else 0,
        )


class Session:
    """What one wrapper did (``session_stats()``), apart from the cache's lifetime stats."""

    def __init__(self) -> None:
        self.usage: dict[Role, UsageDelta] = {}
        self.store_errors = 0
        self.lock = threading.Lock()

    def count(self, role: Role, usage: UsageDelta, store_errors: int) -> None:
        with self.lock:
            total = self.usage.get(role)
            if total is None:
                total = self.usage[role] = UsageDelta()
            total.add(usage)
            self.store_errors += store_errors

    def count_hit(self, role: Role, usage: UsageDelta) -> None:
        """:meth:`count` for a one-text hit: only the four counters a hit moves are added."""
        with self.lock:
            total = self.usage.get(role)
            if total is None:
                total = self.usage[role] = UsageDelta()
            total.calls += 1
            total.hits += 1
            total.tokens_saved += usage.tokens_saved
            total.tokens_saved_estimated += usage.tokens_saved_estimated

    def snapshot(self) -> tuple[dict[Role, UsageDelta], int]:
        """Copies of the counters per role (safe to keep or add up), and the failed writes."""
        with self.lock:
            return {r: replace(d) for r, d in self.usage.items()}, self.store_errors


_ASYNC_WORKERS = 32
"""Async calls whose store work may run at once (more wait their turn, without blocking the loop)."""
_async_pool: ThreadPoolExecutor | None = None
_async_pool_lock = threading.Lock()


def _async_workers() -> ThreadPoolExecutor:
    """The threads async calls use for the store: their own, never the loop's default executor.

    A call waiting on another caller's texts blocks its thread; if those were the default
    executor's, a provider whose async method runs in that executor (LangChain's default
    ``aembed_documents``) could find no thread left, and the call it waits for would never end.
    """
    global _async_pool
    with _async_pool_lock:
        if _async_pool is None:
            _async_pool = ThreadPoolExecutor(_ASYNC_WORKERS, thread_name_prefix="cachedembed-async")
        return _async_pool


def _empty_result() -> Embedded:
    return Embedded(np.zeros((0, 0), np.float32), np.zeros(0, np.int64))


def _waiter_value(
    vectors: np.ndarray, tokens: np.ndarray, estimated: bool, k: int
) -> tuple[np.ndarray, int, bool]:
    """What a concurrent caller waiting on row ``k`` of a fresh batch receives."""
    return vectors[k], int(tokens[k]), estimated


def _flight_keys(ns_id: int, ids: np.ndarray) -> list[tuple[int, int]]:
    """Single-flight keys for item ``ids`` of a namespace, built without per-row numpy scalars."""
    return list(zip(repeat(ns_id), ids.tolist()))


def _token_estimates(kind: ItemKind, items: Sequence[Any]) -> np.ndarray:
    """Estimated tokens per item: by text length; none for an image (providers that bill
    images report their tokens, which are then apportioned evenly)."""
    if kind == "text":
        return estimate_tokens(items)
    return np.zeros(len(items), dtype=np.int64)


def _batch_tokens(kind: ItemKind, batch: EmbeddedBatch, items: Sequence[Any]) -> np.ndarray:
    """Tokens per item of one provider batch: the total it reported, apportioned by the
    estimates; the estimates themselves when it reported none."""
    estimates = _token_estimates(kind, items)
    return estimates if batch.tokens is None else apportion(int(batch.tokens), estimates)


def _unique(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique ids, each one's first position, each input's unique index, and counts."""
    if len(ids) == 1:
        return ids, np.zeros(1, np.intp), np.zeros(1, np.intp), np.ones(1, np.int64)
    return np.unique(ids, return_index=True, return_inverse=True, return_counts=True)


class Engine:
    """Serves one wrapper's calls from ``store``, sending only misses to ``embedder``."""

    batch_poll = 5.0
    """First seconds between status checks when waiting for a batch job (doubling)."""
    _warned_bypass = False
    """Whether the warning that nothing is cached (late chunking) was given."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        spec: Callable[[Role, ItemKind], NamespaceSpec],
        *,
        label: str,
        dtype: str = "float32",
        store_text: bool = False,
        normalize_unicode: UnicodeForm | None = None,
        on_store_error: OnStoreError = "warn",
        pending_batches: PendingPolicy = "error",
        concurrency: int = 1,
        leases: Leases | None = None,
    ) -> None:
        self.store, self.embedder, self.spec, self.label = store, embedder, spec, label
        self.store_text = store_text
        self.normalize_unicode = normalize_unicode
        self.on_store_error = on_store_error
        self.pending_batches = pending_batches
        self.concurrency = concurrency
        self.leases = leases if leases is not None else Leases(store)
        """Single-flight across processes sharing the store (``Cached``'s default lease unless given)."""
        self.session = Session()
        self._states: dict[tuple[Role, ItemKind], _Namespaced] = {}
        self._hashers: dict[tuple[Role, ItemKind], ItemHasher] = {}
        self._dtype = np.dtype(dtype).newbyteorder("<")
        self._pending_memo: dict[tuple[str, int], list[int]] = {}

    # -- namespaces -----------------------------------------------------------

    def state(self, role: Role, kind: ItemKind = "text") -> _Namespaced:
        """The namespace row and storage dtype for ``role`` and ``kind``, registered on first use."""
        state = self._states.get((role, kind))
        if state is None:
            spec = self.spec(role, kind)
            try:
                ns = self.store.namespace(spec)
            except StoreError as exc:
                # A new model on a cache that cannot be written (read-only, full): serve it
                # uncached, and try to register it again on the next call.
                self.store_failed(exc, "model served uncached, its namespace could not be created")
                return _Namespaced(Namespace(UNREGISTERED_NS, spec.key, spec), self._dtype)
            state = self._states[role, kind] = _Namespaced(ns, self._dtype)
        return state

    def has_state(self, role: Role, kind: ItemKind) -> bool:
        return (role, kind) in self._states

    def namespaces(self) -> list[Namespace]:
        """Documents, then queries; then their image twins where images were embedded
        (by this engine or into its store before)."""
        roles: tuple[Role, Role] = ("document", "query")
        found = [self.state(role).ns for role in roles]
        stored: set[str] | None = None
        for role in roles:
            if not self.has_state(role, "image"):
                if stored is None:
                    stored = {ns.key for ns in self.store.namespaces()}
                if self.spec(role, "image").key not in stored:
                    continue  # never create an image namespace just to report on it
            found.append(self.state(role, "image").ns)
        return found

    def dimension(self, role: Role) -> int | None:
        """The size of the vectors cached for ``role``; ``None`` until one was embedded."""
        ns = self.state(role).ns
        if ns.dim is not None or ns.id == UNREGISTERED_NS:
            return ns.dim
        try:
            return self.store.known_dimension(ns)
        except StoreError as exc:  # not known while the cache cannot be read
            self.store_failed(exc, "vector size not known yet")
            return None

    def hasher(self, role: Role, kind: ItemKind = "text") -> ItemHasher:
        """The item hasher for ``role`` and ``kind``, available without touching the store."""
        hasher = self._hashers.get((role, kind))
        if hasher is None:
            hasher = self._hashers[role, kind] = ItemHasher(self.spec(role, kind))
        return hasher

    def store_failed(self, exc: StoreError, consequence: str) -> None:
        """A write failed: raise it (``on_store_error="raise"``) or count it and carry on."""
        if self.on_store_error == "raise":
            raise exc
        self.store.report_failure(exc, consequence)

    # -- a call ---------------------------------------------------------------

    async def aembed(self, input: Sequence[Any], role: Role) -> Embedded:
        """:meth:`embed` for a coroutine, without blocking its event loop.

        The lookup, single-flight and writes run in one worker thread (the stores are
        blocking); the provider requests for the misses run as coroutines on the caller's
        loop, where the provider can (its async client), ``concurrency`` at a time.
        Cancelling stops the requests in flight at once and returns when the call has
        unwound: batches that arrived before are stored, nothing else is.
        """
        loop = asyncio.get_running_loop()
        scope = AsyncScope(loop)
        context = contextvars.copy_context()
        call = partial(context.run, self.embed, input, role, scope)
        work = loop.run_in_executor(_async_workers(), call)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            scope.cancel()
            await asyncio.wait([work])
            raise

    def embed(self, input: Sequence[Any], role: Role, scope: AsyncScope | None = None) -> Embedded:
        """Embed ``input`` for ``role`` through the cache: vectors in input order and this call's cost."""
        if type(input) is list and len(input) == 1 and type(input[0]) is str:
            hit = self._hit_text(input[0], role)
            if hit is not None:
                return hit
        kind, items, ids, checks = self._keys(input, role)
        state = self.state(role, kind)
        result = _empty_result()
        try:
            if self.embedder.bypass_cache:
                self._bypass(items, role, state, result, kind)
                return result
            if len(ids) == 1:
                hit = self._hit_one(int(ids[0]), int(checks[0]), state)
                if hit is not None:
                    result = hit
                    return hit
            call = self._dedupe(items, ids, checks, role, state, result, kind)
            call.scope = scope
            self._lookup_and_fill(call)
            return result
        finally:
            # Also after a failure: the batches stored before it were this object's doing.
            if not result.usage.is_empty() or result.store_errors:
                self.session.count(role, result.usage, result.store_errors)

    def _keys(
        self, input: Sequence[Any], role: Role
    ) -> tuple[ItemKind, list[Any], np.ndarray, np.ndarray]:
        """The call's kind, its items as embedded, and their ids and checks; bad input raises here."""
        kind, items = self.classify(input)
        if kind == "image":
            # Images are keyed by dtype, shape and pixels; their namespace is the text one's
            # twin, so text and image entries of one model never meet.
            ids, checks = self.hasher(role, kind).array_keys(items)
        else:
            items = self.prepared_texts(items)
            # Hash first: it rejects texts UTF-8 cannot encode (lone surrogates) before the
            # namespace is registered, so bad input writes nothing at all.
            ids, checks = self.hasher(role).text_key_arrays(items)
        return kind, items, ids, checks

    def classify(self, input: Any) -> tuple[ItemKind, list[Any]]:
        """Texts or images, validated; images only when the wrapped function takes them."""
        kind, items = check_input(input)
        if kind == "image" and not self.embedder.accepts_images:
            raise InvalidInputError(
                f"{self.label} embeds texts only; wrap a multimodal function to embed "
                "images (OpenCLIPEmbeddingFunction, or a remote one that takes images)"
            )
        return kind, items

    def prepared_texts(self, texts: list[str]) -> list[str]:
        """``texts`` as they are hashed and embedded (Unicode-normalised when asked)."""
        if self.normalize_unicode:
            form = self.normalize_unicode
            return [unicodedata.normalize(form, t) for t in texts]
        return texts

    def _hit_text(self, text: str, role: Role) -> Embedded | None:
        """The short path of a one-text call (a search query) once its namespace is known.

        A list of one ``str`` is valid input, so nothing is validated or classified, and no
        array is built before the row is read. ``None`` (not cached intact, a text UTF-8
        cannot encode, a namespace not resolved yet) sends the call down the general path,
        which decides it exactly as before.
        """
        state = self._states.get((role, "text"))
        hasher = self._hashers.get((role, "text"))
        if state is None or hasher is None or self.embedder.bypass_cache:
            return None
        if self.normalize_unicode:
            text = unicodedata.normalize(self.normalize_unicode, text)
        try:
            item_id, check = hasher.text_key(text)
        except UnicodeEncodeError:
            return None
        hit = self._hit_one(item_id, check, state)
        if hit is not None:
            self.session.count_hit(role, hit.usage)
        return hit

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

    # -- lookup: dedupe, read, gather, account --------------------------------

    def _dedupe(
        self,
        texts: list[Any],
        ids: np.ndarray,
        checks: np.ndarray,
        role: Role,
        state: _Namespaced,
        result: Embedded,
        kind: ItemKind,
    ) -> _Call:
        """The call's state over its unique items (each distinct text is looked up and embedded once)."""
        uniq, first, inverse, counts = _unique(ids)
        n_u = len(uniq)
        return _Call(
            texts=texts,
            role=role,
            state=state,
            uniq=uniq,
            first=first,
            inverse=inverse,
            counts=counts,
            checks=checks[first],
            tokens=np.zeros(n_u, dtype=np.int64),
            estimated=np.zeros(n_u, dtype=bool),
            served_by_me=np.zeros(n_u, dtype=bool),
            served_by_others=np.zeros(n_u, dtype=bool),
            result=result,
            kind=kind,
        )

    def _lookup_and_fill(self, call: _Call) -> None:
        """Serve the hits, fill the misses, count the call and put the result in input order."""
        found = self._read(call.state, call.uniq, call.checks)
        n_u = len(call.uniq)
        call.tokens[found.pos] = found.tokens
        call.estimated[found.pos] = (found.flags & FLAG_TOKENS_ESTIMATED) != 0
        if len(found.pos) == n_u:
            # All hits (the warm case): gather straight from the joined blobs into input
            # order - one copy, where scattering into `out` first would make two.
            self._account(call, found)
            call.result.vectors = _gather_all_hits(call, found)
            return
        if call.state.ns.dim is not None:
            out = call.vectors(call.state.ns.dim)
            if len(found.pos):
                out[found.pos] = found.vectors
        missing = np.ones(n_u, dtype=bool)
        missing[found.pos] = False
        miss_pos = np.flatnonzero(missing)
        # Send misses in input order (the unique ids are sorted by hash).
        miss_pos = miss_pos[np.argsort(call.first[miss_pos], kind="stable")]
        self._fill_misses(call, miss_pos, found.stale)
        self._account(call, found)
        assert call.out is not None
        call.result.vectors = call.out if _in_order(call) else call.out[call.inverse]

    def _account(self, call: _Call, found: _Found) -> None:
        """Count the call: a text is a miss once, where this call paid for it.

        Every other occurrence (cached, a duplicate, or embedded by a concurrent caller)
        is a hit whose saving is the tokens recorded for its entry.
        """
        hit_counts = call.counts - call.served_by_me
        saved = hit_counts * call.tokens
        # Last use is tracked per day: only entries last used before today are touched,
        # so a warm re-run writes nothing per hit.
        touched = call.uniq[found.pos][found.used < today()] if len(found.pos) else call.uniq[:0]
        delta = UsageDelta(
            calls=1,
            hits=int(hit_counts.sum()),
            tokens_saved=int(saved.sum()),
            tokens_saved_estimated=int(saved[call.estimated].sum()),
        )
        self.store.record(call.state.ns.id, delta, touched.tolist() if len(touched) else ())
        call.result.usage.add(delta)
        call.result.tokens = call.tokens if _in_order(call) else call.tokens[call.inverse]

    def lookup(self, state: _Namespaced, uniq: np.ndarray, checks_u: np.ndarray) -> _Found:
        """:meth:`_read`, for the batch-job submitter (which only sends what is not cached)."""
        return self._read(state, uniq, checks_u)

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
                self.store_failed(exc, "served from the provider, the cache could not be read")
        if not rows or ns.dim is None:
            empty = np.zeros(0, dtype=np.intp)
            return _Found(empty, np.zeros((0, ns.dim or 0), np.float32), empty, empty, empty, [])
        return self._found(state, uniq, checks_u, rows)

    def _lookup(self, ns_id: int, ids: Sequence[int]) -> list[Row]:
        """Stored rows of ``ids``; none while the cache cannot be read (``"warn"``): all
        misses then, served by the provider."""
        if ns_id == UNREGISTERED_NS:
            return []
        try:
            return self.store.lookup(ns_id, ids)
        except StoreError as exc:
            self.store_failed(exc, "served from the provider, the cache could not be read")
            return []

    def _found(
        self, state: _Namespaced, uniq: np.ndarray, checks_u: np.ndarray, rows: list[Any]
    ) -> _Found:
        """The intact rows among ``rows`` as columns; damaged ones of this namespace as ``stale``."""
        ns = state.ns
        assert ns.dim is not None
        row_ids, row_ns, row_chk, *columns = zip(*rows)
        pos = np.searchsorted(uniq, np.array(row_ids, dtype=np.int64))
        ok = (np.array(row_ns) == ns.id) & (np.array(row_chk, dtype=np.int64) == checks_u[pos])
        row_vec = columns[-1]
        lengths = np.fromiter(map(len, row_vec), dtype=np.int64, count=len(row_vec))
        ok &= lengths == ns.dim * state.dtype.itemsize
        if ok.all():
            return _columns(state, ns.dim, pos, columns, [])
        stale = self._damaged(ns.id, rows, checks_u[pos], ok)
        keep = np.flatnonzero(ok).tolist()
        intact = [tuple(column[i] for i in keep) for column in columns]
        return _columns(state, ns.dim, pos[keep], intact, stale)

    def _damaged(
        self, ns_id: int, rows: list[Any], expected: np.ndarray, ok: np.ndarray
    ) -> list[int]:
        """Ids of the rejected ``rows`` that are damaged entries of this namespace, to replace.

        Collisions (another namespace or check) are left alone; a wrong-length blob with
        our namespace and check is damage.
        """
        stale = [
            rows[i][0]
            for i in np.flatnonzero(~ok)
            if rows[i][1] == ns_id and rows[i][2] == expected[i]
        ]
        if stale:
            log.warning(
                "cache %s: %d damaged entries will be re-embedded", self.store.url, len(stale)
            )
        return stale

    # -- misses: single-flight, embed, publish --------------------------------

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
                except (
                    StoreError
                ) as exc:  # a read-only cache: the fresh vectors are not stored either
                    self.store_failed(exc, "damaged entries not replaced")
            if len(mine):
                self._await_batches(ns.id, uniq[mine])
                # Leased to this process, served once stored elsewhere, or waited for.
                self.leases.fill(call, mine, self._serve_stored, self._embed_and_store)
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
        to_embed = [call.texts[i] for i in call.first[mine].tolist()]
        done = np.zeros(len(mine), dtype=bool)
        self.embedder.prepare()
        started = time.perf_counter()
        # Batches may arrive in any order (`batch.start` places each one); if storing one
        # fails, the iterator is not resumed, so no further request is sent.
        # An embedder written before async calls existed takes no scope: only pass one.
        extra = () if call.scope is None else (call.scope,)
        for batch in self.embedder.embed_batches_concurrently(
            to_embed, call.role, self.concurrency, *extra
        ):
            elapsed = batch.seconds if batch.seconds is not None else time.perf_counter() - started
            idx = np.arange(batch.start, batch.start + len(batch.vectors))
            items = to_embed[batch.start : batch.start + len(idx)]
            writable = self._fix_dimension(call.state.ns, batch.vectors.shape[1], call)
            priced = self._price(call, batch, items)
            self._take_batch(call, mine[idx], priced, elapsed, writable, items)
            done[idx] = True
            started = time.perf_counter()
        if not done.all():
            raise ProviderResponseError(
                self.label, f"returned vectors for {int(done.sum())} of {len(to_embed)} texts"
            )

    def _price(self, call: _Call, batch: EmbeddedBatch, items: list[Any]) -> _Priced:
        """Check one provider batch against the storage dtype and work out each item's tokens."""
        vectors, estimated = batch.vectors, batch.tokens is None
        tokens = _batch_tokens(call.kind, batch, items)
        flags = np.full(len(vectors), FLAG_TOKENS_ESTIMATED if estimated else 0, dtype=np.int64)
        dtype = call.state.dtype
        with np.errstate(over="ignore"):  # overflow is reported below, not as a RuntimeWarning
            stored = vectors.astype(dtype, copy=False)
        if dtype != np.float32 and not np.isfinite(stored).all():
            # float16 tops out at 65504: larger values would be stored (and served) as inf.
            raise ProviderResponseError(
                self.label,
                "vectors hold values beyond the float16 range (65504); use dtype='float32' for this model",
            )
        served = stored.astype(np.float32) if dtype != np.float32 else vectors
        return _Priced(stored, served, tokens, flags, estimated)

    def _take_batch(
        self,
        call: _Call,
        pos: np.ndarray,
        priced: _Priced,
        elapsed: float,
        writable: bool,
        items: list[Any],
    ) -> None:
        """Publish one priced batch, put it in the call's result and hand it to waiting callers."""
        delta = priced.usage(elapsed)
        if writable:
            self._publish(call, self._entries(call, pos, priced, items), delta)
        call.result.usage.add(delta)
        call.result.provider_seconds.append(elapsed)
        call.vectors(priced.served.shape[1])[pos] = priced.served
        call.tokens[pos] = priced.tokens
        call.estimated[pos] = priced.estimated
        call.served_by_me[pos] = True
        self.store.flights.resolve(
            _flight_keys(call.state.ns.id, call.uniq[pos]),
            partial(_waiter_value, priced.served, priced.tokens, priced.estimated),
        )

    def _entries(
        self, call: _Call, pos: np.ndarray, priced: _Priced, items: list[Any]
    ) -> EntryBatch:
        """The cache entries of a priced batch at ``pos`` (the items' texts when ``store_text``)."""
        return EntryBatch(
            ids=call.uniq[pos].tolist(),
            checks=call.checks[pos].tolist(),
            vectors=priced.stored,
            tokens=priced.tokens.tolist(),
            flags=priced.flags.tolist(),
            # Texts only: pixels are never stored, whatever store_text says.
            texts=items if self.store_text and call.kind == "text" else None,
        )

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
                self.store_failed(exc, "vectors returned but not cached")
                call.result.store_errors += 1
        expected = (
            ns.dim if ns.dim is not None else call.out.shape[1] if call.out is not None else dim
        )
        if dim != expected:
            raise ProviderResponseError(
                self.label,
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
            self.store_failed(exc, "vectors returned but not cached yet")
            call.result.store_errors += 1
            self.store.keep_unsaved(call.state.ns.id, entries)

    # -- pending batch jobs ---------------------------------------------------

    def _pending_ids(self, ns_id: int) -> dict[int, str]:
        """Item id -> job id of the texts of ``ns_id`` waiting in uncollected batch jobs.

        Runs on every call with misses: one small query, and a job's document is parsed
        only once per revision (a job holds up to 50,000 ids).
        """
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
            self.store_failed(exc, "pending batch jobs not checked")
            return
        jobs = sorted({covered[i] for i in ids.tolist() if i in covered}) if covered else []
        if not jobs:
            return
        if self.pending_batches == "error":
            n = sum(1 for i in ids.tolist() if i in covered)
            raise PendingBatchError(
                f"{n} of these texts are in batch job{'s' if len(jobs) > 1 else ''} "
                f"{', '.join(jobs)}, not yet collected: run `cachedembed batch collect` once "
                "finished, or pass pending_batches='wait' (wait for it) or 'embed' "
                "(pay the synchronous price now)"
            )
        from .batchjobs import JobHandle

        for job_id in jobs:
            handle = JobHandle(self.store, job_id)
            handle.wait(poll=self.batch_poll)
            handle.collect()

    # -- bypass (late chunking) -------------------------------------------------

    def _bypass(
        self, texts: list[Any], role: Role, state: _Namespaced, result: Embedded, kind: ItemKind
    ) -> None:
        """Embed everything, caching nothing (vectors depend on the whole batch); count it."""
        self._warn_bypass()
        parts = self._embed_all(texts, role, result)
        result.tokens = np.concatenate(
            [_batch_tokens(kind, b, texts[b.start : b.start + len(b.vectors)]) for b in parts]
        )
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

    def _warn_bypass(self) -> None:
        """Say once per engine that its function's vectors are never cached."""
        if not self._warned_bypass:
            warnings.warn(
                f"{self.label}: vectors depend on the whole batch (late chunking), so they "
                "are not cached per text; every call goes to the provider",
                UserWarning,
                stacklevel=6,  # the caller of Cached.__call__ / embed_query
            )
            self._warned_bypass = True

    def _embed_all(self, texts: list[Any], role: Role, result: Embedded) -> list[EmbeddedBatch]:
        """Every provider batch for ``texts``, each one's duration added to ``result``."""
        self.embedder.prepare()
        started = time.perf_counter()
        parts = []
        for batch in self.embedder.embed_batches(texts, role):
            parts.append(batch)
            result.provider_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
        return parts


def _columns(
    state: _Namespaced, dim: int, pos: np.ndarray, columns: Sequence[Any], stale: list[int]
) -> _Found:
    """A :class:`_Found` of intact rows' tokens, flags, last use and vectors (one join, one view)."""
    row_tokens, row_flags, row_used, row_vec = columns
    # A bytearray, so the vectors served straight from it are writable.
    blob = bytearray().join(row_vec)
    vectors = np.frombuffer(blob, dtype=state.dtype).reshape(len(pos), dim)
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


def _in_order(call: _Call) -> bool:
    """Whether the unique items are the input itself (no duplicates, already sorted)."""
    n = len(call.inverse)
    return n == 1 or (len(call.uniq) == n and bool((call.inverse == np.arange(n)).all()))


def _gather_all_hits(call: _Call, found: _Found) -> np.ndarray:
    """The vectors in input order when every unique item was found: one gather, or none."""
    n_u = len(call.uniq)
    row_of = np.empty(n_u, dtype=np.intp)
    row_of[found.pos] = np.arange(n_u)
    take = row_of[call.inverse]
    if len(take) == n_u and bool((take == np.arange(n_u)).all()):
        return found.vectors
    return found.vectors[take]
