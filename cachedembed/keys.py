"""Cache keys: canonical namespace specs and per-item content hashes.

A cache entry is addressed by two things:

* the *namespace*: everything about the model that changes the vectors (provider,
  model, dimensions, task, role, storage dtype, ...). It is a JSON object written
  canonically (sorted keys, no whitespace, UTF-8), so equal specs give equal bytes
  and different specs never do - no ambiguous string concatenation.
* the *item*: an xxh3-128 hash of the text's UTF-8 bytes, seeded by the namespace.

The 128-bit item hash is split in two signed 64-bit integers: ``id`` is the row's
integer primary key (the fastest lookup SQLite has), ``check`` is stored beside it
and compared on every read, together with the namespace id, so that a 64-bit id
collision is detected and treated as a miss instead of returning another text's vector.

For shared caches where texts may come from untrusted parties, ``hash="blake2b"``
switches items to keyed BLAKE2b-128 (key from ``$CACHEDEMBED_HASH_KEY``), which is
collision resistant; the hash name is part of the namespace, so the two never mix.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, Literal

import xxhash

from .errors import InvalidInputError
from .settings import hash_key

if TYPE_CHECKING:  # numpy loads on first use: `cachedembed stats` never needs it
    import numpy as np

KEY_SCHEMA = 1
"""Version of the key derivation; part of every namespace so a change never aliases old keys."""

Role = Literal["document", "query"]
HashName = Literal["xxh3", "blake2b"]
ItemKind = Literal["text", "image"]
"""What a namespace's items are: texts, or images (numpy pixel arrays, Chroma's ``Images``)."""

_U64 = struct.Struct("<Q")
_PAIR = struct.Struct("<qq")
"""A 16-byte digest as (id, check): the split :meth:`ItemHasher._keys` makes with numpy."""


def canonical_json(value: Any) -> str:
    """Serialise ``value`` to the one canonical JSON text used for namespace keys."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


@dataclass(frozen=True)
class NamespaceSpec:
    """Everything that identifies one namespace: what produced the vectors and how they are stored.

    ``identity`` holds the provider, model and every output-changing parameter; ``role`` is
    ``document`` or ``query``; ``dtype`` is the storage dtype (``float32``, or ``float16`` in the
    opt-in compact mode); ``hash`` names the item hash; ``kind`` says whether the items are
    texts or images, so a multimodal model's text and image entries live apart (and are
    counted and listed apart).
    """

    identity: Mapping[str, Any]
    role: Role
    dtype: str = "float32"
    hash: HashName = "xxh3"
    kind: ItemKind = "text"

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "v": KEY_SCHEMA,
            "identity": dict(self.identity),
            "role": self.role,
            "dtype": self.dtype,
            "hash": self.hash,
        }
        if self.kind != "text":
            # Only written when not text, so every text namespace keeps the key it always had.
            spec["kind"] = self.kind
        return spec

    @property
    def canonical(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def key(self) -> str:
        """32 hex digits naming the namespace in every store."""
        return xxhash.xxh3_128_hexdigest(self.canonical.encode())

    @property
    def provider(self) -> str:
        return str(self.identity.get("provider", "custom"))

    @property
    def model(self) -> str:
        return str(self.identity.get("model", self.identity.get("namespace", "")))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NamespaceSpec:
        return cls(
            identity=data["identity"],
            role=data["role"],
            dtype=data.get("dtype", "float32"),
            hash=data.get("hash", "xxh3"),
            kind=data.get("kind", "text"),
        )


class ItemHasher:
    """Hashes texts (and arrays) of one namespace into ``(id, check)`` integer pairs."""

    __slots__ = ("_blake_key", "_hash", "_seed")

    def __init__(self, spec: NamespaceSpec) -> None:
        self._hash = spec.hash
        self._seed = xxhash.xxh3_64_intdigest(spec.canonical.encode())
        self._blake_key = b""
        if spec.hash == "blake2b":
            secret = hash_key()
            # The namespace key is mixed in so equal texts differ across namespaces;
            # BLAKE2b keys are at most 64 bytes, hence the pre-hash.
            self._blake_key = hashlib.blake2b(secret + spec.key.encode(), digest_size=32).digest()
        elif spec.hash != "xxh3":
            raise ValueError(f"unknown hash {spec.hash!r}: use 'xxh3' or 'blake2b'")

    def text_keys(self, texts: Sequence[str]) -> tuple[list[int], list[int]]:
        """Return parallel lists of ids and checks for ``texts``.

        Raises :class:`InvalidInputError` naming the first item that is not a ``str`` or
        cannot be encoded as UTF-8 (a lone surrogate), before anything is looked up.
        """
        ids, checks = self.text_key_arrays(texts)
        return ids.tolist(), checks.tolist()

    def text_key(self, text: str) -> tuple[int, int]:
        """One text's id and check, as :meth:`text_keys` gives them, without arrays (a search query).

        Raises ``UnicodeEncodeError`` for a text UTF-8 cannot encode (:meth:`text_keys` names it).
        """
        if self._hash == "xxh3":
            digest = xxhash.xxh3_128_digest(text.encode(), self._seed)
        else:
            digest = hashlib.blake2b(text.encode(), key=self._blake_key, digest_size=16).digest()
        pair: tuple[int, int] = _PAIR.unpack(digest)
        return pair

    def text_key_arrays(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`text_keys` as two int64 arrays (the hit path's form)."""
        try:
            encoded = list(map(str.encode, texts))  # UTF-8, strict
        except (TypeError, UnicodeEncodeError):
            _raise_for_bad_text(texts)
            raise
        return self._keys(encoded)

    def array_keys(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Key numpy inputs (Chroma ``Images``) by dtype, shape and bytes - injectively."""
        import numpy as np

        blobs = []
        for a in arrays:
            arr = np.ascontiguousarray(a)
            header = canonical_json({"dtype": arr.dtype.str, "shape": list(arr.shape)}).encode()
            # Length-prefixed header then raw bytes: unambiguous; the 0xFF lead byte can
            # never start valid UTF-8, so no text maps to the same bytes.
            blobs.append(b"\xff" + _U64.pack(len(header)) + header + arr.tobytes())
        return self._keys(blobs)

    def _keys(self, blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        # The 16-byte digests, joined and read as little-endian int64 pairs: the first is
        # the id, the second the check (the same split as struct "<qq" per digest, without
        # a Python loop or two int objects per text).
        import numpy as np

        if self._hash == "xxh3":
            digests = b"".join(map(xxhash.xxh3_128_digest, blobs, repeat(self._seed)))
        else:
            key = self._blake_key
            blake = hashlib.blake2b
            digests = b"".join([blake(b, key=key, digest_size=16).digest() for b in blobs])
        pairs = np.frombuffer(digests, dtype="<i8").reshape(len(blobs), 2).astype(np.int64)
        return pairs[:, 0], pairs[:, 1]


def _raise_for_bad_text(texts: Sequence[Any]) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(
                f"input[{i}] is {type(t).__name__}, expected str"
                + (" (decode bytes first)" if isinstance(t, (bytes, bytearray)) else "")
            )
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"input[{i}] is not valid Unicode text: {exc.reason} at position {exc.start} "
                "(a lone surrogate cannot be encoded as UTF-8)"
            ) from None
