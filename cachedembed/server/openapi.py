"""The OpenAPI 3.1 description served at ``/openapi.json``: the real request and response schemas.

Written by hand (not generated) so that it states the contract the clients rely on, the
OpenAI embeddings shape and TEI's ``/embed`` shape; the test suite fuzzes the app against it
with schemathesis, so a handler that drifts from it fails there.
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait, passed through from the upstream provider when it sent one",
        "schema": {"type": "string"},
    }
}


def _errors(schema: str, statuses: dict[str, str]) -> dict[str, Any]:
    return {
        status: _json(_ref(schema), text, _RETRY_AFTER if status == "429" else None)
        for status, text in statuses.items()
    }


_AUTH = {"401": "Missing or wrong bearer key (when the server has one)"}
_UPSTREAM = {
    "429": "The upstream provider is rate limiting; Retry-After passed through",
    "502": "The upstream failed, answered malformed vectors, or rejected the server's key",
    "504": "The upstream timed out",
}
_TEXTS = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
    ]
}


def _get(
    operation_id: str,
    summary: str,
    schema: dict[str, Any],
    errors: dict[str, str] | None = None,
    error_schema: str = "Error",
) -> dict[str, Any]:
    """A GET operation answering ``schema`` as JSON, or an error (401 at least)."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "responses": {
                "200": _json(schema, summary),
                **_errors(error_schema, {**_AUTH, **(errors or {})}),
            },
        }
    }


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "cachedembed server",
        "version": "1",
        "description": "A caching proxy in front of embedding providers, speaking the OpenAI "
        "embeddings API and Text Embeddings Inference's /embed. Every text is embedded once; "
        "repeats are served from the cache.",
    },
    "security": [{"bearer": []}, {}],
    "paths": {
        "/v1/embeddings": {
            "post": {
                "operationId": "createEmbedding",
                "summary": "Embed texts (OpenAI embeddings API)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CreateEmbeddingRequest")}},
                },
                "responses": {
                    "200": _json(_ref("CreateEmbeddingResponse"), "Vectors in input order"),
                    **_errors(
                        "Error",
                        {
                            "400": "Invalid request (shape, token arrays, unsupported dimensions)",
                            **_AUTH,
                            "404": "Unknown model",
                            "413": "Body or input count over the server's limits",
                            **_UPSTREAM,
                        },
                    ),
                },
            }
        },
        "/embed": {
            "post": {
                "operationId": "teiEmbed",
                "summary": "Embed texts (Text Embeddings Inference), with the first configured model",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("EmbedRequest")}},
                },
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                        "One vector per input, in order",
                        {
                            "x-compute-tokens": {
                                "description": "Tokens these texts cost (cached ones as recorded)",
                                "schema": {"type": "string"},
                            }
                        },
                    ),
                    **_errors(
                        "TeiError",
                        {
                            **_AUTH,
                            "413": "Body or input count over the server's limits",
                            "422": "Invalid request",
                            **_UPSTREAM,
                        },
                    ),
                },
            }
        },
        "/info": _get(
            "teiInfo",
            "TEI's server information (the model /embed uses, batch limit)",
            _object(
                ["model_id", "max_client_batch_size"],
                {
                    "model_id": {"type": "string"},
                    "max_client_batch_size": {"type": "integer", "minimum": 1},
                },
            ),
            error_schema="TeiError",
        ),
        "/v1/models": _get("listModels", "The models this server serves", _ref("ModelList")),
        "/v1/models/{model}": {
            "get": {
                **_get(
                    "retrieveModel", "One served model", _ref("Model"), {"404": "Unknown model"}
                )["get"],
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            }
        },
        "/healthz": _get(
            "health",
            "Liveness",
            _object(
                ["status", "models"],
                {
                    "status": {"const": "ok"},
                    "models": {"type": "array", "items": {"type": "string"}},
                },
            ),
        ),
        "/stats": _get(
            "stats", "Cache usage per model, as `cachedembed stats --json` prints it", _ref("Stats")
        ),
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of this server process",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors("Error", _AUTH),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "CreateEmbeddingRequest": {
                "type": "object",
                "required": ["model", "input"],
                "additionalProperties": False,
                "properties": {
                    "model": {
                        "type": "string",
                        "minLength": 1,
                        "description": "A model name from /v1/models",
                    },
                    "input": {
                        **_TEXTS,
                        "description": "Text or texts to embed (token arrays are not accepted)",
                    },
                    "encoding_format": {"enum": ["float", "base64"], "default": "float"},
                    "dimensions": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Must equal the size the model serves on this server",
                    },
                    "user": {"type": "string"},
                },
            },
            "CreateEmbeddingResponse": {
                "type": "object",
                "required": ["object", "data", "model", "usage"],
                "properties": {
                    "object": {"const": "list"},
                    "data": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["object", "index", "embedding"],
                            "properties": {
                                "object": {"const": "embedding"},
                                "index": {"type": "integer", "minimum": 0},
                                "embedding": {
                                    "oneOf": [
                                        {"type": "array", "items": {"type": "number"}},
                                        {
                                            "type": "string",
                                            "description": "base64 of little-endian float32",
                                        },
                                    ]
                                },
                            },
                        },
                    },
                    "model": {"type": "string"},
                    "usage": {
                        "type": "object",
                        "required": ["prompt_tokens", "total_tokens"],
                        "properties": {
                            "prompt_tokens": {"type": "integer", "minimum": 0},
                            "total_tokens": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
            "EmbedRequest": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": _TEXTS,
                    "normalize": {"type": ["boolean", "null"], "default": True},
                    "truncate": {
                        "type": ["boolean", "null"],
                        "description": "Accepted; truncation is the upstream's configured behaviour",
                    },
                    "truncation_direction": {"enum": ["Left", "Right", None]},
                    "dimensions": {"type": ["integer", "null"], "minimum": 1},
                },
            },
            "Model": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                },
            },
            "ModelList": {
                "type": "object",
                "required": ["object", "data"],
                "properties": {
                    "object": {"const": "list"},
                    "data": {"type": "array", "items": _ref("Model")},
                },
            },
            "Stats": {
                "type": "object",
                "required": ["cache", "since_day", "models", "total"],
                "properties": {
                    "cache": {"type": "string"},
                    "since_day": {"type": ["integer", "null"]},
                    "models": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": [
                                "namespace",
                                "provider",
                                "model",
                                "role",
                                "hits",
                                "misses",
                            ],
                        },
                    },
                    "total": {
                        "type": "object",
                        "required": ["texts", "hits", "misses", "tokens_embedded", "tokens_saved"],
                    },
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type", "param", "code"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": {"type": ["string", "null"]},
                            "code": {"type": ["string", "null"]},
                        },
                    }
                },
            },
            "TeiError": {
                "type": "object",
                "required": ["error", "error_type"],
                "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
            },
        },
    },
}
