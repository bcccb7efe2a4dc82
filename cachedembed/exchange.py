"""The portable cache file: export a cache from any store and import it into any other.

Format (``cachedembed-export`` version 1): gzip-compressed JSON Lines, one object a line,
each with a ``type``:

``header``
    ``{"type": "header", "format": "cachedembed-export", "version": 1, "exported": <unix
    time>, "source": <cache URL, password masked>, "cachedembed": <version>}``; always first.
``namespace``
    ``{"type": "namespace", "key", "spec", "dim", "created"}``: ``spec`` is the full
    namespace spec (identity, role, dtype, hash) from which ``key`` is re-derived and
    checked on import. Precedes the namespace's entries and stats.
``entry``
    ``{"type": "entry", "ns": <namespace key>, "id", "check", "tokens", "flags", "used",
    "created", "vec": <base64 of the stored little-endian bytes>, "text": <str or null>}``.
    Item ids are derived from the namespace *key* (never from a store's integer namespace
    id), so they stay valid in every store; only namespace ids are re-mapped by key.
``stats``
    ``{"type": "stats", "ns": <namespace key>, "day": <UTC day number>, "date", <counters>}``.
``end``
    ``{"type": "end", "namespaces": n, "entries": n, "stats": n}``: a file without it (or
    with other counts) is truncated, and is refused before anything is written.

Vectors travel as their stored bytes, token counts and flags as stored: an export moved
SQLite -> diskcache -> memory -> SQLite comes back bit-identical. Texts are present only
for entries stored with ``store_text=True``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .errors import InvalidInputError
from .keys import NamespaceSpec
from .manage import ITEMSIZE, entry_problem, select_namespaces
from .stores.base import EntryBatch, Namespace, PendingStats, Store
from .usage import UsageDelta, day_iso

FORMAT = "cachedembed-export"
VERSION = 1
IMPORT_BATCH = 5000

StatsMode = Literal["new", "add", "none"]


@dataclass
class ExportSummary:
    namespaces: int = 0
    entries: int = 0
    stats: int = 0
    texts: int = 0


@dataclass
class ImportSummary:
    namespaces: int = 0
    namespaces_created: int = 0
    entries: int = 0
    entries_added: int = 0
    entries_present: int = 0
    stats: int = 0
    stats_added: int = 0
    stats_skipped: int = 0


def _namespace_record(ns: Namespace) -> dict[str, Any]:
    return {
        "type": "namespace",
        "key": ns.key,
        "spec": ns.spec.to_dict(),
        "dim": ns.dim,
        "created": ns.created,
    }


def _lines(store: Store, model: str | None, summary: ExportSummary) -> Iterator[dict[str, Any]]:
    from . import __version__

    yield {
        "type": "header",
        "format": FORMAT,
        "version": VERSION,
        "exported": int(time.time()),
        "source": store.url,
        "cachedembed": __version__,
    }
    namespaces = select_namespaces(store, model)
    stats_by_ns: dict[int, list[tuple[int, UsageDelta]]] = {}
    for ns_id, day, delta in store.stats_rows():
        stats_by_ns.setdefault(ns_id, []).append((day, delta))
    for ns in namespaces:
        summary.namespaces += 1
        yield _namespace_record(ns)
        for batch in store.iter_entries(ns.id):
            for e in batch:
                summary.entries += 1
                summary.texts += e.text is not None
                yield {
                    "type": "entry",
                    "ns": ns.key,
                    "id": e.id,
                    "check": e.check,
                    "tokens": e.tokens,
                    "flags": e.flags,
                    "used": e.used,
                    "created": e.created,
                    "vec": base64.b64encode(e.vec).decode("ascii"),
                    "text": e.text,
                }
        for day, delta in sorted(stats_by_ns.get(ns.id, []), key=lambda r: r[0]):
            summary.stats += 1
            yield {"type": "stats", "ns": ns.key, "day": day, "date": day_iso(day), **asdict(delta)}
    yield {
        "type": "end",
        "namespaces": summary.namespaces,
        "entries": summary.entries,
        "stats": summary.stats,
    }


def _private_file(path: Path) -> BinaryIO:
    """``path`` opened for writing, readable by the user only (like the cache files it copies)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover file keeps its old mode through O_CREAT
    return os.fdopen(fd, "wb")


