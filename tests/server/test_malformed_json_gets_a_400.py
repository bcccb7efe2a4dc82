"""Malformed JSON of any shape gets a 400 (422 on TEI routes) with a JSON error body, never a
500, and nothing reaches the provider or the log's tracebacks."""

from __future__ import annotations

import logging

import pytest
import requests

from .conftest import Served

BODIES = {
    "100,000 nested brackets": b"[" * 100_000,
    "100,000 nested objects": b'{"a":' * 100_000,
    "nested inside a valid request": b'{"model": "small", "input": ' + b"[" * 100_000,
    "not JSON": b"model=small&input=x",
    "truncated": b'{"model": "small", "input": "x',
    "a lone backslash at the end": b'{"model": "small", "input": "x\\',
    "not UTF-8": b'{"model": "small", "input": "\xff\xfe"}',
    "a top-level list": b'["small", "x"]',
    "a top-level string": b'"x"',
    "a top-level number": b"1",
    "null": b"null",
    "wrong types": b'{"model": 1, "input": {"a": "b"}}',
    "NaN": b'{"model": "small", "input": "x", "dimensions": NaN}',
    "Infinity": b'{"model": "small", "input": "x", "dimensions": -Infinity}',
    "a float overflowing to infinity": b'{"model": "small", "input": "x", "dimensions": 1e999}',
    "a 100,000-digit integer": b'{"model": "small", "input": "x", "dimensions": '
    + b"9" * 100_000
    + b"}",
    "a huge dimensions": b'{"model": "small", "input": "x", "dimensions": 99999999999}',
    "a lone surrogate": b'{"model": "small", "input": ["ok", "\\ud800"]}',
    "millions of empty lists": b'{"model": "small", "input": [' + b"[]," * 1_000_000 + b"[]]}",
}


@pytest.mark.parametrize("body", BODIES.values(), ids=list(BODIES))
def test_openai_routes_answer_400_in_openais_error_shape(
    served: Served, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        response = requests.post(
            f"{served.url}/v1/embeddings",
            data=body,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert served.small.sent == []


@pytest.mark.parametrize(
    "body",
    [BODIES["100,000 nested brackets"], BODIES["NaN"], b'{"inputs": ["\\udfff"]}'],
    ids=["nested", "NaN", "lone surrogate"],
)
def test_tei_routes_answer_422_in_teis_error_shape(served: Served, body: bytes) -> None:
    for path in ("/embed", "/"):
        response = requests.post(
            f"{served.url}{path}", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error_type"] == "Validation"
    assert served.small.sent == []


def test_strings_holding_brackets_and_commas_are_not_counted_as_structure(served: Served) -> None:
    text = "[" * 1000 + ",{" * 5000 + '\\"'
    response = requests.post(
        f"{served.url}/v1/embeddings", json={"model": "small", "input": [text, "b"]}
    )
    assert response.status_code == 200, response.text
    assert served.small.sent == [text, "b"]


def test_a_huge_integer_in_a_field_the_api_does_not_know_is_ignored_like_any_extra_field(
    served: Served,
) -> None:
    # TEI's schema allows extra fields: a 28-digit number in one must not fail the request.
    body = b'{"inputs": "a", "extra": 5839231139887577381572968448}'
    response = requests.post(
        f"{served.url}/embed", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert served.small.sent == ["a"]
    # Where an integer is wanted, such a number is refused as any out-of-range value.
    wide = b'{"model": "small", "input": ["b"], "dimensions": 5839231139887577381572968448}'
    response = requests.post(
        f"{served.url}/v1/embeddings", data=wide, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert served.small.sent == ["a"]
