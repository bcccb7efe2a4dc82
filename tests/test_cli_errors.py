"""A user's mistake gets one ``Error: ...`` line naming the problem and the fix, a non-zero
exit status and no traceback, and nothing is written: no cache, no output file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.errors import ConfigurationError
from cachedembed.stores import open_store
from tests.conftest import FakeEF

REPO = Path(__file__).resolve().parents[1]

# (command line, the one Error line it must print, or its start)
MISTAKES = {
    "missing input file": (
        ["embed", "missing.txt"],
        "Error: no such file: missing.txt (give the path of a text or .jsonl file, or - for stdin)",
    ),
    "input not UTF-8": (
        ["embed", "latin1.txt"],
        "Error: latin1.txt:2: not UTF-8 text (byte 0xe9); convert the file, e.g. iconv -f latin1 -t utf-8",
    ),
    "malformed JSONL line": (
        ["embed", "docs.jsonl"],
        "Error: docs.jsonl:3: not valid JSON (",
    ),
    "diskcache URL with one slash": (
        ["embed", "texts.txt", "--cache", "diskcache:/x"],
        "Error: cache URL diskcache:/x lacks the '//' after 'diskcache:': "
        "write diskcache://x (relative folder) or diskcache:///x (absolute folder)",
    ),
    "memory URL without slashes": (
        ["embed", "texts.txt", "--cache", "memory:"],
        "Error: cache URL memory: lacks the '//' after 'memory:': write memory:// (or memory://NAME)",
    ),
    "sqlite URL with one slash": (
        ["embed", "texts.txt", "--cache", "sqlite:/x.db"],
        "Error: cache URL sqlite:/x.db lacks the '//' after 'sqlite:': "
        "write sqlite:///x.db (relative path) or sqlite:////x.db (absolute path)",
    ),
    "postgres scheme": (
        ["stats", "--cache", "postgres://bob:hunter2@db.example/cache"],
        "Error: cache URL scheme 'postgres' is not supported: "
        "write postgresql+psycopg://bob:***@db.example/cache",
    ),
    "unknown cache scheme": (
        ["models", "--cache", "mongodb://localhost"],
        "Error: unsupported cache URL scheme 'mongodb': use sqlite:///path.db, diskcache:///dir, "
        "postgresql+psycopg://..., mysql+pymysql://..., redis://HOST/0 or memory://",
    ),
    "model not on disk while offline": (
        ["embed", "texts.txt", "--model", "sentence-transformers:no-such-org/no-such-model"],
        "Error: cannot load sentence-transformers model 'no-such-org/no-such-model': it is not in "
        "the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE). Remedy: download it "
        "once with network access (unset HF_HUB_OFFLINE), or give the path of a local model folder",
    ),
    "--out with another extension": (
        ["embed", "texts.txt", "--out", "out.csv"],
        "Error: Invalid value for --out: 'out.csv' must end in .npy (a float32 matrix) "
        "or .jsonl (one JSON array per line)",
    ),
    "--since before the year 1": (
        ["stats", "--since", "99999999d"],
        "Error: Invalid value for --since: '99999999d' reaches back before the year 1: give at most ",
    ),
    "--older-than before the year 1": (
        ["prune", "--older-than", "99999999d"],
        "Error: Invalid value for --older-than: '99999999d' reaches back before the year 1: ",
    ),
    "zero batch size": (
        ["embed", "texts.txt", "--batch-size", "0"],
        "Error: Invalid value for '--batch-size': 0 is not in the range x>=1.",
    ),
    "negative batch size": (
        ["embed", "texts.txt", "--batch-size", "-1"],
        "Error: Invalid value for '--batch-size': -1 is not in the range x>=1.",
    ),
    "zero reembed batch size": (
        ["reembed", "--with", "default", "--batch-size", "0"],
        "Error: Invalid value for '--batch-size': 0 is not in the range x>=1.",
    ),
    "only blank lines": (
        ["embed", "blank.txt"],
        "Error: blank.txt contains no texts (only blank lines)",
    ),
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the input files the mistakes name."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "texts.txt").write_text("first\nsecond\n", encoding="utf-8")
    (work / "latin1.txt").write_bytes("plain\ncaf\u00e9\n".encode("latin-1"))
    (work / "docs.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n')
    (work / "blank.txt").write_text("\n  \n\n")
    monkeypatch.chdir(work)
    return work


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def assert_one_error_line(result: Result, expected: str) -> None:
    assert result.exit_code != 0
    # A SystemExit is click's clean exit; any other exception would have been a traceback.
    assert isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(expected), errors[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_is_one_error_line_and_writes_nothing(
    mistake: str, workdir: Path, tmp_path: Path
) -> None:
    args, expected = MISTAKES[mistake]
    before = files_under(tmp_path)
    result = CliRunner().invoke(main, args)
    assert_one_error_line(result, expected)
    assert files_under(tmp_path) == before  # no cache, no folder named sqlite:, no out.csv.npy


def test_a_mistake_in_a_real_process_prints_only_the_error_line(workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cachedembed",
            "embed",
            "texts.txt",
            "-m",
            "sentence-transformers:nope/nope",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("Error: cannot load sentence-transformers model 'nope/nope'")


@pytest.mark.parametrize("url", ["diskcache:/x", "memory:", "sqlite:/x.db", "postgres://h/db"])
def test_the_python_api_refuses_the_same_urls(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="write "):
        open_store(url)
    with pytest.raises(ConfigurationError, match="write "):
        Cached(FakeEF(), url)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("batch_size", [0, -1, True, 2.5])
def test_the_python_api_refuses_a_batch_size_that_is_not_positive(batch_size: object) -> None:
    with pytest.raises(ConfigurationError, match="batch_size must be a positive integer"):
        Cached(FakeEF(), "memory://", batch_size=batch_size)  # type: ignore[arg-type]