def export_cache(
    store: Store, path: str | os.PathLike[str], *, model: str | None = None
) -> ExportSummary:
    """Write the cache (or the namespaces matching ``model``) to ``path`` in the portable format.

    Buffered counters are flushed first so the file has every call so far. The file is
    written beside ``path`` and renamed into place: a failed export leaves no partial file.
    Compression is light (level 1): float vectors barely compress, and level 6 costs 5x
    the time for a few percent.
    """
    store.flush()
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    summary = ExportSummary()
    try:
        with (
            _private_file(tmp) as raw,
            gzip.open(raw, "wt", encoding="utf-8", compresslevel=1) as fh,
        ):
            for record in _lines(store, model, summary):
                fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
                fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return summary


# -- import ------------------------------------------------------------------

_ENTRY_FIELDS = ("id", "check", "tokens", "flags", "used", "created")
_STATS_FIELDS = tuple(f.name for f in fields(UsageDelta))


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{path}:{n}: not JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise InvalidInputError(f"{path}:{n}: expected an object")
                yield n, record
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a readable cachedembed export ({exc})") from None


def _check_file(path: Path) -> dict[str, int | None]:
    """Read the whole file once and refuse it if anything is wrong; return its namespace dimensions.

    Checked: header format and version, JSON on every line, each namespace's key against
    its spec, entries and stats naming a declared namespace, every vector decoding to its
    namespace's dtype and dimension, and the trailer's counts (a truncated file fails).
    """
    specs: dict[str, NamespaceSpec] = {}
    dims: dict[str, int | None] = {}
    counts = {"namespace": 0, "entry": 0, "stats": 0}
    end: dict[str, Any] | None = None
    for n, record in _records(path):
        kind = record.get("type")
        where = f"{path}:{n}"
        if n == 1:
            if kind != "header" or record.get("format") != FORMAT:
                raise InvalidInputError(f"{where}: not a cachedembed export (no {FORMAT} header)")
            if record.get("version") != VERSION:
                raise InvalidInputError(
                    f"{where}: export format version {record.get('version')}, this cachedembed reads "
                    f"version {VERSION}: upgrade cachedembed"
                )
            continue
        if end is not None:
            raise InvalidInputError(f"{where}: data after the end record")
        try:
            if kind == "namespace":
                spec = NamespaceSpec.from_dict(record["spec"])
                if spec.key != record["key"]:
                    raise InvalidInputError(
                        f"{where}: namespace key {record['key']} does not match its spec"
                    )
                specs[spec.key] = spec
                dims[spec.key] = record["dim"]
            elif kind in ("entry", "stats"):
                if record["ns"] not in specs:
                    raise InvalidInputError(
                        f"{where}: {kind} of undeclared namespace {record['ns']}"
                    )
                if kind == "entry":
                    for name in _ENTRY_FIELDS:
                        if not isinstance(record[name], int):
                            raise InvalidInputError(
                                f"{where}: entry field {name!r} is not an integer"
                            )
                    vec = base64.b64decode(record["vec"], validate=True)
                    problem = entry_problem(vec, dims[record["ns"]], specs[record["ns"]].dtype)
                    if problem:
                        raise InvalidInputError(f"{where}: entry {record['id']}: {problem}")
                else:
                    UsageDelta(**{name: record[name] for name in _STATS_FIELDS})
            elif kind == "end":
                end = record
                continue
            else:
                raise InvalidInputError(f"{where}: unknown record type {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(
                f"{where}: malformed {kind} record ({type(exc).__name__}: {exc})"
            ) from None
        counts[kind] += 1
    if end is None:
        raise InvalidInputError(f"{path}: truncated (no end record); nothing was imported")
    expected = {
        "namespace": end.get("namespaces"),
        "entry": end.get("entries"),
        "stats": end.get("stats"),
    }
    if expected != counts:
        raise InvalidInputError(
            f"{path}: the end record promises {expected}, the file holds {counts}"
        )
    return dims


def _check_dimensions(store: Store, dims: dict[str, int | None]) -> None:
    """Refuse a file whose namespaces hold vectors of another size than the store's."""
    for ns in store.namespaces():
        dim = dims.get(ns.key)
        if dim is not None and ns.dim is not None and dim != ns.dim:
            raise InvalidInputError(
                f"namespace {ns.key} ({ns.spec.provider}/{ns.spec.model}) holds {ns.dim}-d vectors in "
                f"{store.url} but {dim}-d ones in the file; nothing was imported"
            )


