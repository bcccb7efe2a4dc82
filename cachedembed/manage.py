"""Cache management: list namespaces, prune, verify and migrate (the library behind the CLI).

Every operation works on any :class:`~cachedembed.stores.Store` through its public
primitives (``namespaces``, ``namespace_usage``, ``iter_entries``, ``delete``), so the
same code manages SQLite, PostgreSQL, MySQL, diskcache and memory caches. Export and
import live in :mod:`cachedembed.exchange`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidInputError
from .stores.base import MAX_DIM, ExportedEntry, Namespace, Store
from .usage import day_iso, parse_days_ago

# Storage dtypes a namespace may record, and their item sizes in bytes.
ITEMSIZE = {"float32": 4, "float16": 2}


def select_namespaces(store: Store, model: str | None = None) -> list[Namespace]:
    """Namespaces whose ``provider/model`` contains ``model`` (all of them when ``None``)."""
    return [ns for ns in store.namespaces() if ns.matches(model)]


def parameters(ns: Namespace) -> dict[str, Any]:
    """The namespace identity minus provider and model: the output-changing options."""
    return {k: v for k, v in ns.spec.identity.items() if k not in ("provider", "model")}


# -- models ------------------------------------------------------------------


@dataclass
class ModelInfo:
    """One namespace as ``cachedembed models`` lists it."""

    namespace: str
    provider: str
    model: str
    parameters: dict[str, Any]
    role: str
    kind: str
    """What the entries are embeddings of: ``text`` or ``image``."""
    dim: int | None
    dtype: str
    hash: str
    entries: int
    bytes: int
    first_used: str | None
    last_used: str | None
    damaged: str | None = None
    """What is wrong with the namespace's stored record (``verify --fix`` repairs or removes it)."""


def list_models(store: Store, model: str | None = None) -> list[ModelInfo]:
    """Every namespace with its footprint (entries, vector bytes) and first/last use day."""
    usage = store.namespace_usage()
    out = []
    for ns in select_namespaces(store, model):
        u = usage.get(ns.id)
        out.append(
            ModelInfo(
                namespace=ns.key,
                provider=ns.spec.provider,
                model=ns.spec.model,
                parameters=parameters(ns),
                role=ns.spec.role,
                kind=ns.spec.kind,
                dim=ns.dim,
                dtype=ns.spec.dtype,
                hash=ns.spec.hash,
                entries=u.entries if u else 0,
                bytes=u.bytes if u else 0,
                first_used=day_iso(u.first_used) if u and u.first_used is not None else None,
                last_used=day_iso(u.last_used) if u and u.last_used is not None else None,
                damaged=ns.damage,
            )
        )
    return out


