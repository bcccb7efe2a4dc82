"""Jina's multimodal models through the cache, against a loopback server speaking Jina's format.

``POST /v1/embeddings`` with ``input: [{"image": "data:image/png;base64,..."}]``: the fake
decodes each PNG and derives the vector from the decoded pixels, so a test can tell that
the provider received exactly the array the cache keyed.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xxhash
from PIL import Image

from cachedembed import Cached
from cachedembed.embedding_functions import JinaEmbeddingFunction
from cachedembed.errors import InvalidInputError
from tests.images.imagefns import image
from tests.providers.fakes import serve, tokens_of
from tests.providers.loopback import LoopbackServer, Request
from tests.providers.scenarios import FAST
from tests.providers.test_jina import JinaFake

PNG_URI = "data:image/png;base64,"
IMAGE_TOKENS = 1000  # what the fake bills per image


def pixels_key(pixels: np.ndarray) -> str:
    """How the fake names an image it received: by its decoded pixels."""
    return f"image:{pixels.shape}:{xxhash.xxh3_64_hexdigest(pixels.tobytes())}"


class JinaClipFake(JinaFake):
    model = "jina-clip-v2"

    def texts(self, request: Request) -> list[str]:
        return [self._item(item) for item in request.body["input"]]

    def _item(self, item: Any) -> str:
        if isinstance(item, str):
            return item
        uri = item["image"]
        if not uri.startswith(PNG_URI):
            raise TypeError("image is not a PNG data URI")
        decoded = Image.open(io.BytesIO(base64.b64decode(uri[len(PNG_URI) :], validate=True)))
        return pixels_key(np.asarray(decoded))

    def respond(self, texts: list[str], vectors: list[np.ndarray], request: Request) -> Any:
        body = super().respond(texts, vectors, request)
        used = sum(IMAGE_TOKENS if t.startswith("image:") else tokens_of(t) for t in texts)
        body["usage"] = {"total_tokens": used, "prompt_tokens": used}
        return body


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> JinaClipFake:
    fake = JinaClipFake()
    monkeypatch.setenv("JINA_API_KEY", fake.key)
    return fake


@pytest.fixture
def server(fake: JinaClipFake) -> Iterator[LoopbackServer]:
    with serve(fake) as running:
        yield running


def clip(server: LoopbackServer, **options: Any) -> JinaEmbeddingFunction:
    return JinaEmbeddingFunction(
        model_name="jina-clip-v2", api_base=server.url, retry=FAST, **options
    )


def test_images_are_sent_as_png_data_uris_and_each_is_paid_for_once(
    fake: JinaClipFake, server: LoopbackServer
) -> None:
    ef = Cached(clip(server), "memory://")
    pics = [image(i, (12, 9, 3)) for i in range(3)]
    first = ef([*pics, pics[0]])
    sent = server.requests[0].body["input"]
    assert len(server.requests) == 1 and len(sent) == 3
    assert all(set(item) == {"image"} and item["image"].startswith(PNG_URI) for item in sent)
    expected = fake.expected([pixels_key(p) for p in [*pics, pics[0]]])
    assert [v.tobytes() for v in first] == [v.tobytes() for v in expected]
    again = ef(list(reversed(pics)))
    assert len(server.requests) == 1
    assert [v.tobytes() for v in again] == [v.tobytes() for v in expected[2::-1]]
    stats = ef.stats()
    assert stats["tokens_embedded"] == 3 * IMAGE_TOKENS  # the provider's bill, exactly
    assert stats["tokens_saved"] == 4 * IMAGE_TOKENS  # the duplicate, then three hits


def test_float_grey_and_rgba_images_reach_the_provider_as_the_pixels_they_mean(
    fake: JinaClipFake, server: LoopbackServer
) -> None:
    grey = image(4, (10, 10))
    rgba = image(5, (6, 7, 4))
    floats = np.linspace(0, 1, 5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    Cached(clip(server), "memory://")([grey, rgba, floats])
    assert fake.batches[0] == [
        pixels_key(grey),
        pixels_key(rgba),
        pixels_key(np.rint(floats * 255).astype(np.uint8)),
    ]


def test_many_images_are_split_into_bounded_requests(
    fake: JinaClipFake, server: LoopbackServer
) -> None:
    ef = Cached(clip(server), "memory://")
    ef([image(100 + i, (4, 4, 3)) for i in range(40)])
    # Requests go out concurrently (arrival order undefined): compare the sizes, not their order.
    assert sorted(len(b) for b in fake.batches) == [8, 16, 16]


def test_image_queries_and_text_queries_use_one_space_and_their_own_entries(
    fake: JinaClipFake, server: LoopbackServer
) -> None:
    ef = Cached(clip(server), "memory://")
    ef.embed_query([image(7)])
    ef.embed_query(["a red square"])
    ef.embed_query([image(7)])
    ef.embed_query(["a red square"])
    assert fake.batches == [[pixels_key(image(7))], ["a red square"]]
    assert {ns.spec.kind for ns in ef.namespaces() if ns.spec.role == "query"} == {"text", "image"}


def test_a_text_model_refuses_images_and_an_unsendable_image_fails_before_any_request(
    server: LoopbackServer,
) -> None:
    text_model = JinaEmbeddingFunction(model_name="jina-embeddings-v3", api_base=server.url)
    with pytest.raises(InvalidInputError, match="embeds texts only"):
        Cached(text_model, "memory://")([image(8)])
    too_bright = np.full((4, 4, 3), 1.5, np.float32)
    with pytest.raises(InvalidInputError, match=r"values in \[0, 1\]"):
        Cached(clip(server), "memory://")([image(9), too_bright])
    assert server.requests == []


async def test_images_from_an_async_call_go_out_as_concurrent_coroutines(
    fake: JinaClipFake, server: LoopbackServer
) -> None:
    fn = clip(server)
    fn.max_image_batch = 2
    ef = Cached(fn, "memory://", concurrency=2)
    pics = [image(i, (8, 8, 3)) for i in range(4)]
    vectors = await ef.acall(pics)
    expected = fake.expected([pixels_key(p) for p in pics])
    assert [v.tobytes() for v in vectors] == [v.tobytes() for v in expected]
    assert sorted(len(r.body["input"]) for r in server.requests) == [2, 2]
    assert ef.stats()["tokens_embedded"] == 4 * IMAGE_TOKENS
