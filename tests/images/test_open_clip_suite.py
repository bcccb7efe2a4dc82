"""The real-OpenCLIP tests, run in the image venv (they cannot share this one).

open_clip imports torchvision, and torchvision must match its torch build exactly; the
main venv's CPU torch has no matching torchvision here, and torchvision's presence would
break transformers. So ``make install-images`` builds ``.venv-images`` from
``requirements-images.lock`` and this test runs ``tests/images/open_clip`` there. A
missing venv is a failure, never a skip: the feature would otherwise go untested.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(os.environ.get("CACHEDEMBED_IMAGES_PYTHON", REPO / ".venv-images" / "bin" / "python"))


@pytest.mark.slow
def test_open_clip_suite_passes_in_the_image_venv() -> None:
    assert PYTHON.exists(), (
        f"{PYTHON} is missing: run `make install-images` (the open_clip tests run in that venv)"
    )
    env = {
        **os.environ,
        "CACHEDEMBED_IMAGES_VENV": "1",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/images/open_clip"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
        check=False,
    )
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, report
