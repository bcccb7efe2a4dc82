"""sentence-transformers: a ``SentenceTransformer`` whose ``encode`` is cached.

``Cached(model).encode(texts)`` returns what ``model.encode(texts)`` returns (a float32
numpy matrix, one vector for one string, a tensor with ``convert_to_tensor=True``), with
only the texts missing from the cache going through the model.

The namespace is the model's name (or local path) plus everything that changes a
vector: the resolved prompt, ``normalize_embeddings``, ``truncate_dim``, ``task``, other
model keywords, ``max_seq_length`` and the weights' dtype. ``precision`` is not part of
it: float32 vectors are cached and quantised afterwards over the whole call, exactly as
``encode`` quantises its float32 output (int8 ranges depend on the whole call).
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sentence_transformers import SentenceTransformer

from ..embedding_functions.sentence_transformer import DEFAULT_MODEL, resolve_model_path
from ..errors import ConfigurationError
from ..keys import Role
from ..stores import Store, open_store
from ..wrapper import Cached
from ._engine import build_cached, check_wrappable, jsonable

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]

__all__ = ["CachedSentenceTransformer", "cached_sentence_transformer", "wrap"]

# Per-call options that do not change vectors (batch size, device, ...), handed from
# encode() to the provider call that runs inside the same Cached.embed() call.
_run_options: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("st_run_options")


class CachedSentenceTransformer:
    """``model`` with a cached ``encode`` (and ``encode_query`` / ``encode_document``).

    Any other attribute is ``model``'s own (``similarity``, ``get_sentence_embedding_dimension``, ...).

    Args:
        model: A loaded ``SentenceTransformer``.
        cache: A store or URL, as for :class:`~cachedembed.Cached`.
        namespace: Names the model in place of its name or path (the encode options are
            still part of the namespace); required when the model has neither.
        **options: Other :class:`~cachedembed.Cached` options.
    """

    def __init__(
        self,
        model: Any,
        cache: Store | str | None = None,
        *,
        namespace: str | None = None,
        **options: Any,
    ) -> None:
        check_wrappable(model, SentenceTransformer, CachedSentenceTransformer)
        self.model = model
        self.model_name = namespace if namespace is not None else model_name(model)
        # One store for every option variant, so stats() can add them up.
        self.store: Store = cache if isinstance(cache, Store) else open_store(cache)
        self._options = options
        self._variants: dict[str, Cached] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class lacks: the model's own API.
        if name.startswith("__") or "model" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["model"], name)

    def encode(
        self,
        inputs: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: Precision = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Any = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """``SentenceTransformer.encode`` through the cache (same arguments, same result)."""
        if output_value != "sentence_embedding":
            raise ConfigurationError(
                f"output_value={output_value!r} is not cached (only sentence embeddings are); "
                "call the model's encode directly"
            )
        single = isinstance(inputs, str)
        texts: list[Any] = (
            [inputs]
            if single
            else (inputs.tolist() if isinstance(inputs, np.ndarray) else list(inputs))
        )
        run = {
            "batch_size": batch_size,
            "show_progress_bar": False,
            "device": device,
            "pool": pool,
            "chunk_size": chunk_size,
        }
        if not texts:  # nothing to cache; the model says what "no vectors" looks like
            return self.model.encode(
                texts,
                precision=precision,
                convert_to_numpy=convert_to_numpy,
                convert_to_tensor=convert_to_tensor,
                **run,
            )
        model_options = {
            "prompt": self._resolve_prompt(prompt, prompt_name),
            "normalize_embeddings": bool(normalize_embeddings),
            "truncate_dim": truncate_dim if truncate_dim is not None else self.model.truncate_dim,
            **kwargs,
        }
        role: Role = "query" if kwargs.get("task") == "query" else "document"
        token = _run_options.set(run)
        try:
            vectors = self._variant(model_options).embed(texts, role)
        finally:
            _run_options.reset(token)
        return self._convert(vectors, single, precision, convert_to_numpy, convert_to_tensor)

    def encode_query(
        self,
        inputs: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """``SentenceTransformer.encode_query`` through the cache: the model's ``query`` prompt, task ``query``."""
        if prompt_name is None and prompt is None and "query" in self.model.prompts:
            prompt_name = "query"
        return self.encode(inputs, prompt_name=prompt_name, prompt=prompt, task="query", **kwargs)

    def encode_document(
        self,
        inputs: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """``SentenceTransformer.encode_document`` through the cache: the model's document prompt, task ``document``."""
        if prompt_name is None and prompt is None:
            prompt_name = next(
                (p for p in ("document", "passage", "corpus") if p in self.model.prompts), None
            )
        return self.encode(
            inputs, prompt_name=prompt_name, prompt=prompt, task="document", **kwargs
        )

    def stats(self) -> dict[str, Any]:
        """Lifetime totals, in the cache, of every encode-option variant this object used (see :meth:`Cached.stats`)."""
        from ..stats import namespace_totals

        self.store.flush()
        return namespace_totals(
            self.store, [ns for cached in self._used_variants() for ns in cached.namespaces()]
        )

    def session_stats(self) -> dict[str, Any]:
        """What this object did since it was built, over all its variants (see :meth:`Cached.session_stats`)."""
        from ..stats import role_totals
        from ..usage import UsageDelta

        by_role: dict[Role, UsageDelta] = {}
        for cached in self._used_variants():
            for role, delta in cached.session_usage().items():
                by_role.setdefault(role, UsageDelta()).add(delta)
        return role_totals(by_role)

    def _used_variants(self) -> list[Cached]:
        with self._lock:
            return list(self._variants.values())

    # -- internals -------------------------------------------------------------------

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The prompt ``encode`` would prepend, as sentence-transformers resolves it."""
        if prompt is not None:
            return prompt
        prompts = self.model.prompts
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise ConfigurationError(
                    f"prompt_name {prompt_name!r} is not one of the model's prompts {sorted(prompts)}"
                )
            return str(prompts[prompt_name])
        default = self.model.default_prompt_name
        return prompts.get(default) if default is not None else None

    def _variant(self, model_options: dict[str, Any]) -> Cached:
        """One ``Cached`` (namespace) per combination of output-changing options."""
        identity = {
            "provider": "sentence-transformers",
            "model": self.model_name,
            "max_seq_length": self.model.max_seq_length,
            "dtype": str(getattr(self.model, "dtype", "")),
            "encode": jsonable(model_options),
        }
        key = json.dumps(identity, sort_keys=True)
        with self._lock:
            cached = self._variants.get(key)
            if cached is None:
                model = self.model

                def call(texts: list[str], role: Role) -> Any:
                    return model.encode(
                        texts,
                        precision="float32",
                        convert_to_numpy=True,
                        **_run_options.get(),
                        **model_options,
                    )

                cached = build_cached(
                    model, call, lambda: identity, self.store, None, self._options
                )
                self._variants[key] = cached
        return cached

    def _convert(
        self,
        vectors: np.ndarray,
        single: bool,
        precision: Precision,
        to_numpy: bool,
        to_tensor: bool,
    ) -> Any:
        """Shape the float32 matrix as ``encode`` would for these arguments."""
        out: Any = vectors
        if precision and precision != "float32":
            from sentence_transformers import quantize_embeddings

            out = quantize_embeddings(out, precision=precision)
        if to_tensor:
            import torch

            out = torch.as_tensor(out)
        elif not to_numpy:
            import torch

            out = list(torch.from_numpy(np.ascontiguousarray(out)))
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"CachedSentenceTransformer({self.model_name!r})"


def model_name(model: Any) -> str:
    """The name (or local path) a ``SentenceTransformer`` was loaded from.

    The copy of all-MiniLM-L6-v2 shipped in a package is named ``all-MiniLM-L6-v2`` so its
    entries do not depend on where the package is installed.
    """
    card = getattr(model, "model_card_data", None)
    candidates = [getattr(card, "model_id", None), getattr(card, "base_model", None)]
    transformer = getattr(model, "transformers_model", None)
    candidates.append(getattr(getattr(transformer, "config", None), "name_or_path", None))
    candidates.append(getattr(getattr(model, "tokenizer", None), "name_or_path", None))
    for name in candidates:
        if isinstance(name, str) and name:
            return DEFAULT_MODEL if name == resolve_model_path(DEFAULT_MODEL) else name
    raise ConfigurationError(
        f"cannot tell which model this {type(model).__name__} is (no name or path); "
        "pass namespace='<model-name>' so that different models never share entries"
    )


def cached_sentence_transformer(
    model: Any, cache: Store | str | None = None, *, namespace: str | None = None, **options: Any
) -> CachedSentenceTransformer:
    """``model`` with a cached ``encode``; same as ``Cached(model, ...)``."""
    return CachedSentenceTransformer(model, cache, namespace=namespace, **options)


wrap = cached_sentence_transformer
