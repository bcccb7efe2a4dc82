"""A deterministic multimodal embedding function of the tests' own, in Chroma's shape.

Like Chroma's ``OpenCLIPEmbeddingFunction`` it embeds ``Documents`` and ``Images`` into one
space, item by item; its image vectors are exact functions of the pixels (channel means,
a brightness histogram, the shape), so a test can compute what the cache must return.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from tests.conftest import fake_vector

DIM = 12


def pixel_features(image: np.ndarray) -> np.ndarray:
    """The vector PixelStatsEF gives ``image``: float64 maths, one float32 rounding at the end."""
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    scale = 255.0 if np.issubdtype(image.dtype, np.integer) else 1.0
    pixels = pixels / scale
    means = [pixels[..., c % pixels.shape[2]].mean() for c in range(3)]
    hist, _ = np.histogram(pixels.mean(axis=2), bins=7, range=(0.0, 1.0))
    shape = [pixels.shape[0] / 1000, pixels.shape[1] / 1000]
    return np.array([*means, *(hist / hist.sum()), *shape], dtype=np.float32)


class PixelStatsEF:
    """Chroma-protocol multimodal function that records every item it embeds."""

    def __init__(self, model: str = "pixelstats-1") -> None:
        self.model = model
        self.calls: list[list[Any]] = []
        self._lock = threading.Lock()

    def __call__(self, input: list[Any]) -> list[np.ndarray]:
        with self._lock:
            self.calls.append(list(input))
        return [
            pixel_features(item) if isinstance(item, np.ndarray) else fake_vector(item, DIM)
            for item in input
        ]

    @staticmethod
    def name() -> str:
        return "pixelstats"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> PixelStatsEF:
        return PixelStatsEF(**config)

    def default_space(self) -> str:
        return "l2"  # Chroma stores l2 vectors as given (cosine ones it normalises)

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    @property
    def images_embedded(self) -> int:
        return sum(isinstance(i, np.ndarray) for call in self.calls for i in call)

    @property
    def texts_embedded(self) -> list[str]:
        return [i for call in self.calls for i in call if isinstance(i, str)]


def image(seed: int, shape: tuple[int, ...] = (8, 6, 3), dtype: str = "uint8") -> np.ndarray:
    """A reproducible random image."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, 256, size=shape).astype(dtype)
