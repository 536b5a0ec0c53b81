"""The chroma RAG store at scale (local `path` mode): ingest rate and dense/keyword latency at the store's interface.

    python -m bench.rag_store_chroma                  # 100k chunks (several minutes on a shared box)
    python -m bench.rag_store_chroma --chunks 10000   # quicker

The corpus is bench/rag_bench.py's (seeded Zipf-ish ~60-word chunks); vectors are seeded random unit
vectors of 256 dimensions (the local model's size), so the figures are the store's alone, without
embedding time. Documents of 100 chunks are written 10 per `write_documents` call. Each query mode is
timed over 200 queries at top 20 (the pool hybrid search asks for).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench.rag_bench import corpus, percentile  # noqa: E402

DIMS = 256


def run(size: int, folder: str) -> dict[str, float]:
    from proxy.rag.chunking import Chunk
    from proxy.rag.loaders import Document
    from proxy.rag.store import Ingested, open_store

    texts, queries = corpus(size)
    rng = np.random.default_rng(7)
    store = open_store({"type": "chroma", "path": folder})
    cid = store.create_collection("bench", "local-embedding", {}).id
    items = []
    for start in range(0, size, 100):
        chunks = [Chunk(t, f"doc-{start}.txt", i) for i, t in enumerate(texts[start:start + 100])]
        vectors = rng.normal(size=(len(chunks), DIMS)).astype(np.float32)
        items.append(Ingested(Document(f"doc-{start}.txt", (), f"h{start}", 1), chunks, vectors))
    started = time.perf_counter()
    for start in range(0, len(items), 10):
        store.write_documents(cid, items[start:start + 10])
    ingest_s = time.perf_counter() - started
    assert store.get_collection(cid).chunks == size  # type: ignore[union-attr]
    figures: dict[str, float] = {"chunks": size, "ingest_chunks_per_s": size / ingest_s}
    probes = rng.normal(size=(len(queries), DIMS)).astype(np.float32)
    for mode, call in (("dense", lambda i: store.dense([cid], probes[i], 20)),
                       ("keyword", lambda i: store.keyword([cid], queries[i], 20))):
        call(0)
        latencies = []
        for i in range(len(queries)):
            started = time.perf_counter()
            assert call(i)
            latencies.append((time.perf_counter() - started) * 1000)
        figures[f"{mode}_p50_ms"] = statistics.median(latencies)
        figures[f"{mode}_p99_ms"] = percentile(latencies, 99)
    store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.chunks, tmp)
    print("| chunks | ingest chunks/s | dense p50 / p99 ms | keyword p50 / p99 ms |")
    print("|---|---|---|---|")
    print(f"| {r['chunks']:,.0f} | {r['ingest_chunks_per_s']:,.0f} | {r['dense_p50_ms']:.1f} / {r['dense_p99_ms']:.1f} "
          f"| {r['keyword_p50_ms']:.1f} / {r['keyword_p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