class _Importer:
    """Writes checked records into ``store``, namespace ids re-mapped by key, in big batches."""

    def __init__(self, store: Store, stats_mode: StatsMode, summary: ImportSummary) -> None:
        self.store = store
        self.stats_mode = stats_mode
        self.summary = summary
        self.ns: dict[str, Namespace] = {}
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.existing_stats = {(ns_id, day) for ns_id, day, _ in store.stats_rows()}
        self.stats = PendingStats()
        self.known_keys = {ns.key for ns in store.namespaces()}

    def namespace(self, record: dict[str, Any]) -> None:
        spec = NamespaceSpec.from_dict(record["spec"])
        ns = self.store.namespace(spec)
        if record["dim"] is not None:
            self.store.known_dimension(ns)
            self.store.set_dimension(ns, record["dim"])
        self.summary.namespaces += 1
        self.summary.namespaces_created += spec.key not in self.known_keys
        self.ns[spec.key] = ns

    def entry(self, record: dict[str, Any]) -> None:
        batch = self.pending.setdefault(record["ns"], [])
        batch.append(record)
        if len(batch) >= IMPORT_BATCH:
            self.write_entries(record["ns"])

    def write_entries(self, key: str) -> None:
        import numpy as np

        records = self.pending.pop(key, [])
        if not records:
            return
        ns = self.ns[key]
        assert ns.dim is not None  # _check_file refused entries of namespaces without one
        ids = [r["id"] for r in records]
        present = {row[0] for row in self.store.get(ns.id, ids)}  # SQL stores return plain tuples
        fresh = [r for r in records if r["id"] not in present]
        self.summary.entries += len(records)
        self.summary.entries_present += len(records) - len(fresh)
        self.summary.entries_added += len(fresh)
        if not fresh:
            return
        dtype = np.dtype(ns.spec.dtype).newbyteorder("<")
        blob = b"".join(base64.b64decode(r["vec"]) for r in fresh)
        vectors = np.frombuffer(blob, dtype=dtype).reshape(
            len(fresh), len(blob) // (len(fresh) * ITEMSIZE[ns.spec.dtype])
        )
        self.store.put(
            ns.id,
            EntryBatch(
                ids=[r["id"] for r in fresh],
                checks=[r["check"] for r in fresh],
                vectors=vectors,
                tokens=[r["tokens"] for r in fresh],
                flags=[r["flags"] for r in fresh],
                texts=[r.get("text") for r in fresh],
                used=[r["used"] for r in fresh],
                created=[r["created"] for r in fresh],
            ),
            PendingStats(),
        )

    def stats_row(self, record: dict[str, Any]) -> None:
        self.summary.stats += 1
        ns_id = self.ns[record["ns"]].id
        row = (ns_id, int(record["day"]))
        if self.stats_mode == "none" or (self.stats_mode == "new" and row in self.existing_stats):
            self.summary.stats_skipped += 1
            return
        delta = self.stats.deltas.setdefault(row, UsageDelta())
        delta.add(UsageDelta(**{name: record[name] for name in _STATS_FIELDS}))
        self.summary.stats_added += 1

    def finish(self) -> None:
        for key in list(self.pending):
            self.write_entries(key)
        if not self.stats.is_empty():
            self.store.flush_stats(self.stats)


def import_cache(
    store: Store, path: str | os.PathLike[str], *, stats: StatsMode = "new"
) -> ImportSummary:
    """Load an export into ``store``: idempotent for entries, and for stats by default.

    The whole file is checked first (see :func:`_check_file`); a bad or truncated file
    raises :class:`InvalidInputError` before anything is written. Entries already in the
    store are left as they are (insert-or-ignore), so importing twice changes nothing.
    Stats rows (per namespace and UTC day): ``"new"`` (default) imports the days the store
    has no row for yet, which is idempotent and exact when moving a cache; ``"add"`` adds
    the file's counters to the store's (to merge caches from different machines, once);
    ``"none"`` skips them.
    """
    if stats not in ("new", "add", "none"):
        raise InvalidInputError(f"stats must be 'new', 'add' or 'none', got {stats!r}")
    source = Path(path)
    _check_dimensions(store, _check_file(source))
    summary = ImportSummary()
    importer = _Importer(store, stats, summary)
    for _n, record in _records(source):
        kind = record["type"]
        if kind == "namespace":
            importer.namespace(record)
        elif kind == "entry":
            importer.entry(record)
        elif kind == "stats":
            importer.stats_row(record)
    importer.finish()
    return summary
