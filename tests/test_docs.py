"""The README and docs/ show what the commands really print: every console block is re-run.

``tools/docsync.py --check`` runs each page's console blocks in a scratch folder and
compares what they print today with what the page shows (durations, dates and timestamps
masked). A drift fails here; ``make docs`` rewrites the pages from a real run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import docsync  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("page", docsync.PAGES)
def test_every_shown_output_comes_from_a_real_run(page: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "docsync.py"), "--check", page],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"{page} drifted from a real run (make docs):\n{done.stdout}{done.stderr}"
    )


def test_the_masks_hide_only_what_differs_between_honest_runs() -> None:
    shown = ["total   24  14  58.3%  $0.00  1.3s  2026-11-24", '"provider_seconds": 1.33,']
    today = ["total 24 14 58.3% $0.00 0.2s 2026-12-01", '"provider_seconds": 0.7,']
    assert docsync.masked(shown) == docsync.masked(today)
    assert docsync.masked(["24 hits"]) != docsync.masked(["25 hits"])


def test_a_block_marked_skip_is_not_run(tmp_path: Path) -> None:
    lines = ["<!-- docsync: skip runs until stopped -->", "```console", "$ sleep 1000", "```"]
    (block,) = docsync.blocks(lines)
    assert block.skip and block.lang == "console"