# -- sizes ---------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> int:
    """``2GB`` (10^9), ``500MiB`` (2^20), ``1.5g`` or a plain byte count, as bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: write e.g. 2GB, 500MB, 750MiB or a byte count")
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# -- prune ---------------------------------------------------------------------


@dataclass
class PrunedNamespace:
    """What prune removed (or would remove) from one namespace, and what it kept."""

    namespace: str
    model: str
    role: str
    removed_entries: int = 0
    removed_bytes: int = 0
    kept_entries: int = 0
    kept_bytes: int = 0
    removed_namespace: bool = False
    """The namespace itself went too (``remove_namespaces``), with its stats if asked."""


@dataclass
class PruneResult:
    dry_run: bool
    namespaces: list[PrunedNamespace] = field(default_factory=list)

    @property
    def removed_entries(self) -> int:
        return sum(n.removed_entries for n in self.namespaces)

    @property
    def removed_bytes(self) -> int:
        return sum(n.removed_bytes for n in self.namespaces)

    @property
    def kept_bytes(self) -> int:
        return sum(n.kept_bytes for n in self.namespaces)


def prune(
    store: Store,
    *,
    older_than: str | None = None,
    model: str | None = None,
    max_bytes: int | None = None,
    remove_namespaces: bool = False,
    with_stats: bool = False,
    dry_run: bool = False,
    now: int | None = None,
) -> PruneResult:
    """Remove entries from the namespaces matching ``model``.

    ``older_than`` (``30d``, ``2w`` or a date) removes entries not used within that window
    (last use is tracked per UTC day). ``max_bytes`` then removes the least recently used
    of the remaining entries (oldest last use, then oldest creation) until the selected
    namespaces hold at most that many vector bytes. With ``dry_run`` nothing is deleted.
    Usage stats are kept: pruning forgets vectors, not history. A namespace left without
    entries forgets its recorded dimension, so the next write records it again.

    ``remove_namespaces`` removes the selected namespaces outright (entries and record,
    a damaged one included); one with usage stats only ``with_stats``, which removes those too.
    """
    if remove_namespaces:
        return _remove_namespaces(store, model, with_stats=with_stats, dry_run=dry_run)
    if older_than is None and max_bytes is None:
        raise ValueError("prune needs --older-than and/or --max-size")
    store.flush()  # pending last-use touches count as use
    cutoff = parse_days_ago(older_than, now=now) if older_than is not None else None
    result = PruneResult(dry_run=dry_run)
    plan = _PrunePlan()
    selected = select_namespaces(store, model)
    for ns in selected:
        info = PrunedNamespace(ns.key, ns.label, ns.spec.role)
        result.namespaces.append(info)
        plan.apply_age_rule(store, ns.id, info, cutoff)
    if max_bytes is not None:
        plan.apply_size_rule(max_bytes)
    if not dry_run:
        plan.delete(store)
        _forget_emptied_dimensions(store, selected, plan.by_ns)
    return result


class _PrunePlan:
    """The entries prune removes, decided namespace by namespace, then across them by size."""

    def __init__(self) -> None:
        self.doomed: dict[int, list[int]] = {}
        self.by_ns: dict[int, PrunedNamespace] = {}
        # (used, created, id, ns_id, size) of the entries the age rule keeps, for the size rule.
        self.survivors: list[tuple[int, int, int, int, int]] = []

    def apply_age_rule(
        self, store: Store, ns_id: int, info: PrunedNamespace, cutoff: int | None
    ) -> None:
        """Doom the namespace's entries last used before ``cutoff``; keep the rest."""
        self.by_ns[ns_id] = info
        gone = self.doomed.setdefault(ns_id, [])
        for batch in store.iter_entries(ns_id):
            for e in batch:
                size = len(e.vec)
                if cutoff is not None and e.used < cutoff:
                    gone.append(e.id)
                    info.removed_entries += 1
                    info.removed_bytes += size
                else:
                    self.survivors.append((e.used, e.created, e.id, ns_id, size))
                    info.kept_entries += 1
                    info.kept_bytes += size

    def apply_size_rule(self, max_bytes: int) -> None:
        """Doom the least recently used survivors until at most ``max_bytes`` remain."""
        excess = sum(s[4] for s in self.survivors) - max_bytes
        self.survivors.sort()
        for _used, _created, entry_id, ns_id, size in self.survivors:
            if excess <= 0:
                break
            self.doomed[ns_id].append(entry_id)
            info = self.by_ns[ns_id]
            info.removed_entries += 1
            info.removed_bytes += size
            info.kept_entries -= 1
            info.kept_bytes -= size
            excess -= size

    def delete(self, store: Store) -> None:
        for ns_id, ids in self.doomed.items():
            store.delete_namespace_entries(ns_id, ids)


def _forget_emptied_dimensions(
    store: Store, selected: list[Namespace], by_ns: dict[int, PrunedNamespace]
) -> None:
    """An emptied namespace constrains no vector: its (maybe wrong) dimension is reset.

    A writer that stores new vectors meanwhile loses nothing: its next write records the
    dimension again, and entries are checked against it on every read.
    """
    for ns in selected:
        recorded = ns.dim is not None or ns.dim_damage is not None
        if recorded and ns.spec_damage is None and by_ns[ns.id].kept_entries == 0:
            store.set_recorded_dimension(ns.id, None)


def _remove_namespaces(
    store: Store, model: str | None, *, with_stats: bool, dry_run: bool
) -> PruneResult:
    if not model:
        raise InvalidInputError(
            "prune --remove-namespaces needs --model SUBSTR naming the namespaces to remove"
        )
    selected = select_namespaces(store, model)
    with_history = {ns_id for ns_id, _day, _delta in store.stats_rows()}
    kept_history = [ns.label for ns in selected if ns.id in with_history]
    if kept_history and not with_stats:
        from ._printable import printable

        raise InvalidInputError(
            f"{printable(kept_history[0])} has usage stats, which prune keeps: add --with-stats "
            "to remove them with the namespace (or --max-size 0 to empty it and keep its history)"
        )
    result = PruneResult(dry_run=dry_run)
    for ns in selected:
        info = PrunedNamespace(ns.key, ns.label, ns.spec.role, removed_namespace=True)
        for batch in store.iter_entries(ns.id):
            info.removed_entries += len(batch)
            info.removed_bytes += sum(len(e.vec) for e in batch)
        if not dry_run:
            store.remove_namespace(ns.id, with_stats=with_stats)
        result.namespaces.append(info)
    return result


