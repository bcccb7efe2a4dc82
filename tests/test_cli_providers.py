"""`cachedembed providers` lists only options that can be passed, in the syntax that passes them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cachedembed.cli import main
from cachedembed.embedding_functions import from_spec

SAMPLE = {"true|false": ("true", True), "TEXT": ("cpu", "cpu"), "INTEGER": ("3", 3)}


def advertised() -> list[tuple[str, str, str]]:
    """(spec prefix, option name, value kind) for every option `providers` shows."""
    out = CliRunner().invoke(main, ["providers"]).output
    found = []
    for example in re.findall(r"^ +options: (\S+)$", out, re.MULTILINE):
        head, _, query = example.partition("?")
        for pair in query.split("&"):
            name, _, kind = pair.partition("=")
            found.append((head, name, kind))
    return found


def test_the_local_providers_advertise_their_options() -> None:
    names = {(head.split(":")[0], name) for head, name, _ in advertised()}
    assert {
        ("sentence-transformers", "normalize_embeddings"),
        ("sentence-transformers", "device"),
        ("default", "device"),
        ("instructor", "instruction"),
        ("instructor", "query_instruction"),
    } <= names


@pytest.mark.parametrize(("head", "name", "kind"), advertised())
def test_every_advertised_option_is_accepted_as_shown(head: str, name: str, kind: str) -> None:
    text, value = SAMPLE[kind]
    model = head.replace("MODEL_NAME_OR_PATH", "some/model")
    ef = from_spec(f"{model}?{name}={text}")
    assert ef.get_config()[name] == value


# Slow: loads the real all-MiniLM-L6-v2 model (torch, sentence-transformers).
@pytest.mark.slow
def test_an_option_of_the_cli_reaches_the_vectors(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a sentence to embed\nanother one\n")
    out = tmp_path / "v.npy"
    spec = "sentence-transformers:all-MiniLM-L6-v2?normalize_embeddings=true"
    result = CliRunner().invoke(
        main,
        [
            "embed",
            str(tmp_path / "in.txt"),
            "-m",
            spec,
            "--cache",
            f"sqlite:///{tmp_path / 'c.db'}",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert np.allclose(np.linalg.norm(np.load(out), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (
            "sentence-transformers:m?normalize=true",
            "Error: sentence-transformers: unknown option 'normalize'; "
            "options: device=TEXT, normalize_embeddings=true|false",
        ),
        (
            "sentence-transformers:m?normalize_embeddings=maybe",
            "Error: sentence-transformers: option normalize_embeddings must be true or false, got 'maybe'",
        ),
    ],
)
def test_an_option_that_cannot_be_passed_is_one_error_line(
    spec: str, error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("x\n")
    result = CliRunner().invoke(main, ["embed", "in.txt", "-m", spec])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    (line,) = result.output.splitlines()
    assert line.startswith(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # no cache created
