"""Reading and validating request bodies: size limits first, then the OpenAI and TEI shapes.

Everything here runs before any cache lookup or provider call, so a bad or oversized
request costs nothing but its own bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import ClientDisconnect, Request

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


async def read_body(request: Request, max_bytes: int) -> bytearray:
    """The request body; 413 beyond ``max_bytes``, declared or streamed (never read whole).

    One buffer, no joined copy: :func:`decode_json` reads the ``bytearray`` as it is.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _body_too_large(int(declared), max_bytes)
    body = bytearray()
    try:
        async for chunk in request.stream():
            if len(body) + len(chunk) > max_bytes:
                raise _body_too_large(len(body) + len(chunk), max_bytes)
            body += chunk
    except ClientDisconnect:
        # Gone (or cut off by the body timeout): nobody reads this answer, but it is no crash.
        raise invalid("the client disconnected before sending the whole body") from None
    return body


class BodyBudget:
    """Bytes of request bodies held at once, across all requests; the rest wait their turn.

    A request reserves its declared ``Content-Length`` (``max_body_bytes`` when chunked)
    before reading a byte and keeps it until its answer is built, so the server holds at
    most ``total`` bytes of bodies (and their decoded copies, proportional to them) however
    many clients upload at once. A waiting client's upload simply pauses. Reservations are
    granted first come, first served, so a large body is never starved by small ones.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.total)
        if self._queue or size > self.free:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append((size, turn))
            try:
                await turn
            except BaseException:
                self._withdraw(size, turn)
                raise
        else:
            self.free -= size
        try:
            yield
        finally:
            self.free += size
            self._grant()

    def _grant(self) -> None:
        while self._queue and self._queue[0][0] <= self.free:
            size, turn = self._queue.popleft()
            if not turn.done():
                self.free -= size
                turn.set_result(None)

    def _withdraw(self, size: int, turn: asyncio.Future[None]) -> None:
        """A waiter gave up (cancelled): drop it, or give back what it was just granted."""
        if turn.done() and not turn.cancelled():
            self.free += size
        else:
            self._queue = deque(entry for entry in self._queue if entry[1] is not turn)
        self._grant()


def reservation(request: Request, max_bytes: int) -> int:
    """The bytes to reserve for ``request``'s body: its declared size, else the most allowed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        return min(int(declared), max_bytes)
    return max_bytes


# A JSON string, or the rest of the input after an unterminated one (then json.loads
# reports it). It always matches where it starts, so scanning stays linear.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{},]', re.DOTALL)
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")
MAX_DEPTH = 16
"""Deepest nesting a body may have; valid requests need 3 (an object, a list, a token array)."""


def check_shape(raw: bytes | bytearray, max_values: int) -> None:
    """400 before parsing when ``raw`` nests deeper than :data:`MAX_DEPTH` or holds too many values.

    ``json.loads`` recurses once per nesting level and allocates an object for every
    value: 100,000 nested brackets exhaust the stack, and a 16 MiB ``[[],[],...]`` becomes
    ~300 MB of lists. This scan counts commas and brackets outside strings, in C-speed
    regex steps and without copying, and stops at the first excess.
    """
    depth = values = 0
    for match in _JSON_TOKEN.finditer(raw):
        char = raw[match.start()]
        if char in _OPENERS:
            depth += 1
            values += 1
            if depth > MAX_DEPTH:
                raise invalid(f"the request body nests deeper than {MAX_DEPTH} levels")
        elif char in _CLOSERS:
            depth -= 1
        elif char == 44:  # a comma: one more value
            values += 1
        if values > max_values:
            raise invalid(
                f"the request body holds more than {max_values:,} JSON values; send at most "
                "--max-inputs strings per request (token arrays are not accepted)"
            )


def decode_json(raw: bytes | bytearray, max_inputs: int = 2048) -> Any:
    """The body as JSON; 400 when empty, not JSON, too deep or too big to parse, or not finite."""
    if not raw:
        raise invalid("the request body is empty; send a JSON object")
    check_shape(raw, max_values=_VALUES_PER_INPUT * max_inputs + 1024)
    try:
        return json.loads(
            raw, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_short_int
        )
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise invalid(f"the request body is not valid JSON ({_short(exc)})") from None


_VALUES_PER_INPUT = 64
"""Values a body may hold per allowed input: generous for extra fields, bounded for memory."""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]}{'...' if len(text) > 20 else ''} is out of range")
    return value


def _short_int(text: str) -> int | float:
    # Converting a huge literal to int is quadratic in its digits (and refused on 3.11+);
    # to float it is linear. Such a number is no valid count or size anyway: a field that
    # wants an integer refuses the float, and an unknown field is ignored, as the schema says.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        return _finite_float(text)
    return int(text)


_MAX_INT_DIGITS = 20


def _short(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    return message if len(message) <= 200 else message[:200] + "..."


def _body_too_large(size: int, max_bytes: int) -> APIError:
    error = too_large(
        f"request body is {'at least ' if size <= max_bytes else ''}{size:,} bytes; this server "
        f"accepts at most {max_bytes:,} (--max-body-bytes): split the input into several requests"
    )
    error.headers["Connection"] = "close"  # do not read (and discard) the rest of it
    return error


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
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DIMENSIONS:
        raise invalid(
            f"'dimensions' must be a positive integer, at most {_MAX_DIMENSIONS:,}",
            param="dimensions",
        )
    return value


_MAX_DIMENSIONS = 65_536


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
