"""Reading OpenAI-shaped responses (shared by OpenAI, Jina, Voyage): order by index, base64, rejects."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from cachedembed import ProviderResponseError
from cachedembed.embedding_functions._remote import indexed_vectors


def b64(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def test_orders_by_index_and_decodes_base64_bit_exact() -> None:
    m = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
    m[0, 0] = -0.0
    data = [{"index": i, "embedding": b64(list(m[i]))} for i in (3, 0, 4, 1, 2)]
    out = indexed_vectors("p", data, 5)
    assert out.dtype == np.float32 and (out.view(np.uint32) == m.view(np.uint32)).all()


def test_float_lists_and_base64_mixed() -> None:
    out = indexed_vectors(
        "p", [{"index": 1, "embedding": b64([3, 4])}, {"index": 0, "embedding": [1, 2]}], 2
    )
    assert out.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    "data,message",
    [
        (
            [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}],
            "indexes are not 0..1",
        ),
        (
            [{"index": 0, "embedding": [1.0]}, {"index": 2, "embedding": [2.0]}],
            "indexes are not 0..1",
        ),
        ([{"index": 0, "embedding": [1.0]}], "expected 2 vectors, got 1"),
        (
            [{"index": 0, "embedding": "not base64!"}, {"index": 1, "embedding": [1.0]}],
            "not base64",
        ),
        (
            [{"index": 0, "embedding": "AAA="}, {"index": 1, "embedding": "AAA="}],
            "not a whole number",
        ),
        ([{"index": 0, "embedding": ""}, {"index": 1, "embedding": ""}], "dimension 0"),
        ([{"index": 0, "embedding": b64([1, 2])}, {"index": 1, "embedding": b64([1])}], "ragged"),
        (
            [
                {"index": 0, "embedding": b64([1, float("inf")])},
                {"index": 1, "embedding": b64([1, 2])},
            ],
            "NaN or infinite",
        ),
        ([{"index": "0", "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}], "not an integer"),
        ({"data": []}, "expected a 'data' list"),
    ],
)
def test_malformed_responses_raise(data: object, message: str) -> None:
    with pytest.raises(ProviderResponseError, match=message):
        indexed_vectors("p", data, 2)
