"""The Starlette application: OpenAI ``/v1/embeddings``, TEI ``/embed``, models, health, stats,
metrics, and the web dashboard at ``/dashboard`` (see :mod:`.dashboard`).

``create_app(upstreams, ...)`` builds it from cached upstreams (see :mod:`.routing`);
``cachedembed serve`` runs it with uvicorn. Embedding, store access and response
encoding run in Starlette's thread pool so one slow upstream never blocks the event loop;
concurrent requests for the same text are embedded once (the cache's single-flight).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..wrapper import Embedded
from . import errors
from .bodies import (
    BodyBudget,
    decode_json,
    parse_embed,
    parse_embeddings,
    read_body,
    reservation,
)
from .dashboard import dashboard_routes, is_dashboard_path
from .errors import APIError
from .metrics import CONTENT_TYPE, Metrics
from .openapi import OPENAPI
from .routing import Router, Upstream

log = logging.getLogger("cachedembed.server")

DEFAULT_MAX_INPUTS = 2048
"""OpenAI's own per-request limit."""
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BODY_MEMORY = 256 * 1024 * 1024
"""Bytes of request bodies held at once across all requests (16 bodies of the largest size)."""

_JSON = "application/json"
_TEI_PATHS = frozenset({"/", "/embed", "/info", "/health"})
_OPEN_PATHS = frozenset({"/healthz", "/health"})
"""Answered without the API key: load balancers and orchestrators probe them without one."""


class _Json(Response):
    """A response from bytes already encoded (in the thread pool) as JSON."""

    media_type = _JSON


def _error_response(error: APIError, path: str) -> Response:
    if path in _TEI_PATHS:
        # TEI answers validation failures with 422 and its own body shape.
        status = 422 if error.status == 400 else error.status
        return JSONResponse(error.tei_body(), status, headers=error.headers)
    return JSONResponse(error.openai_body(), error.status, headers=error.headers)