# -- verify --------------------------------------------------------------------


@dataclass
class BadEntry:
    namespace: str
    model: str
    id: int
    reason: str


@dataclass
class DamagedNamespace:
    namespace: str
    model: str
    problem: str
    repair: str
    """What ``verify --fix`` does (or did) about it."""


@dataclass
class VerifyResult:
    checked: int = 0
    bad: list[BadEntry] = field(default_factory=list)
    removed: int = 0
    damaged_namespaces: list[DamagedNamespace] = field(default_factory=list)


def vector_problems(vecs: Sequence[bytes], dim: int | None, dtype: str) -> list[str | None]:
    """For each blob, why it is not a vector of ``dim`` finite ``dtype`` values (``None``: it is).

    Vectorised over the batch: verify and import check millions of entries.
    """
    import numpy as np

    if dtype not in ITEMSIZE:
        return [f"unknown dtype {dtype!r}"] * len(vecs)
    if dim is None:
        return ["its namespace has no recorded dimension"] * len(vecs)
    expected = dim * ITEMSIZE[dtype]
    problems: list[str | None] = [
        None if len(v) == expected else f"{len(v)} bytes, expected {expected} ({dim} x {dtype})"
        for v in vecs
    ]
    sized = [k for k, p in enumerate(problems) if p is None]
    if sized:
        blob = b"".join(vecs[k] for k in sized)
        values = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<")).reshape(
            len(sized), dim
        )
        for k in np.flatnonzero(~np.isfinite(values).all(axis=1)):
            problems[sized[k]] = "contains NaN or infinite values"
    return problems


def entry_problem(vec: bytes, dim: int | None, dtype: str) -> str | None:
    """Why ``vec`` is not a valid vector of ``dim`` values of ``dtype``, or ``None`` if it is."""
    return vector_problems([vec], dim, dtype)[0]


def entry_problems(batch: Sequence[ExportedEntry], ns: Namespace) -> list[str | None]:
    """For each entry read back, why it is damaged or not a valid vector of ``ns`` (``None``: fine)."""
    problems = vector_problems([e.vec for e in batch], ns.dim, ns.spec.dtype)
    return [e.problem or p for e, p in zip(batch, problems, strict=True)]


def _bad_entries(store: Store, ns: Namespace) -> Iterator[tuple[int, BadEntry | None]]:
    for batch in store.iter_entries(ns.id):
        for e, problem in zip(batch, entry_problems(batch, ns), strict=True):
            yield e.id, None if problem is None else BadEntry(ns.key, ns.label, e.id, problem)


def _checked(store: Store, ns: Namespace) -> tuple[int, list[BadEntry]]:
    """How many entries ``ns`` holds, and those that are not valid vectors of it."""
    checked, bad = 0, []
    for _entry_id, entry in _bad_entries(store, ns):
        checked += 1
        if entry is not None:
            bad.append(entry)
    return checked, bad


def _shared_dimension(store: Store, ns: Namespace) -> int | None:
    """The dimension every readable entry of ``ns`` has, if they agree on one."""
    lengths = {len(e.vec) for batch in store.iter_entries(ns.id) for e in batch if not e.problem}
    if len(lengths) != 1:
        return None
    dim, rest = divmod(lengths.pop(), ITEMSIZE[ns.spec.dtype])
    return dim if not rest and 1 <= dim <= MAX_DIM else None


