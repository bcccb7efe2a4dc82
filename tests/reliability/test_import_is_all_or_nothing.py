"""`cachedembed import` takes a whole file or nothing, and never lets a file vouch for a vector it cannot prove.

Every bad file below is refused through the real CLI with ONE `Error:` line naming the
file's line, exit code 1 and no traceback, and the target cache - SQLite, diskcache,
PostgreSQL, MariaDB and Redis - holds exactly what it held before. The bad record is always
the *last* entry or stats row of the file, after everything an importer writing as it
reads would already have written.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.exchange import export_cache
from cachedembed.stores import close_all, open_store
from tests.billing import BillingProvider, texts
from tests.reliability._helpers import PYTHON, fresh_cache_url, subprocess_env

Record = dict[str, Any]
Edit = Callable[[list[Record]], list[Record]]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def refused(result: Result) -> str:
    """The single error line of a refused command (asserting exit 1 and no traceback)."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def content(url: str) -> dict[str, Any]:
    """Everything a cache holds, keyed by namespace key, read through a fresh handle."""
    close_all()
    store = open_store(url)
    store.flush()
    out: dict[str, Any] = {}
    keys = {}
    for ns in store.namespaces():
        keys[ns.id] = ns.key
        out[ns.key] = {
            "spec": ns.spec.canonical,
            "dim": ns.dim,
            "entries": sorted(
                (e.id, e.check, e.tokens, e.flags, e.used, e.created, e.vec, e.text)
                for batch in store.iter_entries(ns.id)
                for e in batch
            ),
            "stats": {},
        }
    for ns_id, day, delta in store.stats_rows():
        out[keys[ns_id]]["stats"][day] = delta.as_tuple()
    close_all()
    return out


