"""Chroma multimodal collections through the cache: images, image queries, text queries, URIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.utils.data_loaders import ImageLoader
from chromadb.utils.embedding_functions import register_embedding_function
from PIL import Image

from cachedembed import Cached
from tests.images.imagefns import PixelStatsEF, image, pixel_features

REPO = Path(__file__).resolve().parents[2]

# What a user does for a function of their own: Chroma rebuilds it from the persisted config.
register_embedding_function(PixelStatsEF)


def test_collection_adds_images_and_answers_image_and_text_queries_through_the_cache(
    tmp_path: Path,
) -> None:
    fn = PixelStatsEF()
    ef = Cached(fn, f"sqlite:///{tmp_path / 'c.db'}")
    col = chromadb.EphemeralClient().create_collection("pics", embedding_function=ef)  # type: ignore[arg-type]
    pics = [image(i) for i in range(4)]
    col.add(ids=["a", "b", "c", "d"], images=pics)
    assert fn.images_embedded == 4
    stored = col.get(ids=["c"], include=["embeddings"])["embeddings"]
    assert np.asarray(stored[0], np.float32).tobytes() == pixel_features(pics[2]).tobytes()

    col.add(ids=["a2", "b2"], images=[pics[0].copy(), pics[1].copy()])  # re-adding: no model call
    assert fn.images_embedded == 4

    found = col.query(query_images=[pics[3]], n_results=1)
    assert found["ids"][0][0] == "d"
    col.query(query_images=[pics[3]], n_results=1)
    assert fn.images_embedded == 5  # the query role embedded it once
    col.query(query_texts=["a photo of a cat"], n_results=2)
    col.query(query_texts=["a photo of a cat"], n_results=2)
    assert fn.texts_embedded == ["a photo of a cat"]
    kinds = {(ns.spec.role, ns.spec.kind) for ns in ef.namespaces()}
    assert {("document", "image"), ("query", "image"), ("query", "text")} <= kinds


def test_image_loader_uris_are_keyed_by_the_pixels_they_load(tmp_path: Path) -> None:
    fn = PixelStatsEF()
    ef = Cached(fn, f"sqlite:///{tmp_path / 'c.db'}")
    pics = [image(10 + i, (9, 7, 3)) for i in range(3)]
    paths = []
    for i, pic in enumerate(pics):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(pic).save(paths[-1])
    copy = tmp_path / "copy-of-0.png"
    copy.write_bytes(Path(paths[0]).read_bytes())
    col = chromadb.EphemeralClient().create_collection(
        "files",
        embedding_function=ef,  # type: ignore[arg-type]
        data_loader=ImageLoader(),
    )
    col.add(ids=["0", "1", "2"], uris=paths)
    assert fn.images_embedded == 3
    col.add(ids=["0-copy"], uris=[str(copy)])  # another file, the same pixels: a hit
    assert fn.images_embedded == 3
    assert ef([pics[1]])[0].tobytes() == pixel_features(pics[1]).tobytes()  # PNG is lossless
    assert fn.images_embedded == 3
    found = col.query(query_uris=[paths[2]], n_results=1)
    assert found["ids"][0][0] == "2"


CHILD = textwrap.dedent(
    """
    import json, sys
    import chromadb
    from chromadb.utils.embedding_functions import register_embedding_function
    from cachedembed import Cached
    from tests.images.imagefns import PixelStatsEF, image

    register_embedding_function(PixelStatsEF)
    made = []
    original = PixelStatsEF.__call__
    def counting(self, input):
        made.extend(type(i).__name__ for i in input)
        return original(self, input)
    PixelStatsEF.__call__ = counting

    path, cache, mode = sys.argv[1:4]
    client = chromadb.PersistentClient(path=path)
    if mode == "create":
        col = client.create_collection("pics", embedding_function=Cached(PixelStatsEF(), cache))
    else:
        col = client.get_collection("pics")
    col.upsert(ids=["1", "2"], images=[image(1), image(2)])
    found = col.query(query_images=[image(2)], n_results=1)["ids"][0]
    ef = col.configuration["embedding_function"]
    print(json.dumps({"type": type(ef).__name__, "made": made, "found": found, "stats": ef.stats()}))
    """
)


@pytest.mark.slow
def test_persisted_multimodal_collection_rebuilds_the_cache_in_a_new_process(
    tmp_path: Path,
) -> None:
    cache = f"sqlite:///{tmp_path / 'cache.db'}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(mode: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "chroma"), cache, mode],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    created = run("create")
    assert created["made"] == ["ndarray"] * 3 and created["found"] == ["2"]
    reopened = run("open")
    assert reopened["type"] == "Cached"
    assert reopened["made"] == []  # known images and image query: no model call
    stats = reopened["stats"]
    assert isinstance(stats, dict) and (stats["hits"], stats["misses"]) == (3, 3)
