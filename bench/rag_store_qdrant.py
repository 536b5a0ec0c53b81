"""The `qdrant` RAG store in local mode: ingest rate and dense / keyword query latency at a given size.

    python -m bench.rag_store_qdrant                     # 100k chunks (a few minutes)
    python -m bench.rag_store_qdrant --size 10000 --queries 100 --keyword-queries 50

Store calls only (no embedding model): the synthetic corpus of bench.rag_bench (~60-word chunks,
Zipf word frequencies), random unit vectors of `--dims`, written as documents of 100 chunks the way
the engine writes them (`write_documents`), then `dense` and `keyword` top-5, p50/p99. Local mode
searches exactly (brute force, in Python and numpy), so these are not Qdrant server figures.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from bench.rag_bench import corpus, percentile  # noqa: E402


def run(size: int, dims: int, queries: int, keyword_queries: int, folder: str) -> dict[str, float]:
    from proxy.rag.chunking import Chunk
    from proxy.rag.loaders import Document
    from proxy.rag.store import Ingested, open_store

    texts, words = corpus(size)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(size, dims)).astype(np.float32)
    store = open_store({"type": "qdrant", "path": folder})
    try:
        cid = store.create_collection("bench", "none", {}).id
        started = time.perf_counter()
        for start in range(0, size, 100):
            chunks = [Chunk(t, f"doc-{start}.txt", i) for i, t in enumerate(texts[start:start + 100])]
            store.write_documents(cid, [Ingested(Document(f"doc-{start}.txt", (), f"h{start}", 1), chunks,
                                                 vectors[start:start + 100])])
        ingest_s = time.perf_counter() - started
        dense, keyword = [], []
        for _ in range(queries):
            query = vectors[rng.integers(size)] + rng.normal(scale=0.1, size=dims).astype(np.float32)
            began = time.perf_counter()
            store.dense([cid], query, 5)
            dense.append((time.perf_counter() - began) * 1000)
        for i in range(keyword_queries):
            began = time.perf_counter()
            store.keyword([cid], words[i % len(words)], 5)
            keyword.append((time.perf_counter() - began) * 1000)
    finally:
        store.close()
    return {"chunks": size, "ingest_per_s": size / ingest_s, "dense_p50": percentile(dense, 50),
            "dense_p99": percentile(dense, 99), "keyword_p50": percentile(keyword, 50),
            "keyword_p99": percentile(keyword, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keyword-queries", type=int, default=20, help="local mode scores each point in Python")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Local mode is not recommended")
    with tempfile.TemporaryDirectory() as folder:
        r = run(args.size, args.dims, args.queries, args.keyword_queries, folder)
    print(f"qdrant local, {r['chunks']:,} chunks of {args.dims} dims: ingest {r['ingest_per_s']:,.0f} chunks/s; "
          f"dense p50/p99 {r['dense_p50']:.1f} / {r['dense_p99']:.1f} ms; "
          f"keyword p50/p99 {r['keyword_p50']:.1f} / {r['keyword_p99']:.1f} ms")


if __name__ == "__main__":
    main()
