"""Helpers for the adapter tests: a deterministic bag-of-words embedding and a corpus it can search."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from cachedembed import Cached
from cachedembed.stores import close_all

CORPUS = [
    "apples grow on trees in the orchard",
    "the ocean is deep and full of fish",
    "mountains are covered in snow in winter",
    "a violin has four strings and a bow",
    "bread is baked in a hot oven",
]


def words_vector(text: str, dim: int = 256) -> list[float]:
    """Each word of four letters or more adds to its hashed dimension; unit length. Float64 values, as most SDKs return.

    Texts sharing words point the same way, so retrieval results are predictable; the
    tiny per-text offset makes every vector distinct in its last bits (float32 rounding
    matters).
    """
    vec = np.full(dim, 1e-3 * (xxhash.xxh32_intdigest(text.encode()) % 997 + 1) / 997)
    for word in re.findall(r"\w{4,}", text.lower()):  # short words ("the", "on") carry no topic
        vec[xxhash.xxh32_intdigest(word.encode()) % dim] += 1.0
    return (vec / np.linalg.norm(vec)).tolist()


def check_namespaces(
    db: Path, index: Callable[[Any], object], same: Any, other: Any, secret: bytes
) -> None:
    """After a first model indexed into ``db``: ``same`` (differing only in an option that
    does not change vectors) reuses its entries, ``other`` (another model) gets its own,
    and the model's secret is nowhere in the cache file.

    ``index(wrapped)`` embeds the corpus through a wrapped model; models record ``calls``.
    """
    url = f"sqlite:///{db}"
    index(Cached(same, url))
    index(Cached(other, url))
    assert same.calls == [] and len(other.calls) == 1
    close_all()
    assert secret not in db.read_bytes()
