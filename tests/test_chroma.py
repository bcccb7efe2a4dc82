"""Chroma drop-in: collections accept Cached, and the persisted config rebuilds it in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chromadb
import numpy as np

from cachedembed import Cached
from tests.conftest import FakeEF

REPO = Path(__file__).resolve().parents[1]


def test_collection_add_update_upsert_query_go_through_the_cache(tmp_path: Path) -> None:
    fake = FakeEF(dim=16)
    ef = Cached(fake, f"sqlite:///{tmp_path / 'c.db'}")
    client = chromadb.EphemeralClient()
    col = client.create_collection("docs", embedding_function=ef)  # type: ignore[arg-type]
    col.add(ids=["1", "2"], documents=["alpha", "beta"])
    col.update(ids=["1"], documents=["alpha"])
    col.upsert(ids=["2", "3"], documents=["beta", "gamma"])
    assert fake.texts_embedded == ["alpha", "beta", "gamma"]
    found = col.query(query_texts=["alpha"], n_results=1)
    assert fake.calls[-1] == ["alpha"]  # the query role has its own entries
    stored = col.get(ids=["1"], include=["embeddings"])["embeddings"][0]
    assert np.asarray(stored, dtype=np.float32).tobytes() == ef(["alpha"])[0].tobytes()
    assert len(found["ids"][0]) == 1
    s = ef.stats()
    assert s["by_role"]["document"]["misses"] == 3 and s["by_role"]["document"]["hits"] == 3


CHILD = textwrap.dedent(
    """
    import json, sys
    import chromadb, cachedembed
    from tests.conftest import FakeEF
    from cachedembed import Cached
    from cachedembed.embedding_functions import _base

    path, cache, mode = sys.argv[1:4]
    client = chromadb.PersistentClient(path=path)
    if mode == "create":
        col = client.create_collection("docs", embedding_function=Cached(chromadb.utils.embedding_functions.DefaultEmbeddingFunction() if False else CountingDefault(), cache))
    else:
        col = client.get_collection("docs")
    col.upsert(ids=["1", "2"], documents=["first doc", "second doc"])
    ef = col.configuration["embedding_function"]
    print(json.dumps({"type": type(ef).__name__, "calls": CountingDefault.calls, "stats": ef.stats()}))
    """
)

COUNTING = textwrap.dedent(
    """
    import numpy as np
    from cachedembed.embedding_functions import ProviderEmbeddingFunction, EmbeddedBatch

    class CountingDefault(ProviderEmbeddingFunction):
        provider = "counting"
        calls = 0

        def __init__(self, model_name="counting-1"):
            self.model_name = model_name

        def embed_batches(self, texts, role):
            CountingDefault.calls += 1
            yield EmbeddedBatch(0, np.array([[len(t), 1.0] for t in texts], dtype=np.float32), len(texts))

        def cache_identity(self, role):
            return {"provider": "counting", "model": self.model_name}

        def get_config(self):
            return {"model_name": self.model_name}
    """
)


def test_persisted_collection_rebuilds_the_cached_function_in_a_new_process(tmp_path: Path) -> None:
    cache = f"sqlite:///{tmp_path / 'cache.db'}"
    script = tmp_path / "child.py"
    script.write_text(COUNTING + CHILD)
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
    assert created["calls"] == 1
    reopened = run("open")
    assert reopened["type"] == "Cached"
    assert reopened["calls"] == 0  # known documents: no provider call in the new process
    stats = reopened["stats"]
    assert isinstance(stats, dict) and stats["hits"] == 2 and stats["misses"] == 2


def test_config_round_trip_keeps_the_cache_and_drops_passwords(tmp_path: Path) -> None:
    ef = Cached(FakeEF(), f"sqlite:///{tmp_path / 'c.db'}", store_text=True, dtype="float16")
    config = ef.get_config()
    json.dumps(config)
    assert config["inner"] == {"name": "fake", "config": {"model": "fake-1", "dim": 8}}
    from cachedembed.stores import public_url

    assert (
        public_url("postgresql+psycopg://bob:hunter2@db.example/cache")
        == "postgresql+psycopg://bob@db.example/cache"
    )


def test_building_from_config_is_cheap_and_shares_the_store(tmp_path: Path) -> None:
    from cachedembed.embedding_functions import DefaultEmbeddingFunction

    ef = Cached(DefaultEmbeddingFunction(), f"sqlite:///{tmp_path / 'c.db'}")
    again = Cached.build_from_config(ef.get_config())
    assert again.store is ef.store
    assert again.spec("document") == ef.spec("document")
