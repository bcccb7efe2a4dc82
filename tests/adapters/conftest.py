"""Helpers for the adapter tests: a deterministic bag-of-words embedding and a corpus it can search."""

from __future__ import annotations

import re

import numpy as np
import xxhash

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
