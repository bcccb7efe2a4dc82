"""OpenCLIP through the cache, with real open_clip code: ours and Chroma's own class."""

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
from chromadb.utils.embedding_functions import OpenCLIPEmbeddingFunction as ChromaOpenCLIP

from cachedembed import Cached
from cachedembed.embedding_functions import OpenCLIPEmbeddingFunction
from cachedembed.errors import InvalidInputError
from tests.images.imagefns import image
from tests.images.open_clip.conftest import MODEL

REPO = Path(__file__).resolve().parents[3]


def pictures(n: int) -> list[np.ndarray]:
    return [image(i, (40, 56, 3)) for i in range(n)]


def test_texts_and_images_share_one_space_and_come_back_bit_exact(
    checkpoint: str, cache: str
) -> None:
    fn = OpenCLIPEmbeddingFunction(MODEL, checkpoint=checkpoint)
    direct_images, direct_texts = fn(pictures(3)), fn(["a red square", "a cat"])
    ef = Cached(fn, cache)
    assert [v.tobytes() for v in ef(pictures(3))] == [v.tobytes() for v in direct_images]
    assert [v.tobytes() for v in ef(["a red square", "a cat"])] == [
        v.tobytes() for v in direct_texts
    ]
    assert {v.shape for v in direct_images + direct_texts} == {(384,)}
    np.testing.assert_allclose([np.linalg.norm(v) for v in direct_images], 1.0, rtol=1e-5)

    again = Cached(OpenCLIPEmbeddingFunction(MODEL, checkpoint=checkpoint), cache)
    served = again(pictures(3))
    assert [v.tobytes() for v in served] == [v.tobytes() for v in direct_images]
    stats = again.stats()
    assert (stats["provider_calls"], stats["hits"], stats["misses"]) == (2, 3, 5)


def test_the_model_loads_once_in_evaluation_mode_and_rebuilding_from_config_is_cheap(
    checkpoint: str,
) -> None:
    first = OpenCLIPEmbeddingFunction(MODEL, checkpoint=checkpoint)
    rebuilt = OpenCLIPEmbeddingFunction.build_from_config(first.get_config())
    assert rebuilt.model is first.model
    assert first.model.model.training is False
    assert rebuilt.cache_identity("document") == first.cache_identity("document")


def test_images_open_clip_cannot_read_are_refused_before_the_model_runs(
    checkpoint: str, cache: str
) -> None:
    ef = Cached(OpenCLIPEmbeddingFunction(MODEL, checkpoint=checkpoint), cache)
    with pytest.raises(InvalidInputError, match=r"values in \[0, 1\]"):
        ef([np.full((8, 8, 3), 2.5, np.float32)])
    with pytest.raises(InvalidInputError, match="channels"):
        ef([np.zeros((8, 8, 2), np.uint8)])
    assert ef.stats()["misses"] == 0


def test_chromas_own_open_clip_function_works_through_the_cache(
    checkpoint: str, cache: str
) -> None:
    inner = ChromaOpenCLIP(MODEL, checkpoint=checkpoint)
    ef = Cached(inner, cache)
    col = chromadb.EphemeralClient().create_collection("pics", embedding_function=ef)  # type: ignore[arg-type]
    col.add(ids=["0", "1", "2"], images=pictures(3))
    col.add(ids=["0b", "1b", "2b"], images=pictures(3))  # the same pixels again
    found = col.query(query_images=pictures(3)[1:2], n_results=2)
    assert set(found["ids"][0]) == {"1", "1b"}
    col.query(query_texts=["a photo of noise"], n_results=1)
    stats = ef.stats()
    assert (stats["misses"], stats["hits"]) == (3 + 1 + 1, 3)
    assert ef.identity("document")["provider"] == "chroma:open_clip"  # device is not in it


CHILD = textwrap.dedent(
    """
    import json, sys
    import chromadb
    from cachedembed import Cached
    from cachedembed.embedding_functions import OpenCLIPEmbeddingFunction
    from tests.images.imagefns import image

    path, cache, checkpoint, mode = sys.argv[1:5]
    client = chromadb.PersistentClient(path=path)
    if mode == "create":
        ef = Cached(OpenCLIPEmbeddingFunction("ViT-S-32", checkpoint=checkpoint), cache)
        col = client.create_collection("pics", embedding_function=ef)
    else:
        col = client.get_collection("pics")
    col.upsert(ids=["1", "2"], images=[image(1, (30, 30, 3)), image(2, (30, 30, 3))])
    found = col.query(query_texts=["a cat"], n_results=2)["ids"][0]
    ef = col.configuration["embedding_function"]
    print(json.dumps({"type": type(ef).__name__, "found": sorted(found), "stats": ef.stats()}))
    """
)


def test_a_persisted_open_clip_collection_reopens_in_a_new_process_without_model_calls(
    checkpoint: str, cache: str, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(mode: str) -> dict[str, object]:
        argv = [sys.executable, str(script), str(tmp_path / "chroma"), cache, checkpoint, mode]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    created = run("create")
    reopened = run("open")
    assert reopened["type"] == "Cached" and reopened["found"] == created["found"] == ["1", "2"]
    stats = reopened["stats"]
    assert isinstance(stats, dict)
    assert (stats["provider_calls"], stats["hits"], stats["misses"]) == (2, 3, 3)
