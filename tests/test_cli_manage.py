"""The accounting and management commands, run on real caches: numbers checked, not just exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.stores import close_all, open_store
from cachedembed.stores import migrate as schema
from cachedembed.stores.base import EntryBatch
from cachedembed.usage import UsageDelta, day_iso, today
from tests.billing import PRICE, BillingProvider, fill, record_history, texts

pytestmark = pytest.mark.usefixtures("billing_price")

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cachedembed ARGS`` in a real child process running this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cachedembed", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def used_cache(url: str) -> BillingProvider:
    """Two passes over 30 texts plus 4 queries through the billing provider."""
    provider = BillingProvider()
    ef = Cached(provider, url)
    ef.embed(texts(30))
    ef.embed(texts(30))
    ef.embed(texts(4, "q"), "query")
    ef.flush()
    return provider


def test_stats_prints_a_per_model_table_whose_totals_match_the_provider(disk_url: str) -> None:
    provider = used_cache(disk_url)
    billed = sum(provider.billed)
    data = json.loads(run("stats", "--cache", disk_url, "--json").output)
    assert data["total"]["tokens_embedded"] == billed
    assert data["total"]["dollars_spent"] == billed * PRICE / 1e6
    assert (data["total"]["hits"], data["total"]["misses"]) == (30, 34)
    table = run("stats", "--cache", disk_url).output.splitlines()
    assert table[1].split()[:2] == ["model", "role"]
    doc = table[2].split()
    assert doc[:5] == ["test-billing/bill-small", "document", "60", "30", "50.0%"]
    total = table[-1].split()
    assert total[:6] == [
        "total",
        "64",
        "30",
        "46.9%",
        f"{billed:,}",
        f"{data['total']['tokens_saved']:,}",
    ]
    assert total[6] == f"${billed * PRICE / 1e6:.6f}"


def test_stats_since_model_and_by_day(disk_url: str) -> None:
    store = open_store(disk_url)
    ns = fill(store, 5)
    other = fill(store, 5, model="bill-other", seed=2)
    record_history(
        store,
        {
            **{
                (ns.id, today() - k): UsageDelta(
                    misses=10, tokens_embedded=1000, hits=k, tokens_saved=100 * k
                )
                for k in range(10)
            },
            (other.id, today()): UsageDelta(misses=1, tokens_embedded=7),
        },
    )
    week = json.loads(
        run("stats", "--cache", disk_url, "--since", "7d", "--model", "small", "--json").output
    )
    assert [m["model"] for m in week["models"]] == ["bill-small"]
    assert week["total"]["tokens_embedded"] == 7000 and week["total"]["tokens_saved"] == 100 * sum(
        range(7)
    )
    by_day = run(
        "stats",
        "--cache",
        disk_url,
        "--since",
        day_iso(today() - 2),
        "--model",
        "small",
        "--by",
        "day",
    )
    lines = by_day.output.splitlines()
    assert [line.split()[0] for line in lines[2:5]] == [day_iso(today() - k) for k in (2, 1, 0)]
    assert lines[2].split()[1:3] == ["12", "2"]  # texts, hits on the oldest day
    assert lines[2].endswith(
        "  " + "█" * 25 + "░" * 5
    )  # 1000 spent, 200 saved: the busiest day, full width
    assert lines[4].endswith("  " + "█" * 25)  # today: 1000 spent, nothing saved
    assert lines[5].startswith("----------")
    bad = CliRunner().invoke(main, ["stats", "--cache", disk_url, "--since", "last tuesday"])
    assert bad.exit_code == 2 and "neither a number of days" in bad.output


def test_models_and_its_alias_ls(disk_url: str) -> None:
    used_cache(disk_url)
    fill(open_store(disk_url), 3, model="bill-old", dim=4, days=[today() - 12])
    out = run("models", "--cache", disk_url).output.splitlines()
    assert out[0] == f"cache: {open_store(disk_url).url}"
    rows = {(line.split()[0], line.split()[2]): line.split() for line in out[2:]}
    assert rows[("test-billing/bill-small", "document")][1:8] == [
        "dimensions=6",
        "document",
        "text",
        "6",
        "float32",
        "30",
        "720",
    ]
    old = rows[("test-billing/bill-old", "document")]
    assert old[-2:] == [day_iso(today() - 12)] * 2
    listed = json.loads(run("ls", "--cache", disk_url, "--json").output)
    assert sorted((m["model"], m["role"], m["entries"], m["bytes"]) for m in listed) == [
        ("bill-old", "document", 3, 48),
        ("bill-small", "document", 30, 720),
        ("bill-small", "query", 4, 96),
    ]


def test_prune_dry_run_then_for_real(disk_url: str) -> None:
    store = open_store(disk_url)
    ns = fill(store, 200, days=[today() - 60, today()])
    dry = run("prune", "--cache", disk_url, "--older-than", "30d", "--dry-run")
    assert (
        "test-billing/bill-small (document): would remove 100 entries (3.2 kB), 100 left (3.2 kB)"
        in dry.output
    )
    assert sum(len(b) for b in store.iter_entries(ns.id)) == 200
    done = run("prune", "--cache", disk_url, "--older-than", "30d")
    assert "total: removed 100 entries (3.2 kB), 3.2 kB left" in done.output
    by_size = json.loads(run("prune", "--cache", disk_url, "--max-size", "1kB", "--json").output)
    assert by_size["removed_entries"] == 100 - 1000 // 32 and by_size["removed_bytes"] == 32 * 69
    assert sum(len(b) for b in store.iter_entries(ns.id)) == 31
    assert CliRunner().invoke(main, ["prune", "--cache", disk_url]).exit_code == 2
    assert (
        "not a size"
        in CliRunner().invoke(main, ["prune", "--cache", disk_url, "--max-size", "big"]).output
    )


def test_export_then_import_moves_the_stats_between_backends(tmp_path: Path) -> None:
    sqlite_url, disk_url = f"sqlite:///{tmp_path / 'a.db'}", f"diskcache://{tmp_path / 'dc'}"
    used_cache(sqlite_url)
    file = tmp_path / "cache.jsonl.gz"
    out = run("export", "--cache", sqlite_url, str(file)).output
    assert out == f"exported 2 namespaces, 34 entries (0 with text), 2 stats rows -> {file}\n"
    first = run("import", "--cache", disk_url, str(file)).output
    assert first == (
        "imported 2 namespaces (2 new), 34 entries (34 added, 0 already present), "
        "2 stats rows (2 added, 0 skipped)\n"
    )
    again = run("import", "--cache", disk_url, str(file)).output
    assert "(0 added, 34 already present), 2 stats rows (0 added, 2 skipped)" in again
    a = json.loads(run("stats", "--cache", sqlite_url, "--json").output)
    b = json.loads(run("stats", "--cache", disk_url, "--json").output)
    assert a["models"] == b["models"] and a["total"] == b["total"]
    (tmp_path / "junk.gz").write_bytes(b"junk")
    refused = CliRunner().invoke(main, ["import", "--cache", disk_url, str(tmp_path / "junk.gz")])
    assert refused.exit_code == 1 and "not a readable cachedembed export" in refused.output


def test_verify_exits_nonzero_on_bad_entries_and_fix_removes_them(disk_url: str) -> None:
    Cached(BillingProvider(), disk_url).embed(texts(10))
    store = open_store(disk_url)
    ns = store.namespaces()[0]
    store.write_entries(
        ns.id,
        EntryBatch(
            ids=[5], checks=[5], vectors=np.zeros((1, 2), np.float32), tokens=[1], flags=[0]
        ),
    )
    bad = CliRunner().invoke(main, ["verify", "--cache", disk_url])
    assert bad.exit_code == 1
    assert bad.output.splitlines() == [
        f"bad entry 5 in test-billing/bill-small ({ns.key[:8]}): 8 bytes, expected 24 (6 x float32)",
        "checked 11 entries: 1 bad",
    ]
    assert run("verify", "--cache", disk_url, "--fix").output.endswith(
        "checked 11 entries: 1 bad, 1 removed\n"
    )
    assert run("verify", "--cache", disk_url).output == "checked 10 entries: 0 bad\n"


def test_migrate_reports_from_and_to(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    schema.upgrade(engine, "0001")
    engine.dispose()
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert run("migrate", "--cache", url).output == f"schema revision 0001 -> {schema.HEAD}\n"
    assert (
        run("migrate", "--cache", url).output
        == f"schema revision {schema.HEAD}: already up to date\n"
    )
    assert (
        "nothing to migrate" in run("migrate", "--cache", f"diskcache://{tmp_path / 'dc'}").output
    )


def test_stats_on_a_100k_entry_cache_in_a_real_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    store = open_store(url)
    ns = fill(store, 100_000)
    record_history(
        store,
        {
            (ns.id, today()): UsageDelta(
                calls=400,
                misses=100_000,
                tokens_embedded=500_000,
                hits=250_000,
                tokens_saved=1_250_000,
            )
        },
    )
    close_all()
    proc = cli_process("stats", "--cache", url, "--json")
    assert proc.returncode == 0, proc.stderr
    total = json.loads(proc.stdout)["total"]
    assert (total["texts"], total["hits"], total["tokens_saved"]) == (350_000, 250_000, 1_250_000)
    assert total["dollars_saved"] == 1_250_000 * PRICE / 1e6
    listed = cli_process("ls", "--cache", url, "--json")
    assert json.loads(listed.stdout)[0]["entries"] == 100_000


def test_embed_store_text_then_reembed_with_another_model(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    (tmp_path / "in.txt").write_text("\n".join(texts(12)) + "\n", encoding="utf-8")
    out = run(
        "embed",
        str(tmp_path / "in.txt"),
        "--cache",
        url,
        "--model",
        "test-billing:bill-small",
        "--store-text",
    )
    assert out.stdout == "12 texts, 6 dimensions: 0 hits, 12 misses\n"
    moved = run(
        "reembed", "--cache", url, "--model", "bill-small", "--with", "test-billing:bill-large"
    )
    assert moved.output == (
        "re-embedded 12 texts from 1 namespace with test-billing:bill-large: "
        "12 embedded, 0 already cached; 0 entries had no stored text\n"
    )
    file = tmp_path / "x.gz"
    assert "24 entries (24 with text)" in run("export", "--cache", url, str(file)).output
    listed = json.loads(run("ls", "--cache", url, "--json").output)
    assert sorted((m["model"], m["role"], m["entries"]) for m in listed) == [
        ("bill-large", "document", 12),
        ("bill-small", "document", 12),  # `embed` registers only the role it embeds
    ]