def read(path: Path) -> list[Record]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def write(path: Path, records: list[Record]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")  # ASCII: a lone surrogate travels as \ud800
    return path


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    """An export of documents with texts, queries without, and stats rows."""
    store = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    Cached(BillingProvider(), store, store_text=True).embed(texts(12))
    Cached(BillingProvider(), store).embed(texts(5, "q"), "query")
    Cached(BillingProvider(), store, store_text=True).embed(texts(12))  # hits -> stats
    export_cache(store, tmp_path / "good.jsonl.gz")
    close_all()
    return tmp_path / "good.jsonl.gz"


@pytest.fixture(params=["sqlite", "diskcache", "postgresql", "mariadb", "redis"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A cache on each backend already holding some entries and stats of its own."""
    with fresh_cache_url(request.param, tmp_path / "target") as url:
        (tmp_path / "target").mkdir(exist_ok=True)
        Cached(BillingProvider("bill-other"), url, store_text=True).embed(texts(6, "own"))
        close_all()
        yield url


def _last(kind: str, change: Callable[[Record], Record]) -> Edit:
    """Apply ``change`` to the last record of type ``kind``."""

    def edit(records: list[Record]) -> list[Record]:
        at = max(i for i, r in enumerate(records) if r["type"] == kind)
        return [*records[:at], change(dict(records[at])), *records[at + 1 :]]

    return edit


def _last_entry_with_text(change: Callable[[Record], Record]) -> Edit:
    def edit(records: list[Record]) -> list[Record]:
        at = max(i for i, r in enumerate(records) if r["type"] == "entry" and r["text"] is not None)
        return [*records[:at], change(dict(records[at])), *records[at + 1 :]]

    return edit


def _vector(r: Record, values: list[float]) -> Record:
    return {**r, "vec": base64.b64encode(np.array(values, "<f4").tobytes()).decode()}


def _second_declaration(change: Callable[[Record], Record]) -> Edit:
    """Declare the first namespace again (changed) just before the end record."""

    def edit(records: list[Record]) -> list[Record]:
        first = next(r for r in records if r["type"] == "namespace")
        end = {**records[-1], "namespaces": records[-1]["namespaces"] + 1}
        return [*records[:-1], change(dict(first)), end]

    return edit


def _spec(change: Callable[[Record], Record]) -> Edit:
    """Change the spec of the last namespace (its key re-derived, so only the field is wrong)."""
    return _last("namespace", lambda r: {**r, "spec": change(dict(r["spec"]))})


BAD_FILES: dict[str, tuple[Edit, str]] = {
    "text-does-not-hash-to-id": (
        _last_entry_with_text(lambda r: {**r, "text": r["text"] + " (forged)"}),
        "not the hash of its text",
    ),
    "id-beyond-64-bits": (
        _last("entry", lambda r: {**r, "id": 2**63}),
        "'id' is 9223372036854775808",
    ),
    "check-below-64-bits": (_last("entry", lambda r: {**r, "check": -(2**63) - 1}), "'check'"),
    "negative-tokens": (_last("entry", lambda r: {**r, "tokens": -1}), "'tokens' is -1"),
    "tokens-beyond-32-bits": (_last("entry", lambda r: {**r, "tokens": 2**31}), "'tokens'"),
    "bool-flags": (_last("entry", lambda r: {**r, "flags": True}), "'flags' is bool"),
    "float-created": (_last("entry", lambda r: {**r, "created": 1.5}), "'created' is float"),
    "day-after-year-9999": (_last("entry", lambda r: {**r, "used": 10**9}), "'used'"),
    "text-not-a-string": (_last("entry", lambda r: {**r, "text": 42}), "'text' is int"),
    "text-lone-surrogate": (_last("entry", lambda r: {**r, "text": "a\ud800b"}), "lone surrogate"),
    "vector-nan": (_last("entry", lambda r: _vector(r, [float("nan")] * 6)), "NaN"),
    "vector-short": (_last("entry", lambda r: _vector(r, [1.0] * 5)), "bytes, expected 24"),
    "vector-not-base64": (_last("entry", lambda r: {**r, "vec": "***"}), "not valid base64"),
    "stats-counter-negative": (_last("stats", lambda r: {**r, "hits": -3}), "'hits' is -3"),
    "stats-counter-huge": (_last("stats", lambda r: {**r, "misses": 2**64}), "'misses'"),
    "stats-seconds-nan": (
        _last("stats", lambda r: {**r, "provider_seconds": float("nan")}),
        "'provider_seconds'",
    ),
    "stats-day-negative": (_last("stats", lambda r: {**r, "day": -1}), "'day' is -1"),
    "namespace-dim-zero": (_last("namespace", lambda r: {**r, "dim": 0}), "'dim' is 0"),
    "namespace-dim-huge": (_last("namespace", lambda r: {**r, "dim": 10**7}), "'dim'"),
    "namespace-dim-string": (_last("namespace", lambda r: {**r, "dim": "6"}), "'dim' is str"),
    "namespace-dtype-unknown": (_spec(lambda s: {**s, "dtype": "float64"}), "dtype 'float64'"),
    "namespace-hash-unknown": (_spec(lambda s: {**s, "hash": "md5"}), "hash 'md5'"),
    "namespace-role-unknown": (_spec(lambda s: {**s, "role": "passage"}), "role 'passage'"),
    "namespace-identity-a-list": (
        _spec(lambda s: {**s, "identity": ["x"]}),
        "identity is not an object",
    ),
    "namespace-forged-key": (
        _last("namespace", lambda r: {**r, "key": "0" * 32}),
        "does not match its spec",
    ),
    "namespace-redeclared-other-dim": (
        _second_declaration(lambda r: {**r, "dim": 7}),
        "declared again",
    ),
}


def _rekeyed(records: list[Record]) -> list[Record]:
    """Re-derive edited namespace keys so a spec edit is caught by its own check, not the key's."""
    from cachedembed.keys import NamespaceSpec

    out = []
    renamed: dict[str, str] = {}
    for r in records:
        if r["type"] == "namespace" and r["key"] != "0" * 32:
            try:
                key = NamespaceSpec.from_dict(r["spec"]).key
            except Exception:
                key = r["key"]
            renamed[r["key"]] = key
            r = {**r, "key": key}
        elif r["type"] in ("entry", "stats"):
            r = {**r, "ns": renamed.get(r["ns"], r["ns"])}
        out.append(r)
    return out


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_record_is_refused_with_one_error_line_and_the_cache_unchanged(
    case: str, export_file: Path, target: str, tmp_path: Path
) -> None:
    edit, message = BAD_FILES[case]
    records = read(export_file)
    bad = edit(records)
    if case.startswith("namespace-") and case != "namespace-forged-key":
        bad = _rekeyed(bad)
    changed = next(n for n, (a, b) in enumerate(zip(records, bad, strict=False), 1) if a != b)
    path = write(tmp_path / "bad.jsonl.gz", bad)
    before = content(target)
    error = refused(run("import", "--cache", target, str(path)))
    assert message in error and f"bad.jsonl.gz:{changed}:" in error
    assert error.endswith("nothing was imported")
    assert content(target) == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[" * 100_000, "deep nesting"),
        ('{"type": "entry", "id": ' + "9" * 5000 + "}", "huge number"),
        ('{"type": "entry"', "not JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
    ids=["deep-nesting", "5000-digit-number", "cut-json", "not-an-object"],
)
def test_unparseable_lines_are_refused_by_line_number(
    export_file: Path, tmp_path: Path, line: str, message: str
) -> None:
    records = read(export_file)
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for r in records[:-1]:
            fh.write(json.dumps(r) + "\n")
        fh.write(line + "\n")
    url = f"sqlite:///{tmp_path / 'target.db'}"
    error = refused(run("import", "--cache", url, str(path)))
    assert message in error and f"bad.jsonl.gz:{len(records)}:" in error


def test_a_store_failure_during_the_write_pass_rolls_everything_back(
    export_file: Path, target: str, tmp_path: Path
) -> None:
    """The file is fine, but its last namespace disagrees with the target's dimension.

    That is found while writing, after the file's first namespaces and their entries went
    in: the one transaction around the import takes them back out.
    """
    records = read(export_file)
    last = [r for r in records if r["type"] == "namespace"][-1]
    from cachedembed.keys import NamespaceSpec

    store = open_store(target)
    store.set_dimension(store.namespace(NamespaceSpec.from_dict(last["spec"])), 99)
    close_all()
    before = content(target)
    error = refused(run("import", "--cache", target, str(export_file)))
    assert "99-d vectors" in error
    assert content(target) == before


@pytest.mark.parametrize("scheme", ["sqlite", "diskcache"])
def test_a_failed_import_into_a_new_cache_leaves_no_file(
    export_file: Path, tmp_path: Path, scheme: str
) -> None:
    bad = write(
        tmp_path / "bad.jsonl.gz", _last("entry", lambda r: {**r, "tokens": -1})(read(export_file))
    )
    where = tmp_path / "new-cache"
    url = f"sqlite:///{where}.db" if scheme == "sqlite" else f"diskcache://{where}"
    refused(run("import", "--cache", url, str(bad)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.jsonl.gz",
        "good.jsonl.gz",
        "source.db",
    ]


def test_an_entry_is_imported_only_when_its_text_hashes_to_its_id(
    export_file: Path, tmp_path: Path
) -> None:
    """A textless entry is trusted data; an entry with text is proven by it (and may be
    required to carry one with --require-text)."""
    url = f"sqlite:///{tmp_path / 'target.db'}"
    error = refused(run("import", "--require-text", "--cache", url, str(export_file)))
    assert "has no text" in error and "--require-text" in error
    assert not (tmp_path / "target.db").exists()

    with_texts = [r for r in read(export_file) if r["type"] != "entry" or r["text"] is not None]
    end = with_texts[-1]
    end["entries"] = sum(r["type"] == "entry" for r in with_texts)
    path = write(tmp_path / "texts.jsonl.gz", with_texts)
    result = run("import", "--require-text", "--cache", url, str(path))
    assert result.exit_code == 0, result.output
    assert f"{end['entries']} entries ({end['entries']} added" in result.output


def test_an_import_of_a_good_file_still_goes_in_whole(export_file: Path, target: str) -> None:
    before = content(target)
    result = run("import", "--cache", target, str(export_file))
    assert result.exit_code == 0, result.output
    after = content(target)
    assert set(before) < set(after) and all(after[k] == v for k, v in before.items())
    assert sum(len(ns["entries"]) for ns in after.values()) == 6 + 12 + 5


def test_a_gzip_bomb_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """1 MB of gzip that expands to one 1 GiB line: refused after reading 32 MiB of it."""

    member = gzip.compress(b"a" * 2**20, compresslevel=9)  # gzip members concatenate
    path = tmp_path / "bomb.jsonl.gz"
    header = {"type": "header", "format": "cachedembed-export", "version": 1}
    with path.open("wb") as fh:
        fh.write(gzip.compress((json.dumps(header) + "\n").encode()))
        for _ in range(1024):
            fh.write(member)
    assert path.stat().st_size < 2 * 10**6  # compact on disk
    measure = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'cachedembed', 'import', '--cache', sys.argv[1], sys.argv[2]],"
        " capture_output=True, text=True)\n"
        "print(p.returncode); print(p.stderr.strip()); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", measure, f"sqlite:///{tmp_path / 'target.db'}", str(path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
        check=True,
    ).stdout.splitlines()
    code, error, peak_kib = int(out[0]), out[1], int(out[-1])
    assert code == 1 and error.startswith("Error: ") and "longer than 32 MiB" in error, out
    assert "bomb.jsonl.gz:2:" in error and len(out) == 3
    assert peak_kib * 1024 < 150 * 2**20, f"peak RSS {peak_kib} KiB"
    assert not (tmp_path / "target.db").exists()
    assert sys.platform.startswith("linux")  # ru_maxrss is in KiB on Linux


def test_names_from_a_file_are_printed_escaped(export_file: Path, tmp_path: Path) -> None:
    """A model name with terminal escapes and a newline cannot recolour or forge output lines."""
    hostile = "evil\x1b[2J\nfake-line"

    def rename(records: list[Record]) -> list[Record]:
        # Entries with text are dropped: their ids are seeded by the namespace, so a
        # renamed namespace (rightly) no longer vouches for them.
        out = []
        for r in records:
            if r["type"] == "namespace":
                r = {
                    **r,
                    "spec": {**r["spec"], "identity": {**r["spec"]["identity"], "model": hostile}},
                }
            if r["type"] != "entry" or r["text"] is None:
                out.append(r)
        out[-1] = {**out[-1], "entries": sum(r["type"] == "entry" for r in out)}
        return _rekeyed(out)

    path = write(tmp_path / "hostile.jsonl.gz", rename(read(export_file)))
    url = f"sqlite:///{tmp_path / 'target.db'}"
    assert run("import", "--cache", url, str(path)).exit_code == 0
    for command in ("models", "stats"):
        output = run(command, "--cache", url).output
        assert "\x1b" not in output and "\nfake-line" not in output
        assert "evil\\x1b[2J\\nfake-line" in output
