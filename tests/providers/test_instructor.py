"""InstructorEmbeddingFunction on a tiny model the test builds and saves locally (no downloads).

The model is an Instructor-shaped sentence-transformers folder: a randomly initialised
2-layer BERT with a locally written WordPiece vocabulary, mean pooling that excludes the
prompt tokens (as the hkunlp/instructor-* configs do). Real sentence-transformers code
loads it and applies the instruction with ``encode(prompt=...)``, so the tests prove the
instruction reaches the model, differs per role, and separates cache namespaces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cachedembed import Cached
from cachedembed.embedding_functions import InstructorEmbeddingFunction, from_spec
from cachedembed.embedding_functions.instructor import DOCUMENT_INSTRUCTION, QUERY_INSTRUCTION
from cachedembed.embedding_functions.sentence_transformer import load_model

WORDS = [
    "represent",
    "the",
    "document",
    "for",
    "retrieval",
    "question",
    "retrieving",
    "supporting",
    "documents",
    "cats",
    "dogs",
    "sky",
    "is",
    "blue",
    "sat",
    "on",
    "mat",
    "what",
    "color",
]
TEXTS = ["cats sat on the mat", "the sky is blue", "what color is the sky?"]


def build_tiny_instructor(folder: Path) -> Path:
    """Write a tiny Instructor-style sentence-transformers model to ``folder`` and return its path."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = folder / "bert"
    raw.mkdir(parents=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789:.,?!'")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *dict.fromkeys(WORDS + chars + [f"##{c}" for c in chars]),
    ]
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(raw)
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=64)
    pooling = Pooling(
        transformer.get_embedding_dimension(), pooling_mode="mean", include_prompt=False
    )
    path = folder / "tiny-instructor"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_instructor(tmp_path_factory.mktemp("models")))


def test_instruction_per_role_reaches_the_model(model_path: str) -> None:
    ef = InstructorEmbeddingFunction(model_name=model_path)
    model = load_model(model_path, "cpu")
    docs = np.stack(ef(TEXTS))
    queries = np.stack(ef.embed_query(TEXTS))
    assert docs.dtype == np.float32 and docs.shape == (3, 16)
    assert np.array_equal(docs, model.encode(TEXTS, prompt=DOCUMENT_INSTRUCTION))
    assert np.array_equal(queries, model.encode(TEXTS, prompt=QUERY_INSTRUCTION))
    bare = model.encode(TEXTS)
    assert not np.allclose(docs, bare) and not np.allclose(queries, docs)


def test_instructions_overridable_chroma_single_instruction_applies_to_both(
    model_path: str,
) -> None:
    model = load_model(model_path, "cpu")
    single = InstructorEmbeddingFunction(model_name=model_path, instruction="Represent the sky: ")
    assert np.array_equal(
        np.stack(single.embed_query(TEXTS[:1])),
        model.encode(TEXTS[:1], prompt="Represent the sky: "),
    )
    split = InstructorEmbeddingFunction(
        model_name=model_path, instruction="Represent the sky: ", query_instruction="Ask: "
    )
    assert np.array_equal(
        np.stack(split.embed_query(TEXTS[:1])), model.encode(TEXTS[:1], prompt="Ask: ")
    )
    assert np.array_equal(
        np.stack(split(TEXTS[:1])), model.encode(TEXTS[:1], prompt="Represent the sky: ")
    )


def test_cached_roles_and_instructions_are_separate_namespaces(
    model_path: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    cached = Cached(InstructorEmbeddingFunction(model_name=model_path), url)
    docs = np.stack(cached(TEXTS))
    assert np.array_equal(np.stack(cached(TEXTS)), docs)
    queries = np.stack(cached.embed_query(TEXTS))
    assert not np.allclose(queries, docs), "a query was served the document vector"
    other = Cached(
        InstructorEmbeddingFunction(model_name=model_path, instruction="Represent the sky: "), url
    )
    assert not np.allclose(np.stack(other(TEXTS)), docs), (
        "a changed instruction was served stale vectors"
    )
    stats = cached.stats()
    assert stats["hits"] == 3 and stats["misses"] == 6
    assert stats["tokens_embedded_estimated"] == stats["tokens_embedded"] > 0


def test_identity_config_and_spec(model_path: str) -> None:
    ef = InstructorEmbeddingFunction(
        model_name=model_path, device="cpu", instruction="Represent the sky: "
    )
    assert ef.cache_identity("document")["encode"] == {"prompt": "Represent the sky: "}
    assert "device" not in ef.cache_identity("document")
    rebuilt = InstructorEmbeddingFunction.build_from_config(ef.get_config())
    assert rebuilt.cache_identity("query") == ef.cache_identity("query")
    spec = from_spec("instructor:hkunlp/instructor-base")
    assert (
        isinstance(spec, InstructorEmbeddingFunction)
        and spec.model_name == "hkunlp/instructor-base"
    )
    assert spec.cache_identity("query")["encode"] == {"prompt": QUERY_INSTRUCTION}
