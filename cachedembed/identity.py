"""Deriving a cache identity from an embedding function someone else wrote.

cachedembed's own functions state their identity (:meth:`cache_identity`). For Chroma's
built-in classes and users' custom classes it is derived from ``name()`` and
``get_config()``: secrets and keys that do not change the vectors are dropped, the
rest kept verbatim. A function with no usable ``name()`` needs ``namespace=``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError
from .redact import is_credential_name, is_secret_value, is_url, url_identity

# Config keys of Chroma's built-in functions that never change the vectors.
_CHROMA_NEUTRAL_KEYS: dict[str, frozenset[str]] = {
    "openai": frozenset({"api_key_env_var", "organization_id", "default_headers", "api_version"}),
    "cohere": frozenset({"api_key_env_var"}),
    "google_gemini": frozenset({"api_key_env_var", "project", "location"}),
    "google_generative_ai": frozenset({"api_key_env_var"}),
    "huggingface": frozenset({"api_key_env_var"}),
    "huggingface_server": frozenset({"api_key_env_var"}),
    "instructor": frozenset({"device"}),
    "jina": frozenset({"api_key_env_var"}),
    "sentence_transformer": frozenset({"device"}),
    "voyageai": frozenset({"api_key_env_var"}),
    "ollama": frozenset({"timeout"}),
    "open_clip": frozenset({"device"}),
}


def strip_secrets(config: Any) -> Any:
    """``config`` without its credentials, recursively; every other key kept verbatim.

    Drops keys that name a credential (:func:`~cachedembed.redact.is_credential_name`) and
    secret-typed values, and reduces URLs to :func:`~cachedembed.redact.url_identity`.
    Options such as ``tokenizer`` or ``max_input_tokens`` change the vectors and stay.
    """
    if isinstance(config, Mapping):
        return {
            str(k): strip_secrets(v)
            for k, v in config.items()
            if not is_credential_name(str(k)) and not is_secret_value(v)
        }
    if isinstance(config, (list, tuple)):
        return [strip_secrets(v) for v in config if not is_secret_value(v)]
    if is_url(config):
        return url_identity(config)
    return config


def _call_optional(obj: Any, method: str) -> Any:
    fn = getattr(obj, method, None)
    if fn is None:
        return NotImplemented
    with warnings.catch_warnings():
        # Chroma's base class warns (DeprecationWarning) before returning NotImplemented.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return fn()
        except (NotImplementedError, TypeError):
            return NotImplemented


def foreign_identity(ef: Any) -> dict[str, Any]:
    """Identity of an embedding function that does not implement ``cache_identity``.

    Raises :class:`ConfigurationError` when ``ef`` has no usable ``name()``; warns when it
    has a name but no config, since then options that change its vectors are invisible.
    """
    name = _call_optional(ef, "name")
    if name is NotImplemented or not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"cannot derive a cache namespace for {type(ef).__name__}: it has no name() and "
            "get_config(). Pass namespace='<model-name-and-options>' to Cached(...) so that "
            "different models never share cache entries."
        )
    config = _call_optional(ef, "get_config")
    if config is NotImplemented or config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            f"{type(ef).__name__}.get_config() returned {type(config).__name__}, expected a dict"
        )
    neutral = _CHROMA_NEUTRAL_KEYS.get(name, frozenset())
    params = {k: v for k, v in strip_secrets(config).items() if k not in neutral}
    if not params and name not in ("default",) and name not in _CHROMA_NEUTRAL_KEYS:
        warnings.warn(
            f"{type(ef).__name__} has name() {name!r} but an empty get_config(): the cache "
            "namespace is derived from the name alone, so any option that changes its vectors "
            "must be in get_config(), or pass namespace=... to Cached to make it explicit.",
            UserWarning,
            stacklevel=4,
        )
    model = params.get("model_name", params.get("model", params.get("model_id", name)))
    return {
        "provider": f"chroma:{name}" if name in _CHROMA_NEUTRAL_KEYS or name == "default" else name,
        "model": str(model),
        "config": params,
    }
