"""OpenCLIP, run locally: texts and images embedded into one space (Chroma's class of the same name).

Needs the ``images`` extra (``pip install 'cachedembed[images]'``: open_clip_torch, which
brings torch and torchvision, and Pillow). Unlike Chroma's class, the model is loaded once
per (model, checkpoint, device) and shared, is put in evaluation mode (BatchNorm models
such as RN50 otherwise give batch-dependent vectors and drift with every call), and
embeds its inputs in batches.

``checkpoint`` is an OpenCLIP pretrained tag (``laion2b_s34b_b79k``, downloaded by
open_clip on first use) or the path of a local checkpoint file; ``None`` builds the
architecture with random weights (for tests: every load gives other weights, so a
random model is never cached across processes - its namespace says ``random``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigurationError
from ..keys import Role
from ._base import EmbeddedBatch, ProviderEmbeddingFunction, as_matrix
from ._images import to_pil

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_CHECKPOINT = "laion2b_s34b_b79k"

_INSTALL_HINT = "install the images extra: pip install 'cachedembed[images]'"

_loaded: dict[tuple[str, str | None, str], _Model] = {}
_loaded_lock = threading.Lock()


class _Model:
    """A loaded OpenCLIP model with its preprocessing and tokenizer (shared per key)."""

    def __init__(self, model_name: str, checkpoint: str | None, device: str) -> None:
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise ConfigurationError(
                f"open_clip: cannot import {exc.name}; {_INSTALL_HINT}"
            ) from None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=checkpoint, device=device
            )
        except RuntimeError as exc:  # unknown model/tag, or a download that cannot happen
            raise ConfigurationError(
                f"open_clip: cannot load {model_name!r} with checkpoint {checkpoint!r}: "
                f"{str(exc).strip().splitlines()[0]}"
            ) from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.torch = torch
        self.device = device
        self.lock = threading.Lock()  # one forward pass at a time per model

    def encode(self, items: Sequence[Any], kind: str) -> np.ndarray:
        torch = self.torch
        with self.lock, torch.no_grad():
            if kind == "image":
                batch = torch.stack([self.preprocess(to_pil(i, "open_clip")) for i in items])
                features = self.model.encode_image(batch.to(self.device))
            else:
                features = self.model.encode_text(self.tokenizer(list(items)).to(self.device))
            features = features / features.norm(dim=-1, keepdim=True)
            return features.float().cpu().numpy()


def load_model(model_name: str, checkpoint: str | None, device: str) -> _Model:
    """Load (once per process) the OpenCLIP model for this key."""
    key = (model_name, checkpoint, device)
    model = _loaded.get(key)
    if model is None:
        with _loaded_lock:
            model = _loaded.get(key)
            if model is None:
                model = _loaded[key] = _Model(model_name, checkpoint, device)
    return model


class OpenCLIPEmbeddingFunction(ProviderEmbeddingFunction):
    """Texts and images into one CLIP space, locally; vectors are L2-normalised (as Chroma's).

    The model, checkpoint and a local checkpoint file's size and modification time are the
    cache namespace; ``device`` is not.
    """

    provider = "open_clip"
    accepts_images = True
    batch_size = 32

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        checkpoint: str | None = DEFAULT_CHECKPOINT,
        device: str | None = "cpu",
    ) -> None:
        self.model_name = model_name
        self.checkpoint = checkpoint
        self.device = device or "cpu"

    spec_options: ClassVar[Mapping[str, type]] = {"checkpoint": str, "device": str}

    @classmethod
    def spec_help(cls) -> str:
        return "open_clip:MODEL_NAME  (local, texts and images; needs cachedembed[images])"

    @property
    def model(self) -> _Model:
        return load_model(self.model_name, self.checkpoint, self.device)

    def check_available(self) -> None:
        import importlib.util

        if importlib.util.find_spec("open_clip") is None:
            raise ConfigurationError(f"open_clip is not installed; {_INSTALL_HINT}")

    def prepare(self) -> None:
        self.model  # noqa: B018 - loading is the point: keep it out of measured provider time

    def embed_batches(self, texts: Sequence[Any], role: Role) -> Iterator[EmbeddedBatch]:
        """Embed texts or images (one kind per call, as :func:`check_input` ensures)."""
        kind = "image" if texts and isinstance(texts[0], np.ndarray) else "text"
        model = self.model
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            vectors = model.encode(chunk, kind)
            yield EmbeddedBatch(start, as_matrix(self.provider, vectors, len(chunk)), None)

    def cache_identity(self, role: Role) -> dict[str, Any]:
        # Queries and documents are embedded alike; the role keeps them apart anyway.
        return {"provider": self.provider, "model": self.model_name, "checkpoint": self._weights()}

    def _weights(self) -> Any:
        """What names the weights: the tag, or a local file with its size and modification time
        (a replaced file is another namespace); random weights get a namespace per process."""
        if self.checkpoint is None:
            return f"random:{os.getpid()}:{id(self.model)}"
        if os.path.isfile(self.checkpoint):
            st = os.stat(self.checkpoint)
            return {
                "file": os.path.abspath(self.checkpoint),
                "bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
        return self.checkpoint

    def get_config(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "checkpoint": self.checkpoint, "device": self.device}

    def validate_config_update(
        self, old_config: Mapping[str, Any], new_config: Mapping[str, Any]
    ) -> None:
        for key in ("model_name", "checkpoint"):
            if key in new_config and new_config[key] != old_config.get(key):
                raise ValueError(f"open_clip: the {key} cannot be changed after creation")

    def default_space(self) -> str:
        return "cosine"
