"""Peak memory of ``batch collect`` for a large OpenAI Batch job (the loopback Files/Batches fake).

Submits N texts of width D through the real openai SDK, lets the fake finish the job, then
collects it with tracemalloc on (Python and numpy allocations; the fake's output file is
built before tracing starts). Prints the peak, the output file's size and the collect time.

Run ``python bench/batch_collect.py [--texts 50000] [--dim 3072]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cachedembed import Cached  # noqa: E402
from cachedembed.embedding_functions import OpenAIEmbeddingFunction  # noqa: E402
from tests.batch.fake_batches import FakeBatchAPI  # noqa: E402
from tests.providers.loopback import LoopbackServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=3072)
    args = parser.parse_args()
    fake = FakeBatchAPI()
    fake.dim = args.dim
    with LoopbackServer(fake) as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["OPENAI_API_KEY"] = fake.key
        os.environ["OPENAI_BASE_URL"] = server.url + "/v1"
        ef = Cached(
            OpenAIEmbeddingFunction(model_name="text-embedding-3-small"), f"sqlite:///{tmp}/c.db"
        )
        docs = [f"document number {i} of the large job" for i in range(args.texts)]
        handles = ef.submit_batch(docs).jobs
        for h in handles:
            h.wait(poll=0, sleep=lambda _s: None)
        size = sum(len(content) for p, content in fake.files.values() if p == "batch_output")
        tracemalloc.start()
        started = time.perf_counter()
        items = sum(h.collect().items for h in handles)
        elapsed = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    vectors = args.texts * args.dim * 4
    print(
        f"{items:,} x {args.dim} collected in {elapsed:.1f}s: output file {size / 2**20:,.0f} MB, "
        f"vectors {vectors / 2**20:,.0f} MB, collect peak {peak / 2**20:,.0f} MB (tracemalloc)"
    )


if __name__ == "__main__":
    main()
