"""Real JavaScript clients from npm, run by Node against the server: the ``openai`` package
and Chroma's ``OpenAIEmbeddingFunction`` (``@chroma-core/openai``, with ``apiBase``).

Runs when Node and ``tests/js/node_modules`` are present (``make install`` runs ``npm
install`` there when npm exists); skipped, saying why, otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import openai
import pytest

from cachedembed.stores import Store

from .conftest import API_KEY, build
from .harness import scripted_vector, serving

JS = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "@chroma-core" / "openai").is_dir(),
    reason="needs node and `npm install` in tests/js",
)


def test_javascript_clients_get_the_same_vectors_as_python(cache: Store) -> None:
    texts = ["héllo wörld", "second text", "héllo wörld", "emoji 🚀"]
    app, small, _ = build(cache, api_key=API_KEY)
    with serving(app) as url:  # type: ignore[arg-type]
        out = subprocess.run(
            [NODE or "node", str(JS / "embed.mjs"), f"{url}/v1", API_KEY, "small", *texts],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        # The Python SDK then asks for the same texts: all hits now.
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
        python = sdk.embeddings.create(model="small", input=texts, encoding_format="float")
    result = json.loads(out.stdout)
    want = np.array([d.embedding for d in python.data], dtype=np.float32)
    assert want.tobytes() == np.stack([scripted_vector(t, "small-1", 8) for t in texts]).tobytes()
    # JavaScript numbers are doubles: float32 values survive both encodings exactly.
    for client in ("float", "base64", "chroma"):
        assert np.array(result[client], dtype=np.float32).tobytes() == want.tobytes(), client
    assert result["usage"]["prompt_tokens"] == python.usage.prompt_tokens
    assert sorted(small.sent) == sorted(set(texts))
