"""The pgvector store alone: ingest rate and dense / keyword / hybrid query latency at 100k chunks.

    python -m bench.rag_store_pgvector                       # a throwaway pgserver cluster, 100k chunks
    python -m bench.rag_store_pgvector --chunks 20000 --dsn postgresql://...   # an existing server

The corpus is bench/rag_bench.py's (seeded ~60-word chunks), embedded once with the offline
`local-embedding` model (256 dimensions); the embedding time is left out: `write_documents` calls of
10 documents x 100 chunks are timed (COPY into the collection's table, HNSW and GIN maintained as rows
arrive). Queries: 200, top 20; hybrid is what the engine does without the query embedding (dense and
keyword, RRF, then the hits fetched).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.rag_bench import corpus, percentile  # noqa: E402

EMBEDDER = """
providers: {local: {type: local}}
models: {local-embedding: {provider: local, model: l2_supercat, mode: embedding}}
"""
TOP_K = 20


async def embed(texts: list[str]) -> np.ndarray:
    from proxy.app import Gateway
    from proxy.config import parse_config
    from proxy.rag.embed import Embedder

    embedder = Embedder(Gateway(parse_config(EMBEDDER, {})), "local-embedding")
    parts = [await embedder.embed(texts[i:i + 2000]) for i in range(0, len(texts), 2000)]
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])


def timed(call: Callable[[str, int], Any], queries: list[str]) -> tuple[float, float]:
    latencies = []
    for n, query in enumerate(queries):
        started = time.perf_counter()
        call(query, n)
        latencies.append((time.perf_counter() - started) * 1000)
    return statistics.median(latencies), percentile(latencies, 99)


def run(dsn: str, size: int) -> dict[str, float]:
    from proxy.rag.chunking import Chunk
    from proxy.rag.loaders import Document
    from proxy.rag.search import rrf
    from proxy.rag.store import Ingested
    from proxy.rag.stores.pgvector import PgvectorStore

    texts, queries = corpus(size)
    vectors = asyncio.run(embed(texts))
    query_vectors = asyncio.run(embed(queries))
    store = PgvectorStore(dsn)
    cid = store.create_collection(f"bench-{size}", "local-embedding", {}).id
    started = time.perf_counter()
    for batch in range(0, size, 1000):
        items = []
        for first in range(batch, min(size, batch + 1000), 100):
            rows = range(first, min(size, first + 100))
            source = f"doc-{first // 100}.txt"
            items.append(Ingested(Document(source, (), f"h{first}", 1), [Chunk(texts[i], source, i - first)
                                                                          for i in rows], vectors[rows.start:rows.stop]))
        store.write_documents(cid, items)
    ingest_s = time.perf_counter() - started
    figures: dict[str, float] = {"chunks": size, "ingest_chunks_per_s": size / ingest_s}

    def hybrid(query: str, n: int) -> None:
        fused = rrf([store.dense([cid], query_vectors[n], TOP_K), store.keyword([cid], query, TOP_K)])[:5]
        store.hits([chunk_id for chunk_id, _ in fused])

    store.dense([cid], query_vectors[0], TOP_K)  # warm the index pages
    for mode, call in (("dense", lambda q, n: store.dense([cid], query_vectors[n], TOP_K)),
                       ("keyword", lambda q, n: store.keyword([cid], q, TOP_K)), ("hybrid", hybrid)):
        figures[f"{mode}_p50_ms"], figures[f"{mode}_p99_ms"] = timed(call, queries)
    exact = np.argsort(-(vectors @ query_vectors[:50].T), axis=0)[:TOP_K].T
    found = [store.dense([cid], query_vectors[n], TOP_K) for n in range(50)]
    recalled = [len({int(c.split(".")[1]) - 1 for c, _ in f} & set(exact[n].tolist())) / TOP_K
                for n, f in enumerate(found)]
    figures["recall_at_20"] = float(np.mean(recalled))
    store.delete_collection(cid)
    store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dsn", help="an existing PostgreSQL with pgvector (default: a throwaway pgserver cluster)")
    args = parser.parse_args()
    if args.dsn:
        figures = run(args.dsn, args.chunks)
    else:
        from tests.rag.stores.pgvector import postgres_cluster

        with postgres_cluster() as cluster:
            figures = run(cluster.create_database("bench"), args.chunks)
    print("| chunks | ingest chunks/s | dense p50 / p99 ms | keyword p50 / p99 ms | hybrid p50 / p99 ms | "
          "dense recall@20 |")
    print("|---|---|---|---|---|---|")
    f = figures
    print(f"| {f['chunks']:,.0f} | {f['ingest_chunks_per_s']:,.0f} | {f['dense_p50_ms']:.1f} / {f['dense_p99_ms']:.1f} "
          f"| {f['keyword_p50_ms']:.1f} / {f['keyword_p99_ms']:.1f} | {f['hybrid_p50_ms']:.1f} / "
          f"{f['hybrid_p99_ms']:.1f} | {f['recall_at_20']:.3f} |")


if __name__ == "__main__":
    main()
