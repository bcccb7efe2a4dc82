"""Images through the cache: Chroma's ``Images`` input, keyed by pixels, never mixed with texts."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cachedembed import Cached
from cachedembed.cli import main
from cachedembed.errors import InvalidInputError
from cachedembed.exchange import export_cache, import_cache
from cachedembed.manage import list_models
from cachedembed.stores import open_store
from tests.images.imagefns import PixelStatsEF, image, pixel_features


def test_images_come_back_bit_exact_in_input_order_and_each_distinct_image_is_embedded_once(
    cache_url: str,
) -> None:
    fn = PixelStatsEF()
    ef = Cached(fn, cache_url)
    a, b = image(1), image(2)
    first = ef([a, b, a.copy()])
    assert [v.tobytes() for v in first] == [pixel_features(x).tobytes() for x in (a, b, a)]
    assert fn.images_embedded == 2
    again = Cached(PixelStatsEF(), cache_url)([b, a])
    assert [v.tobytes() for v in again] == [first[1].tobytes(), first[0].tobytes()]
    stats = ef.stats()
    assert (stats["hits"], stats["misses"]) == (3, 2)


def test_the_same_pixels_in_another_dtype_or_shape_are_another_entry() -> None:
    fn = PixelStatsEF()
    ef = Cached(fn, "memory://")
    pixels = image(3, (4, 6, 3))
    variants = [
        pixels,
        pixels.astype(np.int16),
        pixels.reshape(6, 4, 3),
        pixels.reshape(4, 18),
        pixels.astype(">u2"),  # the same values, big-endian bytes
    ]
    ef(variants)
    assert fn.images_embedded == len(variants)
    # Memory layout is not the image: Fortran order and strided views of the same pixels
    # are keyed by their logical (C-order) bytes, so they hit.
    fortran = np.asfortranarray(pixels)
    strided = np.repeat(pixels, 2, axis=1)[:, ::2]
    assert not strided.flags.c_contiguous and np.array_equal(strided, pixels)
    assert [v.tobytes() for v in ef([fortran, strided])] == [pixel_features(pixels).tobytes()] * 2
    assert fn.images_embedded == len(variants)


def test_text_and_image_entries_of_one_model_live_in_separate_namespaces() -> None:
    fn = PixelStatsEF()
    ef = Cached(fn, "memory://")
    ef(["a red square"])
    ef([image(4)])
    ef.embed_query([image(4)])
    kinds = sorted((ns.spec.role, ns.spec.kind) for ns in ef.namespaces())
    assert kinds == [
        ("document", "image"),
        ("document", "text"),
        ("query", "image"),
        ("query", "text"),
    ]
    text_ns, image_ns = ef._engine.state("document").ns, ef._engine.state("document", "image").ns
    assert text_ns.key != image_ns.key
    assert text_ns.spec.identity == image_ns.spec.identity  # one model, two kinds of item


def test_text_namespace_keys_are_unchanged_by_image_support() -> None:
    """A cache written before images existed keeps serving its texts."""
    from cachedembed.keys import NamespaceSpec

    spec = NamespaceSpec(identity={"provider": "p", "model": "m"}, role="document")
    assert "kind" not in spec.to_dict()
    assert NamespaceSpec.from_dict(spec.to_dict()).kind == "text"
    image_spec = NamespaceSpec(identity=spec.identity, role="document", kind="image")
    assert NamespaceSpec.from_dict(image_spec.to_dict()) == image_spec
    assert image_spec.key != spec.key


BAD_IMAGES = {
    "object array": ([np.array([[1, "x"], [2, 3]], dtype=object)], "dtype object"),
    "NaN pixel": ([np.array([[0.5, np.nan]], dtype=np.float32)], "NaN or infinite"),
    "infinite pixel": ([np.full((2, 2), np.inf)], "NaN or infinite"),
    "no pixels": ([np.zeros((0, 4, 3), np.uint8)], "no pixels"),
    "1-D": ([np.zeros(5, np.uint8)], "2 or 3 dimensions"),
    "4-D": ([np.zeros((1, 2, 2, 3), np.uint8)], "2 or 3 dimensions"),
    "complex": ([np.zeros((2, 2), np.complex64)], "dtype complex64"),
    "image then text": ([image(5), "a caption"], "separate calls"),
    "text then image": (["a caption", image(5)], "separate calls"),
    "a bare array": (np.zeros((3, 4, 4), np.uint8), "list of images"),
}


@pytest.mark.parametrize("bad, message", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_image_input_is_refused_before_any_model_call_or_write(
    bad: object, message: str, tmp_path: object
) -> None:
    fn = PixelStatsEF()
    url = f"sqlite:///{tmp_path}/c.db"
    ef = Cached(fn, url)
    with pytest.raises(InvalidInputError, match=message):
        ef(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=message):
        ef.embed_query(bad)  # type: ignore[arg-type]
    assert fn.calls == []
    assert open_store(url).namespaces() == []


def test_a_shipped_text_only_function_refuses_images_before_calling_it() -> None:
    from cachedembed.embedding_functions import ProviderEmbeddingFunction

    class Texts(ProviderEmbeddingFunction):
        provider = "test-texts-only"
        calls = 0

        def embed_batches(self, texts, role):  # type: ignore[no-untyped-def]
            Texts.calls += 1
            raise AssertionError("never called")

        def cache_identity(self, role):  # type: ignore[no-untyped-def]
            return {"provider": "test-texts-only", "model": "t"}

        def get_config(self):  # type: ignore[no-untyped-def]
            return {}

    with pytest.raises(InvalidInputError, match="embeds texts only"):
        Cached(Texts(), "memory://")([image(6)])
    with pytest.raises(InvalidInputError, match="embeds texts only"):
        Texts()([image(6)])
    assert Texts.calls == 0


def test_store_text_keeps_texts_but_never_pixels(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    ef = Cached(PixelStatsEF(), url, store_text=True)
    ef(["a caption"])
    ef([image(7)])
    store = open_store(url)
    texts = {
        ns.spec.kind: [e.text for batch in store.iter_entries(ns.id) for e in batch]
        for ns in store.namespaces()
    }
    assert texts == {"text": ["a caption"], "image": [None]}


def test_image_queries_have_their_own_entries_and_come_back_exact() -> None:
    fn = PixelStatsEF()
    ef = Cached(fn, "memory://")
    q = image(8)
    assert ef.embed_query([q])[0].tobytes() == pixel_features(q).tobytes()
    assert ef.embed_query([q])[0].tobytes() == pixel_features(q).tobytes()
    ef([q])  # the document role is another namespace: embedded again, once
    assert fn.images_embedded == 2


def test_float16_and_blake2b_caches_take_images_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEDEMBED_HASH_KEY", "k")
    fn = PixelStatsEF()
    ef = Cached(fn, "memory://", dtype="float16", hash="blake2b")
    img = image(9, (5, 5), "float32")
    first = ef([img])[0]
    assert first.tobytes() == pixel_features(img).astype(np.float16).astype(np.float32).tobytes()
    assert ef([img])[0].tobytes() == first.tobytes() and fn.images_embedded == 1


def test_models_lists_the_item_kind_of_each_namespace(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    ef = Cached(PixelStatsEF(), url)
    ef([image(10), image(11)])
    ef(["a caption"])
    listed = sorted((m.role, m.kind, m.entries) for m in list_models(open_store(url)))
    assert listed == [("document", "image", 2), ("document", "text", 1)]
    table = CliRunner().invoke(main, ["models", "--cache", url]).output.splitlines()
    column = table[1].index("items")
    assert table[1].split()[2:4] == ["role", "items"]
    assert sorted(line[column:].split()[0] for line in table[2:]) == ["image", "text"]


def test_export_and_import_keep_image_entries_bit_exact(tmp_path: object) -> None:
    source = f"sqlite:///{tmp_path}/a.db"
    target = f"sqlite:///{tmp_path}/b.db"
    images = [image(i, (6, 6, 3)) for i in range(5)]
    vectors = Cached(PixelStatsEF(), source)(images)
    export_cache(open_store(source), f"{tmp_path}/out.jsonl.gz")
    import_cache(open_store(target), f"{tmp_path}/out.jsonl.gz")
    fn = PixelStatsEF()
    served = Cached(fn, target)(images)
    assert fn.calls == []
    assert [v.tobytes() for v in served] == [v.tobytes() for v in vectors]
    kinds = {(m.kind, m.entries) for m in list_models(open_store(target)) if m.entries}
    assert kinds == {("image", 5)}


def test_an_import_that_gives_an_image_entry_a_text_is_refused_whole(tmp_path: object) -> None:
    import gzip
    import json

    source, target = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    Cached(PixelStatsEF(), source)([image(1), image(2)])
    export_cache(open_store(source), f"{tmp_path}/out.jsonl.gz")
    with gzip.open(f"{tmp_path}/out.jsonl.gz", "rt") as fh:
        records = [json.loads(line) for line in fh]
    forged = [{**r, "text": "a caption"} if r.get("type") == "entry" else r for r in records]
    with gzip.open(f"{tmp_path}/forged.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in forged)
    with pytest.raises(InvalidInputError, match="image namespace carries a text"):
        import_cache(open_store(target), f"{tmp_path}/forged.jsonl.gz")
    assert open_store(target).namespaces() == []