class Server:
    """The state the endpoints share: routes to upstreams, limits, metrics, the one store."""

    def __init__(
        self, upstreams: list[Upstream], max_inputs: int, max_body_bytes: int, max_body_memory: int
    ) -> None:
        self.router = Router(upstreams)
        self.max_inputs = max_inputs
        self.max_body_bytes = max_body_bytes
        self.body_budget = BodyBudget(max(max_body_memory, max_body_bytes))
        self.store = upstreams[0].cached.store
        self.metrics = Metrics(self.store)

    # -- routing and embedding (in the thread pool: they touch the store and upstream) --

    def pick(self, model: str, dimensions: int | None) -> Upstream:
        """The upstream serving ``model`` with ``dimensions`` (when given), or an error saying why not."""
        candidates = self.router.candidates(model)
        if not candidates:
            raise errors.model_not_found(model, self.router.ids())
        if dimensions is None:
            return candidates[0]
        known: dict[int | None, Upstream] = {}
        for upstream in candidates:
            known.setdefault(upstream.dimension(), upstream)  # the first --model wins a tie
        if dimensions in known:
            return known[dimensions]
        if None in known:
            return known[None]  # not embedded yet: the size is checked on the result
        raise _dimension_mismatch(model, dimensions, sorted(d for d in known if d is not None))

    def embed(self, upstream: Upstream, texts: list[str], dimensions: int | None) -> Embedded:
        result = upstream.cached.embed_with_usage(texts, "document")
        self.metrics.embedded(upstream, result)
        if dimensions is not None and result.vectors.shape[1] != dimensions:
            raise _dimension_mismatch(upstream.id, dimensions, [result.vectors.shape[1]])
        return result

    def openai_embeddings(self, raw: bytes | bytearray) -> bytes:
        req = parse_embeddings(decode_json(raw, self.max_inputs), self.max_inputs)
        upstream = self.pick(req.model, req.dimensions)
        result = self.embed(upstream, req.texts, req.dimensions)
        if req.encoding_format == "base64":
            little_endian = result.vectors.astype("<f4", copy=False)
            encoded: list[Any] = [
                base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian
            ]
        else:
            encoded = result.vectors.tolist()
        tokens = int(result.tokens.sum())
        return json.dumps(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i, vector in enumerate(encoded)
                ],
                "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            separators=(",", ":"),
        ).encode()

    def tei_embed(self, raw: bytes | bytearray) -> tuple[bytes, int]:
        """The vectors as TEI answers them, and the tokens they cost (TEI's ``x-compute-tokens``)."""
        req = parse_embed(decode_json(raw, self.max_inputs), self.max_inputs)
        texts, normalize, dimensions = req.texts, req.normalize, req.dimensions
        upstream = self.router.default
        if dimensions is not None and upstream.dimension() not in (None, dimensions):
            raise _dimension_mismatch(upstream.id, dimensions, [upstream.dimension() or 0])
        result = self.embed(upstream, texts, dimensions)
        vectors = result.vectors
        if normalize:
            norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
            vectors = (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)
        return json.dumps(vectors.tolist(), separators=(",", ":")).encode(), int(
            result.tokens.sum()
        )

    def tei_info(self) -> dict[str, Any]:
        """TEI's ``/info`` fields that clients read to size their batches."""
        from .. import __version__

        upstream = self.router.default
        return {
            "model_id": upstream.id,
            "model_dtype": "float32",
            "max_client_batch_size": self.max_inputs,
            "version": __version__,
            "router": "cachedembed",
        }

    def stats(self) -> bytes:
        from ..stats import report

        self.store.flush()  # buffered hit counters: /stats includes every answered request
        return json.dumps(report(self.store), indent=2).encode()

    def store_health(self) -> dict[str, Any] | None:
        """``None`` while the cache answers; else its outage (probing it first when a probe is due)."""
        if self.store.outage.failing:
            self.store.probe()
        if not self.store.outage.failing:
            return None
        return {
            "url": self.store.url,
            **self.store.outage.health(),
            "errors": self.store.store_errors,
        }

    def models(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for upstream in self.router.upstreams:
            seen.setdefault(
                upstream.id,
                {
                    "id": upstream.id,
                    "object": "model",
                    "created": 0,
                    "owned_by": upstream.describe()["provider"] or "cachedembed",
                },
            )
        return list(seen.values())


def _dimension_mismatch(model: str, wanted: int, available: list[int]) -> APIError:
    have = " or ".join(str(d) for d in available) or "another size"
    return errors.invalid(
        f"model '{model}' serves {have}-dimensional vectors on this server, not {wanted}; "
        "omit 'dimensions', or start the server with a --model configured for that size "
        "under the same alias",
        param="dimensions",
        code="unsupported_dimensions",
    )


Handler = Callable[[Request], Awaitable[Response]]


def _endpoint(server: Server, fn: Callable[[Server, Request], Awaitable[Response]]) -> Handler:
    """Wrap an endpoint so every failure answers in the endpoint's error shape."""

    async def handle(request: Request) -> Response:
        try:
            return await fn(server, request)
        except Exception as exc:  # every error becomes an API answer
            error = errors.from_exception(exc)
            if error.status >= 500:
                log.warning(
                    "%s %s -> %d: %s", request.method, request.url.path, error.status, error.message
                )
                if not isinstance(exc, APIError) and not isinstance(exc, errors.ProviderError):
                    log.exception("unexpected error", exc_info=exc)
            return _error_response(error, request.url.path)

    return handle


# Only reading the body happens on the event loop; decoding it (up to --max-body-bytes of
# JSON), embedding and encoding the answer run in the thread pool. The body, and what is
# decoded from it, stay within the server's body budget (--max-body-memory) until then.


async def _embeddings(server: Server, request: Request) -> Response:
    async with server.body_budget.reserve(reservation(request, server.max_body_bytes)):
        raw = await read_body(request, server.max_body_bytes)
        return _Json(await run_in_threadpool(server.openai_embeddings, raw))


async def _embed(server: Server, request: Request) -> Response:
    async with server.body_budget.reserve(reservation(request, server.max_body_bytes)):
        raw = await read_body(request, server.max_body_bytes)
        body, tokens = await run_in_threadpool(server.tei_embed, raw)
    return _Json(body, headers={"x-compute-tokens": str(tokens)})


async def _info(server: Server, request: Request) -> Response:
    return JSONResponse(server.tei_info())


async def _models(server: Server, request: Request) -> Response:
    return JSONResponse({"object": "list", "data": await run_in_threadpool(server.models)})


async def _model(server: Server, request: Request) -> Response:
    name = request.path_params["model"]
    if not server.router.candidates(name):
        raise errors.model_not_found(name, server.router.ids())
    data = await run_in_threadpool(server.models)
    upstream = server.router.candidates(name)[0]
    return JSONResponse({**next(m for m in data if m["id"] == upstream.id), "id": name})


async def _healthz(server: Server, request: Request) -> Response:
    # Still 200 while the cache fails: requests are answered (from the provider), so a
    # load balancer must keep sending them; the body says what is wrong.
    store = await run_in_threadpool(server.store_health)
    if store is None:
        return JSONResponse({"status": "ok", "models": server.router.ids()})
    return JSONResponse({"status": "degraded", "models": server.router.ids(), "store": store})


async def _health(server: Server, request: Request) -> Response:
    return Response(status_code=200)  # TEI's /health: an empty 200 once the model is ready


async def _stats(server: Server, request: Request) -> Response:
    return _Json(await run_in_threadpool(server.stats))


async def _metrics(server: Server, request: Request) -> Response:
    return Response(server.metrics.render(), media_type=CONTENT_TYPE)


async def _openapi(server: Server, request: Request) -> Response:
    return JSONResponse(OPENAPI)


class _Guard:
    """Outermost middleware: bearer-key check (constant time) and per-endpoint request metrics.

    The dashboard checks the same key itself, since a browser may also send it as the
    session cookie its login form sets.
    """

    def __init__(
        self, app: ASGIApp, server: Server, api_key: str | None, paths: frozenset[str]
    ) -> None:
        self.app = app
        self.server = server
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in self.paths else "other"
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if (
                path not in _OPEN_PATHS
                and self.expected is not None
                and not is_dashboard_path(path)  # the dashboard checks the same key itself
                and not self._authorized(scope)
            ):
                response = _error_response(errors.unauthorized(), path)
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, counting_send)
                return
            await self.app(scope, receive, counting_send)
        finally:
            self.server.metrics.request(endpoint, status)

    def _authorized(self, scope: Scope) -> bool:
        assert self.expected is not None
        provided = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                provided = value
                break
        return hmac.compare_digest(provided, self.expected)


