"""Cached(obj) picks the adapter for obj's framework, without importing any framework for anybody else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cachedembed import Cached, ConfigurationError
from cachedembed.adapters import framework_of, wrap
from tests.conftest import FakeEF

ROOT = Path(__file__).resolve().parents[2]


def test_plain_functions_stay_plain_cached(sqlite_url: str) -> None:
    assert framework_of(FakeEF()) is None
    assert type(Cached(FakeEF(), sqlite_url)) is Cached


def test_frameworks_are_recognised_by_their_base_classes() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from llama_index.core.embeddings import MockEmbedding

    assert framework_of(DeterministicFakeEmbedding(size=4)) == "langchain"
    assert framework_of(MockEmbedding(embed_dim=4)) == "llamaindex"


def test_wrap_refuses_other_objects(sqlite_url: str) -> None:
    with pytest.raises(
        ConfigurationError, match="not a LangChain, LlamaIndex or sentence-transformers"
    ):
        wrap(FakeEF(), sqlite_url)


def test_wrapping_a_plain_function_imports_no_framework(tmp_path: Path) -> None:
    script = f"""
import sys
from cachedembed import Cached
from tests.conftest import FakeEF
Cached(FakeEF(), "sqlite:///{tmp_path / "c.db"}")(["a"])
loaded = [m for m in ("langchain_core", "llama_index", "sentence_transformers", "torch") if m in sys.modules]
assert not loaded, loaded
"""
    subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        check=True,
        timeout=60,
    )


def test_cachedembed_wrap_returns_the_adapter_for_a_framework_object_and_cached_otherwise(
    sqlite_url: str,
) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    import cachedembed
    from cachedembed.adapters.langchain import CachedEmbeddings

    adapted = cachedembed.wrap(DeterministicFakeEmbedding(size=4), sqlite_url)
    assert type(adapted) is CachedEmbeddings
    assert adapted.embed_query("q") == Cached(
        DeterministicFakeEmbedding(size=4), sqlite_url
    ).embed_query("q")
    assert type(cachedembed.wrap(FakeEF(), sqlite_url)) is Cached
