"""Ollama embeddings: ``POST {url}/api/embed`` on a local or remote Ollama server.

Same constructor as Chroma's ``OllamaEmbeddingFunction`` (``url``, ``model_name``,
``timeout``; Chroma needs the ``ollama`` package, this speaks the REST format with
``requests``), plus ``truncate``, ``dimensions`` and ``keep_alive``. Without ``url`` the
server is ``$OLLAMA_HOST`` (as the Ollama CLI reads it: ``host``, ``host:port`` or a full
URL), else ``http://localhost:11434``. Tokens come from ``prompt_eval_count``. Ollama
puts no limit on a request's inputs; batches of :attr:`max_batch` texts keep each
cache write (and what a failure loses) small.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..keys import Role
from ._base import as_matrix

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._remote import (
    JsonEmbeddingFunction,
    RemoteOptions,
    json_object,
    usage_tokens,
    without_none,
)

DEFAULT_URL = "http://localhost:11434"
DEFAULT_MODEL_NAME = "chroma/all-minilm-l6-v2-f32"


def host_url(value: str) -> str:
    """A base URL from an ``OLLAMA_HOST``-style value: scheme and port 11434 added when absent.

    A legacy ``.../api/embeddings`` URL (Chroma's older form) is cut back to the server.
    """
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    host = parts.hostname or "localhost"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 11434)
    userinfo = parts.netloc.rpartition("@")[0]  # a proxy's credentials, kept for the request
    path = parts.path
    for legacy in ("/api/embeddings", "/api/embed"):
        if path.endswith(legacy):
            path = path[: -len(legacy)]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, path, parts.query, ""))


class OllamaEmbeddingFunction(JsonEmbeddingFunction):
    """Ollama ``/api/embed`` (``nomic-embed-text``, ``mxbai-embed-large``, ``all-minilm``, ...).

    Args:
        url: The server (default ``$OLLAMA_HOST`` or ``http://localhost:11434``).
        model_name: A pulled model; ``name`` and ``name:latest`` share cache entries.
        timeout: Seconds per request.
        truncate: Truncate over-long inputs (Ollama's default) instead of failing.
        dimensions: Shorter vectors where the model supports them.
        keep_alive: How long the server keeps the model loaded (``"5m"``, ``-1``); not
            part of the cache namespace, as it does not change the vectors.
        retry: Retry policy.
        requests_per_minute, tokens_per_minute: This instance\'s rate limits (see
            :class:`~cachedembed.embedding_functions.RateLimiter`).
    """

    provider = "ollama"
    path = "/api/embed"
    default_base_url = DEFAULT_URL
    server_in_identity = (
        False  # the model tag names the weights; localhost and 127.0.0.1 share entries
    )
    max_batch = 256
    # The constructor's arguments, kept by keep_options() (typed here for mypy).
    url: str | None
    model_name: str
    truncate: bool | None
    dimensions: int | None
    keep_alive: str | int | None

    def __init__(
        self,
        url: str | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        timeout: int = 60,
        truncate: bool | None = None,
        dimensions: int | None = None,
        keep_alive: str | int | None = None,
        **remote: Unpack[RemoteOptions],
    ) -> None:
        super().__init__(**remote)
        self.keep_options(locals())
        self.api_base = host_url(url or os.environ.get("OLLAMA_HOST") or DEFAULT_URL)

    @classmethod
    def spec_help(cls) -> str:
        return "ollama:MODEL_NAME  (e.g. nomic-embed-text; server $OLLAMA_HOST, default localhost:11434)"

    def auth_headers(self) -> dict[str, str]:
        return {}  # a local server: no key

    def params(self, role: Role) -> dict[str, Any]:
        params = {
            "model": self.model_name,
            "truncate": self.truncate,
            "dimensions": self.dimensions,
            "keep_alive": self.keep_alive,
        }
        return without_none(params)

    def identity_params(self, role: Role) -> dict[str, Any]:
        params = self.params(role)
        params.pop("keep_alive", None)
        model = params["model"]
        params["model"] = model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"
        return params

    def parse_response(
        self, payload: Mapping[str, Any], headers: Mapping[str, str], expected: int
    ) -> tuple[np.ndarray, int | None]:
        payload = json_object(self.provider, payload)
        vectors = as_matrix(self.provider, payload.get("embeddings"), expected)
        return vectors, usage_tokens(payload, "prompt_eval_count")
