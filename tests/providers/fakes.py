"""Fake provider servers: handlers for :class:`LoopbackServer` that speak a provider's wire format.

A :class:`FakeProvider` checks every request the way the real service would (credential,
model, input shape, provider-specific fields) and answers a wrong one with the provider's
own 400 error body, so a client that sends the wrong thing fails its test. Vectors are
deterministic per (text, request fields that change the output), so tests can compute
the expected vectors and prove they came back bit for bit and in order. Token counts are
deterministic too, and deliberately unlike cachedembed's 4-bytes-per-token estimate, so a
test can tell reported tokens from estimated ones.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from tests.conftest import fake_vector
from tests.providers.loopback import LoopbackServer, Reply, Request

DIM = 8


def tokens_of(text: str) -> int:
    """The fake tokenizer: one token per 3 UTF-8 bytes, plus one."""
    return len(text.encode("utf-8")) // 3 + 1


class FakeProvider:
    """Base handler: validate, then embed. Subclasses define the wire format.

    Set :attr:`corrupt` to ``"count"`` (one vector short), ``"nan"`` or ``"ragged"`` to
    answer the next successful requests with a malformed response.
    """

    key: str = "test-key-0000"
    model: str = "test-model"
    shuffle: bool = True
    """Return ``data`` items in a shuffled index order (for providers that send an index)."""

    def __init__(self, **settings: Any) -> None:
        for name, value in settings.items():
            setattr(self, name, value)
        self.batches: list[list[str]] = []
        self.corrupt: str | None = None
        self._rng = random.Random(1234)

    # -- what subclasses define ----------------------------------------------------

    def problem(self, request: Request) -> str | None:
        """Why the real service would reject ``request`` (``None``: it is fine)."""
        raise NotImplementedError

    def texts(self, request: Request) -> list[str]:
        """The texts a request carries (OpenAI's ``input`` list by default)."""
        sent = request.body["input"]
        if not isinstance(sent, list):
            raise TypeError("input is not a list")
        return list(sent)

    def salt(self, request: Request) -> str:
        """The request fields that change the vectors, as a string mixed into each vector."""
        raise NotImplementedError

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        raise NotImplementedError

    def error_body(self, message: str) -> Any:
        raise NotImplementedError

    # -- the handler -----------------------------------------------------------------

    def __call__(self, request: Request) -> Reply:
        problem = self.problem(request)
        if problem is None:
            try:
                sent = self.texts(request)
            except (AttributeError, KeyError, TypeError):
                sent = None
            if not isinstance(sent, list) or not sent:
                problem = "input must be a non-empty list of strings"
            elif not all(isinstance(t, str) for t in sent):
                problem = "input must be a list of strings"
        if problem is not None:
            return Reply(400, self.error_body(problem))
        texts = self.texts(request)
        self.batches.append(texts)
        vectors = [self.vector(t, request) for t in texts]
        if self.corrupt == "count":
            vectors = vectors[:-1]
            texts = texts[:-1]
        elif self.corrupt == "nan":
            vectors[0] = vectors[0].copy()
            vectors[0][0] = np.nan
        elif self.corrupt == "ragged":
            vectors[-1] = vectors[-1][:-1]
        return Reply(200, self.respond(texts, vectors, request))

    def vector(self, text: str, request: Request) -> np.ndarray:
        return fake_vector(text, DIM, self.salt(request))

    def expected(self, texts: list[str], **fields: Any) -> np.ndarray:
        """The vectors the server gives ``texts`` when the request carries ``fields``."""
        request = Request("POST", "/", {}, {"model": self.model, **fields})
        return np.stack([self.vector(t, request) for t in texts])

    def indexed(self, vectors: list[np.ndarray], as_base64: bool = False) -> list[dict[str, Any]]:
        """OpenAI-shaped ``data`` items (float lists or base64 float32), in a shuffled order
        when :attr:`shuffle` is set, as servers with an ``index`` field may return them."""
        items = [
            {"object": "embedding", "index": i, "embedding": encode(v, as_base64)}
            for i, v in enumerate(vectors)
        ]
        if self.shuffle:
            self._rng.shuffle(items)
        return items

    def bearer_problem(self, request: Request) -> str | None:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return f"bad credential: got authorization {request.headers.get('authorization')!r}"
        return None

    def field_problems(self, request: Request, required: Mapping[str, Any]) -> str | None:
        """The first field of ``required`` that the body lacks or has a different value for."""
        for name, value in required.items():
            got = request.body.get(name) if isinstance(request.body, dict) else None
            if got != value:
                return f"field {name!r}: expected {value!r}, got {got!r}"
        return None


def encode(vector: np.ndarray, as_base64: bool) -> Any:
    """A vector as JSON floats (exact: float32 widens to float64 losslessly) or base64 float32."""
    if as_base64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return [float(x) for x in vector]


@contextmanager
def serve(fake: FakeProvider) -> Iterator[LoopbackServer]:
    with LoopbackServer(fake) as server:
        yield server