def verify(store: Store, *, fix: bool = False, model: str | None = None) -> VerifyResult:
    """Check every namespace record, and that every entry decodes to its namespace's dtype
    and dimension (and is finite).

    With ``fix`` the bad entries are deleted: the next request for their text re-embeds it.
    A namespace whose recorded dimension is invalid, or disagrees with all its entries, gets
    the dimension its entries share (none: the next write records it again); one whose spec
    is unreadable can serve no model and is removed with its entries and stats.
    """
    result = VerifyResult()
    for ns in select_namespaces(store, model):
        if ns.spec_damage is not None:
            _remove_unreadable(store, ns, ns.spec_damage, fix, result)
            continue
        checked, bad = _checked(store, ns)
        problem = ns.dim_damage
        if problem is None and ns.dim is not None and checked and len(bad) == checked:
            shared = _shared_dimension(store, ns)
            if shared is not None:
                problem = f"recorded dimension {ns.dim} disagrees with its entries, all {shared}-d"
        if problem is not None:
            shared = _shared_dimension(store, ns) if checked else None
            checked, bad = _checked(store, replace(ns, dim=shared))
            repair = (
                f"dimension set to {shared}, that of its entries"
                if shared is not None
                else "dimension reset: the next write records it again"
            )
            result.damaged_namespaces.append(DamagedNamespace(ns.key, ns.label, problem, repair))
            if fix:
                store.set_recorded_dimension(ns.id, shared)
        result.checked += checked
        result.bad += bad
        if fix and bad:
            result.removed += store.delete_namespace_entries(ns.id, [b.id for b in bad])
    return result


def _remove_unreadable(
    store: Store, ns: Namespace, problem: str, fix: bool, result: VerifyResult
) -> None:
    """A spec no model can have: its entries can never be served, so it all goes."""
    entries = sum(len(batch) for batch in store.iter_entries(ns.id))
    repair = f"removed with its {entries:,} entries and its usage stats"
    result.damaged_namespaces.append(DamagedNamespace(ns.key, ns.label, problem, repair))
    if fix:
        store.remove_namespace(ns.id, with_stats=True)


# -- re-embed ------------------------------------------------------------------


@dataclass
class ReembedResult:
    namespaces: int = 0
    """Namespaces that had texts to re-embed."""
    texts: int = 0
    without_text: int = 0
    hits: int = 0
    misses: int = 0


def reembed(
    store: Store, ef: Any, *, model: str | None = None, batch_size: int = 256
) -> ReembedResult:
    """Embed the texts stored in the namespaces matching ``model`` with ``ef``, into ``store``.

    Only entries cached with ``store_text=True`` carry their text; the others are counted
    in ``without_text``. Each text keeps its role (documents as documents, queries as
    queries). Texts already cached for ``ef`` are hits, so an interrupted run resumes for
    free; the new namespace keeps the texts too, so it can be re-embedded in turn.
    """
    from .wrapper import Cached, check_batch_size

    check_batch_size(batch_size)
    target = Cached(ef, store, store_text=True)
    own = {target.spec(role).key for role in ("document", "query")}
    result = ReembedResult()
    for ns in select_namespaces(store, model):
        if ns.key in own:
            continue  # never feed a namespace its own texts
        moved = result.texts
        chunk: list[str] = []
        for batch in store.iter_entries(ns.id):
            for e in batch:
                if e.text is None:
                    result.without_text += 1
                    continue
                chunk.append(e.text)
                if len(chunk) >= batch_size:
                    target.embed(chunk, ns.spec.role)
                    result.texts += len(chunk)
                    chunk = []
        if chunk:
            target.embed(chunk, ns.spec.role)
            result.texts += len(chunk)
        result.namespaces += result.texts > moved
    # This run's own counters: other writers of a shared cache do not count.
    done = target.session_stats()
    result.hits, result.misses = done["hits"], done["misses"]
    return result


# -- migrate -------------------------------------------------------------------


def migrate(url: str | None) -> tuple[str | None, str | None]:
    """Upgrade the schema of the SQL cache at ``url`` explicitly; return (from, to) revisions.

    Key-value caches (diskcache, memory) have no schema: both revisions are ``None``.
    """
    from .stores import default_url, normalize_url

    url = normalize_url(url or default_url())
    if url.startswith(("diskcache://", "memory://")):
        return None, None
    from .stores.sql import SqlStore

    store = SqlStore(url, upgrade=None)
    try:
        before = store.schema_revision()
        store.upgrade()
        return before, store.schema_revision()
    finally:
        store.close()


__all__ = [
    "BadEntry",
    "DamagedNamespace",
    "ModelInfo",
    "PruneResult",
    "PrunedNamespace",
    "ReembedResult",
    "VerifyResult",
    "entry_problem",
    "entry_problems",
    "format_size",
    "list_models",
    "migrate",
    "parse_size",
    "prune",
    "reembed",
    "vector_problems",
    "verify",
]
