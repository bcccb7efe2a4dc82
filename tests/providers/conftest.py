"""Fixtures shared by the provider wire-format tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache_url(tmp_path: Path) -> str:
    """One real SQLite cache: the backends are covered by the core tests, the wire by these."""
    return f"sqlite:///{tmp_path / 'cache.db'}"
