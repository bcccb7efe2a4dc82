"""Reading and validating request bodies: size limits first, then the OpenAI and TEI shapes.

Everything here runs before any cache lookup or provider call, so a bad or oversized
request costs nothing but its own bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from .errors import APIError, invalid, too_large

EncodingFormat = Literal["float", "base64"]

_OPENAI_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A validated ``POST /v1/embeddings`` body."""

    model: str
    texts: list[str]
    encoding_format: EncodingFormat = "float"
    dimensions: int | None = None


@dataclass(frozen=True)
class EmbedRequest:
    """A validated TEI ``POST /embed`` body."""

    texts: list[str]
    normalize: bool = True
    dimensions: int | None = None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body; 413 beyond ``max_bytes``, declared or streamed (never read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _body_too_large(int(declared), max_bytes)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _body_too_large(size, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(raw: bytes) -> Any:
    """The body as JSON; 400 when empty or not JSON."""
    if not raw:
        raise invalid("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"the request body is not valid JSON ({exc})") from None


def _body_too_large(size: int, max_bytes: int) -> APIError:
    return too_large(
        f"request body is {'at least ' if size <= max_bytes else ''}{size:,} bytes; this server "
        f"accepts at most {max_bytes:,} (--max-body-bytes): split the input into several requests"
    )


def _texts(value: Any, param: str, max_inputs: int) -> list[str]:
    """``str`` or a non-empty list of ``str``; token arrays are refused (the cache keys text)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise invalid(f"'{param}' must be a string or a list of strings", param=param)
    if not value:
        raise invalid(f"'{param}' is an empty list: there is nothing to embed", param=param)
    if len(value) > max_inputs:
        raise too_large(
            f"'{param}' has {len(value):,} items; this server accepts at most {max_inputs:,} "
            "per request (--max-inputs): split it into several requests",
            param=param,
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            if isinstance(item, (int, list)) and not isinstance(item, bool):
                raise invalid(
                    f"'{param}[{i}]' is a token array; this server caches by text, send strings "
                    "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))",
                    param=param,
                )
            raise invalid(
                f"'{param}[{i}]' is {type(item).__name__}, expected a string", param=param
            )
    return value


def _dimensions(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid("'dimensions' must be a positive integer", param="dimensions")
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


def parse_embeddings(body: Any, max_inputs: int) -> EmbeddingsRequest:
    """Validate an OpenAI embeddings request (unknown fields are refused, as OpenAI does)."""
    body = _object(body)
    unknown = sorted(set(body) - _OPENAI_FIELDS)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required: a model name this server serves", param="model")
    if "input" not in body:
        raise invalid("'input' is required: a string or a list of strings", param="input")
    texts = _texts(body["input"], "input", max_inputs)
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("'user' must be a string", param="user")
    return EmbeddingsRequest(model, texts, fmt, _dimensions(body.get("dimensions")))


def parse_embed(body: Any, max_inputs: int) -> EmbedRequest:
    """Validate a TEI ``/embed`` request.

    ``truncate`` and ``truncation_direction`` are accepted for compatibility: truncation is
    the upstream's, fixed by its configuration (it is part of the cache namespace).
    """
    body = _object(body)
    if "inputs" not in body:
        raise invalid("'inputs' is required: a string or a list of strings", param="inputs")
    texts = _texts(body["inputs"], "inputs", max_inputs)
    normalize = body.get("normalize", True)
    if normalize is None:
        normalize = True
    if not isinstance(normalize, bool):
        raise invalid("'normalize' must be true or false", param="normalize")
    truncate = body.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise invalid("'truncate' must be true, false or null", param="truncate")
    if body.get("truncation_direction") not in (None, "Left", "Right", "left", "right"):
        raise invalid(
            "'truncation_direction' must be 'Left' or 'Right'", param="truncation_direction"
        )
    if body.get("prompt_name") is not None:
        raise invalid(
            "'prompt_name' is not supported: configure the prompt on the upstream model",
            param="prompt_name",
        )
    return EmbedRequest(texts, normalize, _dimensions(body.get("dimensions")))
