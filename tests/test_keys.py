"""Keys: canonical namespaces, injective item hashes, clear errors for text that cannot be keyed."""

from __future__ import annotations

import numpy as np
import pytest

from cachedembed.errors import InvalidInputError
from cachedembed.keys import ItemHasher, NamespaceSpec, canonical_json


def spec(**identity: object) -> NamespaceSpec:
    return NamespaceSpec(identity={"provider": "p", "model": "m", **identity}, role="document")


def test_canonical_json_ignores_key_order_and_whitespace() -> None:
    assert (
        canonical_json({"b": 1, "a": [1, 2]})
        == canonical_json({"a": [1, 2], "b": 1})
        == '{"a":[1,2],"b":1}'
    )


def test_namespace_key_changes_with_every_field() -> None:
    base = spec()
    variants = [
        spec(model2="x"),
        spec(dimensions=256),
        NamespaceSpec(identity=base.identity, role="query"),
        NamespaceSpec(identity=base.identity, role="document", dtype="float16"),
        NamespaceSpec(identity=base.identity, role="document", hash="blake2b"),
    ]
    keys = {base.key, *(v.key for v in variants)}
    assert len(keys) == 1 + len(variants)
    assert len(base.key) == 32


def test_namespace_fields_cannot_be_confused_by_concatenation() -> None:
    # "ab"+"c" and "a"+"bc" must not collide: fields are JSON values, not concatenated text.
    assert spec(model="ab", task="c").key != spec(model="a", task="bc").key


def test_item_keys_are_deterministic_and_namespace_scoped() -> None:
    h1, h2 = ItemHasher(spec()), ItemHasher(spec(dimensions=3))
    ids1, checks1 = h1.text_keys(["hello", "world", "hello"])
    assert ids1[0] == ids1[2] and ids1[0] != ids1[1]
    assert ItemHasher(spec()).text_keys(["hello"]) == ([ids1[0]], [checks1[0]])
    ids2, _ = h2.text_keys(["hello"])
    assert ids2[0] != ids1[0]
    assert all(-(2**63) <= i < 2**63 for i in ids1 + checks1)


def test_nfc_and_nfd_spellings_are_different_keys() -> None:
    ids, _ = ItemHasher(spec()).text_keys(["caf\u00e9", "cafe\u0301"])
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", b"bytes"], r"input\[1\] is bytes, expected str \(decode bytes first\)"),
        (["ok", None], r"input\[1\] is NoneType, expected str"),
        (["\ud800 lone"], r"input\[0\] is not valid Unicode text"),
    ],
)
def test_unkeyable_text_is_rejected_with_its_position(texts: list[object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ItemHasher(spec()).text_keys(texts)  # type: ignore[arg-type]


def test_array_keys_use_dtype_shape_and_bytes() -> None:
    hasher = ItemHasher(spec())
    a = np.arange(6, dtype=np.float32)
    ids, _ = hasher.array_keys([a, a.reshape(2, 3), a.astype(np.float64), a.copy()])
    assert ids[0] == ids[3]
    assert len({ids[0], ids[1], ids[2]}) == 3
    # An image's key never equals a text's key, whatever the text.
    assert hasher.text_keys([a.tobytes().decode("latin-1")])[0][0] != ids[0]


def test_blake2b_keys_depend_on_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    s = NamespaceSpec(identity={"provider": "p"}, role="document", hash="blake2b")
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "one")
    first = ItemHasher(s).text_keys(["x"])
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "two")
    assert ItemHasher(s).text_keys(["x"]) != first