def create_app(
    upstreams: list[Upstream],
    *,
    api_key: str | None = None,
    max_inputs: int = DEFAULT_MAX_INPUTS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_body_memory: int = DEFAULT_MAX_BODY_MEMORY,
) -> Starlette:
    """The ASGI app serving ``upstreams`` (all against one cache).

    Args:
        upstreams: The models, in ``--model`` order; the first also answers TEI ``/embed``.
        api_key: When set, every request except the health probes (``/healthz``, TEI's
            ``/health``) must send ``Authorization: Bearer <api_key>`` (the dashboard also
            takes the session cookie of its login form).
        max_inputs: Most texts one request may carry (413 beyond).
        max_body_bytes: Largest request body accepted (413 beyond, before it is read whole).
        max_body_memory: Most bytes of bodies held at once across requests (others wait).
    """
    server = Server(upstreams, max_inputs, max_body_bytes, max_body_memory)
    table: list[tuple[str, str, Callable[[Server, Request], Awaitable[Response]]]] = [
        ("/v1/embeddings", "POST", _embeddings),
        ("/embeddings", "POST", _embeddings),  # clients whose base URL lacks /v1
        ("/embed", "POST", _embed),
        ("/", "POST", _embed),  # TEI answers its embed route at the root too (InferenceClient)
        ("/health", "GET", _health),
        ("/info", "GET", _info),
        ("/v1/models", "GET", _models),
        ("/v1/models/{model:path}", "GET", _model),
        ("/healthz", "GET", _healthz),
        ("/stats", "GET", _stats),
        ("/metrics", "GET", _metrics),
        ("/openapi.json", "GET", _openapi),
    ]
    routes: list[BaseRoute] = [
        Route(path, _endpoint(server, fn), methods=[method]) for path, method, fn in table
    ]
    routes += dashboard_routes(server.store, api_key)
    paths = frozenset(path for path, _, _ in table if "{" not in path)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown paths and wrong methods also answer in the API's error shape.
        assert isinstance(exc, HTTPException)
        error = APIError(
            exc.status_code,
            f"{request.method} {request.url.path}: {exc.detail}",
            code="not_found" if exc.status_code == 404 else "method_not_allowed",
            headers=dict(exc.headers or {}),
        )
        return _error_response(error, request.url.path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # Buffered hit counters must reach the cache before the process ends: uvicorn
        # re-raises SIGTERM after shutdown, so neither `finally` nor atexit would run.
        for store in {id(u.cached.store): u.cached.store for u in upstreams}.values():
            store.flush()

    app = Starlette(
        lifespan=lifespan,
        routes=routes,
        middleware=[Middleware(_Guard, server=server, api_key=api_key, paths=paths)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.server = server
    return app
