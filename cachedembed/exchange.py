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
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ._printable import printable
from .errors import InvalidInputError
from .keys import ItemHasher, NamespaceSpec
from .manage import entry_problems, select_namespaces, vector_problems
from .stores.base import (
    MAX_DIM,
    EntryBatch,
    ExportedEntry,
    Namespace,
    PendingStats,
    Store,
    spec_problem,
)
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
    damaged: int = 0
    """Entries left out because they are damaged (what ``cachedembed verify`` reports)."""


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
        if ns.damage is not None:  # no import would take it; `verify --fix` repairs it
            continue
        summary.namespaces += 1
        yield _namespace_record(ns)
        for batch in store.iter_entries(ns.id):
            for e, problem in zip(batch, entry_problems(batch, ns), strict=True):
                if problem is not None:  # never carried to another cache; `verify` lists it
                    summary.damaged += 1
                    continue
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
# An export is data from outside: every field is checked against the range the stores
# can hold and a sane bound, before anything is written, and a record that fails names
# its line. Everything read is bounded: one line, the namespace specs, the pending batch.

MAX_LINE_BYTES = 32 * 2**20
"""Longest line an import reads (a text of up to about 32 MB); a longer one is refused unread."""
MAX_SPEC_BYTES = 2**20
"""Largest namespace spec (canonical JSON) one record may declare; the file's total is bounded too."""
_MAX_SPECS_TOTAL = 32 * 2**20
MAX_DAY = 2_932_896  # 9999-12-31, the last day `datetime` can print
MAX_TIME = MAX_DAY * 86400
MAX_COUNTER = 2**53  # far beyond any real count, and adding two never overflows 64 bits
_INT64 = (-(2**63), 2**63 - 1)
_CHECK_BATCH = 4096
_CHECK_BATCH_BYTES = 64 * 2**20
_ENTRY_RANGES = {
    "id": _INT64,
    "check": _INT64,
    "tokens": (0, 2**31 - 1),
    "flags": (0, 2**15 - 1),
    "used": (0, MAX_DAY),
    "created": (0, MAX_TIME),
}
_STATS_FIELDS = tuple(f.name for f in fields(UsageDelta))
_OPTIONAL_STATS = frozenset({"tokens_batch"})
"""Counters added after the export format was fixed: older exports lack them."""


