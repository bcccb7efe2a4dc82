"""Turning Chroma ``Images`` (numpy arrays, already checked by ``check_images``) into what
models and APIs take: Pillow images, and PNG data URIs for remote multimodal providers.

Pillow is imported on first use (the ``images`` extra, or any Pillow).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from ..errors import ConfigurationError, InvalidInputError


def to_uint8(image: np.ndarray, provider: str) -> np.ndarray:
    """``image`` as uint8 pixels: uint8 as is, floats as values in [0, 1], bool as black/white.

    Raises :class:`InvalidInputError` for values out of those ranges or a channel count
    other than 1, 3 (RGB) or 4 (RGBA), rather than letting them wrap or be misread.
    """
    pixels = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    if pixels.ndim == 3 and pixels.shape[2] not in (3, 4):
        raise InvalidInputError(
            f"{provider}: an image has {pixels.shape[2]} channels; expected 1, 3 (RGB) or 4 (RGBA)"
        )
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if pixels.dtype.kind == "f":
        if pixels.min() < 0 or pixels.max() > 1:
            raise InvalidInputError(f"{provider}: float images must hold values in [0, 1]")
        return np.rint(pixels * 255).astype(np.uint8)
    if pixels.dtype != np.uint8:
        if pixels.min() < 0 or pixels.max() > 255:
            raise InvalidInputError(f"{provider}: integer images must hold values in 0..255")
        return pixels.astype(np.uint8)
    return pixels


def to_pil(image: np.ndarray, provider: str) -> Any:
    """A Pillow image of ``image`` (see :func:`to_uint8`)."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigurationError(
            f"{provider}: embedding images needs Pillow; pip install 'cachedembed[images]'"
        ) from None
    return Image.fromarray(np.ascontiguousarray(to_uint8(image, provider)))


def png_data_uri(image: np.ndarray, provider: str) -> str:
    """``data:image/png;base64,...`` of ``image``: lossless, so the provider sees these pixels."""
    buffer = io.BytesIO()
    to_pil(image, provider).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
