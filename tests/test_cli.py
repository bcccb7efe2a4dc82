"""The command line: `embed` runs the main job through the cache; `stats` shows what it saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cachedembed.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_embed_twice_then_stats_in_real_processes(tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\nsecond line\nfirst line\n\nthird line\n", encoding="utf-8")
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cachedembed", *args],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )

    def cli(*args: str) -> str:
        return run(*args).stdout

    first = run("embed", str(texts), "--cache", cache, "--out", str(tmp_path / "v.npy"))
    assert (
        first.stdout.strip() == f"4 texts, 384 dimensions: 1 hit, 3 misses -> {tmp_path / 'v.npy'}"
    )
    assert "skipped 1 blank line (line 4)" in first.stderr
    second = cli("embed", str(texts), "--cache", cache)
    assert second.strip() == "4 texts, 384 dimensions: 4 hits, 0 misses"
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert vectors[0].tobytes() == vectors[2].tobytes()

    data = json.loads(cli("stats", "--cache", cache, "--json"))
    (row,) = data["models"]
    assert (row["provider"], row["model"], row["role"]) == (
        "sentence-transformers",
        "all-MiniLM-L6-v2",
        "document",
    )
    assert (row["texts"], row["hits"], row["misses"], row["calls"]) == (8, 5, 3, 2)
    assert row["dollars_spent"] == 0.0
    table = cli("stats", "--cache", cache)
    assert "sentence-transformers/all-MiniLM-L6-v2" in table and "62.5%" in table


def test_embed_jsonl_field_and_query_role(tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "body": f"doc {i}"}) for i in range(3)) + "\n")
    cache = f"sqlite:///{tmp_path / 'c.db'}"
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "embed",
            str(src),
            "--field",
            "body",
            "--cache",
            cache,
            "--query",
            "--out",
            str(tmp_path / "v.jsonl"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "3 texts, 384 dimensions: 0 hits, 3 misses" in out.output
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and len(rows[0]) == 384
    bad = runner.invoke(main, ["embed", str(src), "--field", "missing", "--cache", cache])
    assert bad.exit_code != 0 and "no string field 'missing'" in bad.output


def test_unknown_provider_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("x\n")
    out = CliRunner().invoke(main, ["embed", str(tmp_path / "t.txt"), "--model", "nope:model"])
    assert out.exit_code == 1
    assert "Error: unknown provider 'nope' in --model 'nope:model'" in out.output


def test_providers_lists_the_default() -> None:
    out = CliRunner().invoke(main, ["providers"])
    assert out.exit_code == 0 and "default" in out.output


def test_embed_reports_this_runs_hits_and_misses_not_other_writers_of_a_shared_cache(
    tmp_path: Path,
) -> None:
    from cachedembed import Cached
    from cachedembed.embedding_functions import from_spec
    from cachedembed.stores import open_store
    from tests.providers.loopback import LoopbackServer, Reply, Request
    from tests.providers.test_tei import TeiFake

    cache = f"sqlite:///{tmp_path / 'shared.db'}"
    tei = TeiFake(key="")
    other_writer: list[Cached] = []

    def handler(request: Request) -> Reply:
        if request.method == "POST" and other_writer:
            # Another process on the shared cache, mid-run: five hits, flushed at once.
            other_writer[0].embed(["alpha"] * 5)
            other_writer[0].flush()
        return tei(request)

    texts = tmp_path / "texts.txt"
    with LoopbackServer(handler) as server:
        spec = f"tei:{server.url}"
        texts.write_text("alpha\nbeta\n", encoding="utf-8")
        first = CliRunner().invoke(main, ["embed", str(texts), "--cache", cache, "--model", spec])
        assert first.stdout.strip() == "2 texts, 8 dimensions: 0 hits, 2 misses"
        other_writer.append(Cached(from_spec(spec), open_store(cache, shared=False)))
        texts.write_text("alpha\nbeta\ngamma\n", encoding="utf-8")
        out = CliRunner().invoke(main, ["embed", str(texts), "--cache", cache, "--model", spec])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "3 texts, 8 dimensions: 2 hits, 1 miss"
