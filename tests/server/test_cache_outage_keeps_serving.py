"""A server whose cache goes down keeps answering, and says so in ``/healthz`` and ``/metrics``.

The cache is a ``redis-server`` of the test's own, killed mid-test and started again
(with its append-only file, as a production Redis would come back): every request is
answered with the provider's exact vectors; ``/healthz`` stays 200 but reports
``degraded`` with the store's error; ``/metrics`` shows the store down, the errors and
the entries waiting to be written. Once Redis is back, the health probe finds it, the
waiting entries are written, and the same texts are hits again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import requests

from cachedembed.stores import open_store
from cachedembed.stores.deferred import open_or_defer
from tests.stores.servers import own_redis

from .conftest import build
from .harness import scripted_vector, serving
from .test_operations import metrics


def embed(url: str, texts: list[str]) -> np.ndarray:
    response = requests.post(f"{url}/v1/embeddings", json={"model": "small", "input": texts})
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([scripted_vector(t, "small-1", 8) for t in texts])


def store_metrics(url: str) -> dict[str, float]:
    return {name: value for (name, labels), value in metrics(url).items() if "store" in name}


def test_a_cache_outage_is_served_through_and_reported_degraded_not_down(
    tmp_path: Path,
) -> None:
    before, during = ["cached one", "cached two"], ["new one", "new two", "new three"]
    with own_redis(str(tmp_path), "--appendonly", "yes", "--appendfsync", "always") as redis:
        store = open_store(redis.url)
        app, small, _ = build(store)
        with serving(app) as url:  # type: ignore[arg-type]
            assert np.array_equal(embed(url, before), expected(before))
            assert requests.get(f"{url}/healthz").json()["status"] == "ok"
            assert store_metrics(url)["cachedembed_store_up"] == 1

            redis.stop()
            assert np.array_equal(embed(url, before), expected(before))
            assert np.array_equal(embed(url, during), expected(during))
            health = requests.get(f"{url}/healthz")
            assert health.status_code == 200
            body = health.json()
            assert body["status"] == "degraded" and body["models"] == ["small", "wide"]
            assert body["store"]["url"] == redis.url and "refused" in body["store"]["error"]
            assert body["store"]["unsaved_entries"] == len(before) + len(during)
            down = store_metrics(url)
            assert down["cachedembed_store_up"] == 0
            assert down["cachedembed_store_errors_total"] >= 2
            assert down["cachedembed_store_outages_total"] == 1
            assert down["cachedembed_store_unsaved_entries"] == len(before) + len(during)
            # What needs the cache itself says so, with the store's error, instead of a 500.
            stats = requests.get(f"{url}/stats")
            assert stats.status_code == 503
            assert "the cache is unavailable" in stats.json()["error"]["message"]

            redis.start()
            store.outage.probe_now()  # it is back: the next probe need not wait
            assert requests.get(f"{url}/healthz").json() == {
                "status": "ok",
                "models": ["small", "wide"],
            }
            up = store_metrics(url)
            assert up["cachedembed_store_up"] == 1
            assert up["cachedembed_store_unsaved_entries"] == 0
            sent = len(small.sent)
            assert np.array_equal(embed(url, [*before, *during]), expected([*before, *during]))
            assert len(small.sent) == sent  # all hits: the outage's entries were written


def test_a_server_started_while_its_cache_is_down_serves_degraded_until_it_is_back(
    tmp_path: Path,
) -> None:
    texts = ["first", "second"]
    with own_redis(str(tmp_path)) as redis:
        redis.stop()
        store = open_or_defer(redis.url)  # what `cachedembed serve` opens its cache with
        app, small, _ = build(store)
        with serving(app) as url:  # type: ignore[arg-type]
            assert np.array_equal(embed(url, texts), expected(texts))
            health = requests.get(f"{url}/healthz")
            assert health.status_code == 200 and health.json()["status"] == "degraded"

            redis.start()
            store.outage.probe_now()
            assert requests.get(f"{url}/healthz").json()["status"] == "ok"
            assert np.array_equal(embed(url, texts), expected(texts))  # cached now
            sent = len(small.sent)
            assert np.array_equal(embed(url, texts), expected(texts))
            assert len(small.sent) == sent  # hits
