"""What the adapters share: a framework model presented to :class:`~cachedembed.Cached`.

An adapter never caches anything itself. It builds a ``Cached`` around a
:class:`FrameworkEmbedder` (the model's own call, in batches, plus the identity that
names the namespace), so lookups, single-flight, per-batch writes and stats are the
same engine as everywhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..embedder import ChromaStyleEmbedder
from ..errors import ConfigurationError
from ..identity import strip_secrets
from ..keys import Role
from ..redact import is_secret_value
from ..stores import Store, default_url, normalize_url, url_passwords
from ..wrapper import Cached

# Fields of LangChain / LlamaIndex models that never change the vectors: clients,
# timeouts, retries, batching, progress bars, observability.
NEUTRAL_FIELDS = frozenset(
    {
        "async_client",
        "batch_size",
        "callback_manager",
        "callbacks",
        "chunk_size",
        "client",
        "default_headers",
        "default_query",
        "embed_batch_size",
        "embeddings_cache",
        "headers",
        "http_async_client",
        "http_client",
        "max_retries",
        "num_workers",
        "openai_proxy",
        "proxy",
        "rate_limiter",
        "request_timeout",
        "retry_max_seconds",
        "retry_min_seconds",
        "reuse_client",
        "show_progress",
        "show_progress_bar",
        "timeout",
        "verbose",
    }
)

# Attributes that name the model on objects that are not pydantic models.
MODEL_ATTRS = ("model", "model_name", "model_id", "deployment", "dimensions")

DEFAULT_BATCH = 256


class FrameworkEmbedder(ChromaStyleEmbedder):
    """A framework model as batches of vectors for ``Cached``, with a fixed identity."""

    def __init__(
        self,
        obj: Any,
        call: Callable[[list[str], Role], Any],
        identity: dict[str, Any] | None,
        batch_size: int,
        acall: Callable[[list[str], Role], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__(obj, batch_size, call, acall)
        self.label = type(obj).__name__
        self._identity = identity

    def name(self) -> str:
        return self.label

    def cache_identity(self, role: Role) -> dict[str, Any]:
        if self._identity is None:  # only reachable with namespace=, which Cached uses instead
            raise ConfigurationError(f"{self.label}: no identity; pass namespace=...")
        return dict(self._identity)


def check_wrappable(obj: Any, expected: type, adapter: type) -> None:
    """Refuse, before anything runs, an adapter (wrapping twice) or an object of another type."""
    if isinstance(obj, adapter):
        raise ConfigurationError(
            f"{type(obj).__name__} is already cached; wrap the model inside it once"
        )
    if not isinstance(obj, expected):
        raise ConfigurationError(
            f"expected a {expected.__module__}.{expected.__qualname__}, got {type(obj).__name__}"
        )


def build_cached(
    obj: Any,
    call: Callable[[list[str], Role], Any],
    identity: Callable[[], dict[str, Any]],
    cache: Store | str | None,
    namespace: str | None,
    options: Mapping[str, Any],
    acall: Callable[[list[str], Role], Awaitable[Any]] | None = None,
) -> Cached:
    """The ``Cached`` behind an adapter; ``identity()`` is only asked when no ``namespace`` is given.

    ``call`` embeds a batch with the model; ``acall``, the model's own async method, does
    so for async calls (their misses then go out as coroutines, not worker threads)."""
    known = None if namespace is not None else identity()
    batch = int(options.get("batch_size", DEFAULT_BATCH))
    embedder = FrameworkEmbedder(obj, call, known, batch, acall)
    return Cached(embedder, cache, namespace=namespace, **options)


def reopenable_url(cache: Store | str | None) -> tuple[str | None, str]:
    """The URL that reopens ``cache`` in another process, or ``None`` and the reason it cannot.

    For adapters that pickle (LlamaIndex sends its transformations to worker processes):
    the URL travels, never the open store, its connections or locks. A ``Store`` object
    only knows its URL with the password masked, and a ``memory://`` cache lives in one
    process, so neither can be reopened elsewhere.
    """
    if isinstance(cache, Store):
        url = cache.url
        if url_passwords(url):
            return (
                None,
                f"its cache {url} was given as a Store object, whose password is masked; pass the URL instead",
            )
    else:
        url = normalize_url(cache or default_url())  # resolved now: a worker may have another cwd
    if url.startswith("memory://"):
        return (
            None,
            "a memory:// cache lives in one process; use a sqlite, diskcache or database URL",
        )
    return url, ""


def model_identity(obj: Any, framework: str) -> dict[str, Any]:
    """Identity of a LangChain / LlamaIndex model: its class and output-changing fields.

    Pydantic models (nearly all of both frameworks') give their fields via
    ``model_dump()``; other objects the well-known ``model``/``model_name`` attributes.
    Secrets (``SecretStr`` values, keys named like ``api_key``) and :data:`NEUTRAL_FIELDS`
    are dropped. Raises :class:`ConfigurationError` when nothing identifies the model.
    """
    cls = type(obj)
    dump = getattr(obj, "model_dump", None)
    fields: Any = None
    if callable(dump):
        try:
            fields = dump()
        except Exception:  # a model whose fields cannot be dumped: fall back to attributes
            fields = None
    if not isinstance(fields, Mapping):
        fields = {
            a: getattr(obj, a) for a in MODEL_ATTRS if isinstance(getattr(obj, a, None), (str, int))
        }
    params = strip_secrets(jsonable({k: v for k, v in fields.items() if k not in NEUTRAL_FIELDS}))
    if not params:
        raise ConfigurationError(
            f"cannot derive a cache namespace for {cls.__name__}: it exposes no model name or "
            "settings (pydantic fields, or a model/model_name attribute). Pass "
            "namespace='<model-name-and-options>' so that different models never share entries."
        )
    model = next(
        (params[a] for a in MODEL_ATTRS[:3] if isinstance(params.get(a), str)), cls.__qualname__
    )
    return {
        "provider": framework,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "model": model,
        "config": params,
    }


def jsonable(value: Any) -> Any:
    """``value`` as JSON for an identity: secrets dropped, other objects named by their type.

    A type name is stable across runs and reveals nothing, unlike ``repr`` (which may hold
    an address or a credential).
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if not is_secret_value(v)}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value if not is_secret_value(v)]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"
