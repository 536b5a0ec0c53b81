"""The FAISS RAG store at scale: write rate, index file load/rebuild, dense and keyword latency (store calls).

    python -m bench.rag_store_faiss                  # 100k chunks, 256 dims (a minute or two)
    python -m bench.rag_store_faiss --chunks 20000 --batch 1000

Store calls only (no embedding model: its speed is the same for every store):
seeded unit vectors and the Zipf-like texts of bench/rag_bench.py, written in
`--batch`-chunk `write_documents` calls of 100-chunk documents (each call
rewrites the collection's index file), then 200 queries per mode, top 20.
The embedded SQLite store runs the same load for comparison. One core: BLAS
and OpenMP threads are pinned to 1 before numpy and faiss load.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.rag_bench import QUERIES, corpus, percentile  # noqa: E402
from proxy.rag.chunking import Chunk  # noqa: E402
from proxy.rag.loaders import Document  # noqa: E402
from proxy.rag.search import parse_filter  # noqa: E402
from proxy.rag.store import Ingested, Store, open_store  # noqa: E402


def latencies(call: Callable[[int], Any]) -> tuple[float, float]:
    taken = []
    for i in range(QUERIES):
        started = time.perf_counter()
        call(i)
        taken.append((time.perf_counter() - started) * 1000)
    return statistics.median(taken), percentile(taken, 99)


def run(settings: dict[str, Any], chunks: int, batch: int, dims: int) -> dict[str, Any]:
    texts, queries = corpus(chunks)
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(chunks, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store: Store = open_store(settings)
    cid = store.create_collection("bench", "bench-embedding", {}).id
    started = time.perf_counter()
    for start in range(0, chunks, batch):
        items = []
        for doc in range(start, min(start + batch, chunks), 100):
            rows = range(doc, min(doc + 100, chunks))
            items.append(Ingested(Document(f"doc-{doc}.txt", (), f"h{doc}", 1),
                                  [Chunk(texts[i], f"doc-{doc}.txt", i - doc) for i in rows], vectors[rows.start:rows.stop]))
        store.write_documents(cid, items)
    figures: dict[str, Any] = {"store": settings["type"], "write_chunks_per_s": chunks / (time.perf_counter() - started)}
    store.close()

    store = open_store(settings)  # a cold start: the index (or matrix) is loaded on the first query
    started = time.perf_counter()
    store.dense([cid], vectors[0], 1)
    figures["first_query_ms"] = (time.perf_counter() - started) * 1000
    near = vectors + rng.normal(size=vectors.shape[1], scale=0.01).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    figures["dense"] = latencies(lambda i: store.dense([cid], near[i * 97 % chunks], 20))
    where = parse_filter({"type": "in", "key": "source", "value": [f"doc-{i * 100}.txt" for i in range(50)]})
    figures["dense_filtered"] = latencies(lambda i: store.dense([cid], near[i * 97 % chunks], 20, where))
    figures["keyword"] = latencies(lambda i: store.keyword([cid], queries[i], 20))
    store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000, help="chunks per write_documents call")
    parser.add_argument("--dims", type=int, default=256)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for settings in ({"type": "faiss", "path": f"{tmp}/faiss"}, {"type": "sqlite", "path": f"{tmp}/rag.db"}):
            rows.append(run(settings, args.chunks, args.batch, args.dims))
        index_mb = sum(p.stat().st_size for p in Path(f"{tmp}/faiss").glob("*.faiss")) / 1e6
    print(f"{args.chunks:,} chunks, {args.dims} dims, {args.batch:,} chunks per write; faiss index file {index_mb:.0f} MB")
    print("| store | write chunks/s | first query (load) ms | dense p50 / p99 ms | dense, filter (5,000 chunks) p50 / p99 ms "
          "| keyword p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['store']} | {r['write_chunks_per_s']:,.0f} | {r['first_query_ms']:.0f} "
              f"| {r['dense'][0]:.1f} / {r['dense'][1]:.1f} | {r['dense_filtered'][0]:.1f} / {r['dense_filtered'][1]:.1f} "
              f"| {r['keyword'][0]:.1f} / {r['keyword'][1]:.1f} |")


if __name__ == "__main__":
    main()