def _bad(where: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"{where}: {printable(problem)}; nothing was imported")


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The file's lines, decompressed, each at most :data:`MAX_LINE_BYTES` long."""
    import zlib

    where = printable(path)
    try:
        with gzip.open(path, "rb") as fh:
            n = 0
            while True:
                line = fh.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                n += 1
                if len(line) > MAX_LINE_BYTES:
                    raise _bad(
                        f"{where}:{n}",
                        f"line longer than {MAX_LINE_BYTES // 2**20} MiB: not an export line "
                        "(texts that long cannot be imported)",
                    )
                yield n, line
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidInputError(
            f"{where}: not a readable cachedembed export ({printable(exc)}); nothing was imported"
        ) from None


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for each line, ``where`` being ``path:line`` for messages."""
    for n, line in _raw_lines(path):
        where = f"{printable(path)}:{n}"
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad(where, "not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise _bad(where, f"not JSON ({exc.msg})") from None
        except (ValueError, RecursionError):  # a 5,000-digit number, 100,000 nested brackets
            raise _bad(
                where, "not JSON this importer reads (a huge number or deep nesting)"
            ) from None
        if not isinstance(record, dict):
            raise _bad(where, "expected a JSON object")
        yield where, record


def _integer(where: str, record: dict[str, Any], name: str, low: int, high: int) -> int:
    value = record.get(name)
    if type(value) is not int:  # bool is an int subclass, and never a count
        raise _bad(where, f"field {name!r} is {type(value).__name__}, expected an integer")
    if not low <= value <= high:
        raise _bad(where, f"field {name!r} is {value}, outside {low}..{high}")
    return value


def _text(where: str, value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, f"field {name!r} is {type(value).__name__}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(where, f"field {name!r} holds a lone surrogate (not valid Unicode)") from None
    return value


@dataclass
class _Entry(ExportedEntry):
    """An entry read from an export, with where in the file it stands (for error messages)."""

    where: str = ""


@dataclass
class _DeclaredNamespace:
    spec: NamespaceSpec
    dim: int | None
    created: int
    last_day: int = -1
    hasher: ItemHasher | None = None


class _Checker:
    """Reads an export and yields its records checked and typed; raises on the first bad one.

    Entries come out in batches after their vectors (dtype, dimension, finite) and, when
    the file carries their text, their ids (re-hashed from the text) were proven.
    """

    def __init__(self, path: Path, require_text: bool) -> None:
        self.path = path
        self.require_text = require_text
        self.namespaces: dict[str, _DeclaredNamespace] = {}
        self.counts = {"namespace": 0, "entry": 0, "stats": 0}
        self._spec_bytes = 0
        self._pending: list[tuple[str, _Entry]] = []
        self._pending_bytes = 0

    def records(self) -> Iterator[Any]:
        """``("namespace", key)``, ``("entries", key, [entry])``, ``("stats", key, day, delta)``."""
        records = _records(self.path)
        first = next(records, None)
        if first is None:
            raise _bad(printable(self.path), "empty file, not a cachedembed export")
        self._header(*first)
        end: dict[str, Any] | None = None
        for where, record in records:
            if end is not None:
                raise _bad(where, "data after the end record")
            kind = record.get("type")
            if kind == "namespace":
                if self._namespace(where, record):
                    yield "namespace", record["key"]
            elif kind == "entry":
                self._entry(where, record)
                if len(self._pending) >= _CHECK_BATCH or self._pending_bytes >= _CHECK_BATCH_BYTES:
                    yield from self._proven()
            elif kind == "stats":
                yield ("stats", *self._stats(where, record))
            elif kind == "end":
                end = record
                self._end(where, record)
                continue
            else:
                raise _bad(where, f"unknown record type {printable(kind)!r}")
            self.counts[kind] += 1
        yield from self._proven()
        if end is None:
            raise _bad(printable(self.path), "truncated (no end record)")

    def _header(self, where: str, record: dict[str, Any]) -> None:
        if record.get("type") != "header" or record.get("format") != FORMAT:
            raise _bad(where, f"not a cachedembed export (no {FORMAT} header)")
        version = record.get("version")
        if version != VERSION:
            raise _bad(
                where,
                f"export format version {version!r}, this cachedembed reads version {VERSION}: "
                "upgrade cachedembed",
            )

    def _namespace(self, where: str, record: dict[str, Any]) -> bool:
        """Check a namespace declaration; ``False`` for a repeated (identical) one."""
        key = _text(where, record.get("key"), "key")
        data = record.get("spec")
        problem = spec_problem(data)  # the same rules a store applies to its own records
        if problem is not None:
            raise _bad(where, problem)
        spec = NamespaceSpec.from_dict(data)  # type: ignore[arg-type]  # a dict: checked above
        try:
            size = len(spec.canonical.encode("utf-8"))
        except (ValueError, TypeError, RecursionError):  # NaN, a lone surrogate
            raise _bad(
                where, "namespace identity holds values JSON cannot key (NaN, lone surrogates)"
            ) from None
        if size > MAX_SPEC_BYTES:
            raise _bad(
                where, f"namespace spec of {size} bytes, at most {MAX_SPEC_BYTES} are accepted"
            )
        self._spec_bytes += size
        if self._spec_bytes > _MAX_SPECS_TOTAL:
            raise _bad(where, f"namespace specs exceed {_MAX_SPECS_TOTAL // 2**20} MiB in total")
        if spec.key != key:
            raise _bad(where, f"namespace key {key} does not match its spec")
        dim = record.get("dim")
        if dim is not None:
            dim = _integer(where, record, "dim", 1, MAX_DIM)
        created = _integer(where, record, "created", 0, MAX_TIME)
        known = self.namespaces.get(key)
        if known is not None:
            if (known.dim, known.created) != (dim, created):
                raise _bad(
                    where, f"namespace {key} declared again with another dimension or creation time"
                )
            return False
        self.namespaces[key] = _DeclaredNamespace(spec, dim, created)
        return True

    def _declared(
        self, where: str, record: dict[str, Any], kind: str
    ) -> tuple[str, _DeclaredNamespace]:
        key = record.get("ns")
        ns = self.namespaces.get(key) if isinstance(key, str) else None
        if ns is None:
            raise _bad(where, f"{kind} of undeclared namespace {printable(key)}")
        return key, ns  # type: ignore[return-value]  # a str: it was found in the dict

    def _entry(self, where: str, record: dict[str, Any]) -> None:
        key, ns = self._declared(where, record, "entry")
        values = {
            name: _integer(where, record, name, *bounds) for name, bounds in _ENTRY_RANGES.items()
        }
        encoded = record.get("vec")
        if not isinstance(encoded, str):
            raise _bad(where, "entry 'vec' is not a base64 string")
        try:
            vec = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise _bad(where, "entry 'vec' is not valid base64") from None
        text = record.get("text")
        if text is not None and ns.spec.kind != "text":
            raise _bad(where, f"entry {values['id']} of an image namespace carries a text")
        if text is not None:
            text = _text(where, text, "text")
        elif self.require_text:
            raise _bad(
                where,
                f"entry {values['id']} has no text, and --require-text refuses unproven entries",
            )
        if ns.dim is None:
            raise _bad(where, f"entry of namespace {key}, which declares no dimension")
        entry = _Entry(where=where, vec=vec, text=text, **values)  # type: ignore[arg-type]  # values: the integer fields only
        self._pending.append((key, entry))
        self._pending_bytes += len(vec) + (len(text) if text else 0)

    def _proven(self) -> Iterator[tuple[str, str, list[_Entry]]]:
        """Check the pending entries per namespace in bulk, then hand them on."""
        by_ns: dict[str, list[_Entry]] = {}
        for key, entry in self._pending:
            by_ns.setdefault(key, []).append(entry)
        self._pending, self._pending_bytes = [], 0
        for key, entries in by_ns.items():
            ns = self.namespaces[key]
            problems = vector_problems([e.vec for e in entries], ns.dim, ns.spec.dtype)
            for e, problem in zip(entries, problems, strict=True):
                if problem is not None:
                    raise _bad(e.where, f"entry {e.id}: {problem}")
            self._prove_ids(key, ns, [e for e in entries if e.text is not None])
            yield "entries", key, entries

    def _prove_ids(self, key: str, ns: _DeclaredNamespace, entries: list[_Entry]) -> None:
        """Refuse an entry whose id and check are not the hash of its own text."""
        if not entries:
            return
        if ns.hasher is None:
            ns.hasher = ItemHasher(ns.spec)
        ids, checks = ns.hasher.text_keys([e.text for e in entries])  # type: ignore[misc]
        for e, i, c in zip(entries, ids, checks, strict=True):
            if (e.id, e.check) != (i, c):
                hint = (
                    " (a blake2b namespace: is $CACHEDEMBED_HASH_KEY the key it was written with?)"
                    if ns.spec.hash == "blake2b"
                    else ""
                )
                raise _bad(
                    e.where,
                    f"entry {e.id}: its id and check are not the hash of its text in namespace "
                    f"{key}, so its vector cannot be trusted{hint}",
                )

    def _stats(self, where: str, record: dict[str, Any]) -> tuple[str, int, UsageDelta]:
        key, ns = self._declared(where, record, "stats")
        day = _integer(where, record, "day", 0, MAX_DAY)
        if day <= ns.last_day:
            raise _bad(
                where,
                f"stats row for day {day} repeats or precedes day {ns.last_day} of its namespace",
            )
        ns.last_day = day
        delta = UsageDelta()
        for name in _STATS_FIELDS:
            if name == "provider_seconds":
                seconds: Any = record.get(name)
                number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
                if not number or not 0 <= seconds <= MAX_COUNTER:  # NaN fails this too
                    raise _bad(
                        where,
                        f"field {name!r} is {seconds!r}, expected seconds in 0..{MAX_COUNTER}",
                    )
                delta.provider_seconds = float(seconds)
            elif name in _OPTIONAL_STATS and name not in record:
                continue  # written by a cachedembed before that counter existed: zero
            else:
                setattr(delta, name, _integer(where, record, name, 0, MAX_COUNTER))
        return key, day, delta

    def _end(self, where: str, record: dict[str, Any]) -> None:
        promised = {
            kind: _integer(where, record, name, 0, _INT64[1])
            for kind, name in (
                ("namespace", "namespaces"),
                ("entry", "entries"),
                ("stats", "stats"),
            )
        }
        if promised != self.counts:
            raise _bad(where, f"the end record promises {promised}, the file holds {self.counts}")


def check_export(path: str | os.PathLike[str], *, require_text: bool = False) -> None:
    """Read the whole export and refuse it if any record is wrong.

    Raises :class:`InvalidInputError` naming the file, line and problem. Needs no store:
    the CLI runs it before opening (or creating) the target cache.
    """
    checker = _Checker(Path(path), require_text)
    for _ in checker.records():
        pass


class _Importer:
    """Writes checked records into ``store``, namespace ids re-mapped by key, in big batches."""

    def __init__(self, store: Store, stats_mode: StatsMode, summary: ImportSummary) -> None:
        self.store = store
        self.stats_mode = stats_mode
        self.summary = summary
        self.ns: dict[str, Namespace] = {}
        self.existing_stats = {(ns_id, day) for ns_id, day, _ in store.stats_rows()}
        self.stats = PendingStats()
        self.known_keys = {ns.key for ns in store.namespaces()}

    def namespace(self, declared: _DeclaredNamespace) -> None:
        spec = declared.spec
        # A copy: a rolled-back import must not leave its dimension on the memoised object
        # a live wrapper may share.
        ns = replace(self.store.namespace(spec))
        if declared.dim is not None:
            self.store.known_dimension(ns)
            self.store.set_dimension(ns, declared.dim)
            if ns.dim != declared.dim:
                raise InvalidInputError(
                    f"namespace {ns.key} ({printable(ns.label)}) holds {ns.dim}-d vectors in "
                    f"{self.store.url} but {declared.dim}-d ones in the file; nothing was imported"
                )
        self.summary.namespaces += 1
        self.summary.namespaces_created += spec.key not in self.known_keys
        self.ns[spec.key] = ns

    def entries(self, key: str, records: list[_Entry]) -> None:
        import numpy as np

        ns = self.ns[key]
        present = {row[0] for row in self.store.lookup(ns.id, [r.id for r in records])}
        fresh = [r for r in records if r.id not in present]
        self.summary.entries += len(records)
        self.summary.entries_present += len(records) - len(fresh)
        self.summary.entries_added += len(fresh)
        if not fresh:
            return
        assert ns.dim is not None  # the file declared it, and the store agrees
        dtype = np.dtype(ns.spec.dtype).newbyteorder("<")
        vectors = np.frombuffer(b"".join(r.vec for r in fresh), dtype=dtype).reshape(
            len(fresh), ns.dim
        )
        self.store.write_entries(
            ns.id,
            EntryBatch(
                ids=[r.id for r in fresh],
                checks=[r.check for r in fresh],
                vectors=vectors,
                tokens=[r.tokens for r in fresh],
                flags=[r.flags for r in fresh],
                texts=[r.text for r in fresh],
                used=[r.used for r in fresh],
                created=[r.created for r in fresh],
            ),
        )

    def stats_row(self, key: str, day: int, delta: UsageDelta) -> None:
        self.summary.stats += 1
        row = (self.ns[key].id, day)
        if self.stats_mode == "none" or (self.stats_mode == "new" and row in self.existing_stats):
            self.summary.stats_skipped += 1
            return
        self.stats.deltas[row] = delta  # one row per (namespace, day): the checker refuses repeats
        self.summary.stats_added += 1
        if len(self.stats.deltas) >= IMPORT_BATCH:
            self.finish()

    def finish(self) -> None:
        if not self.stats.is_empty():
            self.store.merge_stats(self.stats)
            self.stats = PendingStats()


def import_cache(
    store: Store,
    path: str | os.PathLike[str],
    *,
    stats: StatsMode = "new",
    require_text: bool = False,
    checked: bool = False,
) -> ImportSummary:
    """Load an export into ``store``: all or nothing, idempotent for entries, and for stats by default.

    The whole file is checked first (:func:`check_export`; ``checked=True`` says the caller
    just did); a bad or truncated file raises :class:`InvalidInputError` before anything is
    written. Then the file is read again, checked again (it may have changed) and written
    inside one :meth:`Store.bulk` transaction: a failure at any point leaves the store as it
    was. An entry whose text is in the file is imported only if its id and check are the
    hash of that text; an entry without text is trusted as the file says (``require_text``
    refuses those). Entries already in the store are left as they are (insert-or-ignore),
    so importing twice changes nothing. Stats rows (per namespace and UTC day): ``"new"``
    (default) imports the days the store has no row for yet, which is idempotent and exact
    when moving a cache; ``"add"`` adds the file's counters to the store's (to merge caches
    from different machines, once); ``"none"`` skips them.
    """
    if stats not in ("new", "add", "none"):
        raise InvalidInputError(f"stats must be 'new', 'add' or 'none', got {stats!r}")
    source = Path(path)
    if not checked:
        check_export(source, require_text=require_text)
    checker = _Checker(source, require_text)
    summary = ImportSummary()
    with store.bulk():
        importer = _Importer(store, stats, summary)
        for record in checker.records():
            kind, key = record[0], record[1]
            if kind == "namespace":
                importer.namespace(checker.namespaces[key])
            elif kind == "entries":
                importer.entries(key, record[2])
            else:
                importer.stats_row(key, record[2], record[3])
        importer.finish()
    return summary


__all__ = [
    "ExportSummary",
    "ImportSummary",
    "StatsMode",
    "check_export",
    "export_cache",
    "import_cache",
]
