"""The served OpenAPI description is the contract: schemathesis fuzzes the app against it.

Every operation gets generated valid and invalid requests (bounded); each answer must not
be a 5xx and must match the documented status codes, content types, headers and schemas.
"""

from __future__ import annotations

import base64

import numpy as np
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance
from starlette.testclient import TestClient

from cachedembed import Cached
from cachedembed.server import Upstream, create_app
from cachedembed.server.openapi import OPENAPI
from cachedembed.stores import open_store

from .conftest import Served
from .harness import ScriptedProvider, scripted_vector


def test_the_app_serves_its_description(served: Served) -> None:
    assert requests.get(f"{served.url}/openapi.json").json() == OPENAPI


# Built at import (schemathesis parametrizes at collection): a private in-memory store,
# so the per-test close_all() of shared stores leaves it alone.
_app = create_app(
    [
        Upstream.of(
            Cached(ScriptedProvider("m", 8), open_store("memory://fuzz", shared=False)),
            "scripted:m",
        )
    ],
    max_inputs=64,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_documented_answers(case: schemathesis.Case) -> None:
    excluded = []
    if isinstance(case.body, dict) and case.body.get("dimensions") is not None:
        # A schema-valid size the configured model does not serve is a documented 400
        # (as OpenAI answers for a size its model lacks): not a rejected valid request.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)


@given(
    texts=st.lists(st.text(max_size=40), min_size=1, max_size=6),
    encoding_format=st.sampled_from(["float", "base64"]),
)
@settings(max_examples=60, deadline=None)
def test_any_texts_round_trip_exactly_for_a_served_model(
    texts: list[str], encoding_format: str
) -> None:
    # The fuzzer above rarely names a served model; here every request does.
    with TestClient(_app) as http:
        response = http.post(
            "/v1/embeddings",
            json={"model": "m", "input": texts, "encoding_format": encoding_format},
        )
    if any(_has_surrogate(t) for t in texts):
        assert response.status_code == 400  # not UTF-8: refused before any lookup
        return
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(texts)))
    got = np.stack(
        [
            np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
            if encoding_format == "base64"
            else np.array(d["embedding"], np.float32)
            for d in data
        ]
    )
    assert got.tobytes() == np.stack([scripted_vector(t, "m", 8) for t in texts]).tobytes()


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)
