"""Every RAG store side by side: ingest rate and dense / keyword / hybrid query latency at N chunks.

    python -m bench.rag_stores                          # 100k chunks, every store (tens of minutes)
    python -m bench.rag_stores --chunks 10000 --stores sqlite,faiss

The stores are the conformance suite's (tests/rag/stores/: a real PostgreSQL with pgvector from
the pgserver wheel, Qdrant's local mode, Chroma persistent and its own server, FAISS files,
OpenSearch and Pinecone against the suite's fakes of their REST APIs — figures for those two
measure the adapter plus a fake, not the service). The same seeded synthetic corpus goes to each:
~60-word chunks over a Zipf-weighted 4,000-word vocabulary with random unit vectors (`--dims`),
written through the `Store` interface in documents of 1,000 chunks (what `omni-llm rag ingest`
does after embedding, so embedding time is left out), then 200 queries per mode: `dense`
(a stored chunk's vector plus noise), `keyword` (five words of a stored chunk) and `hybrid`
(both, fused by reciprocal rank, then the winning chunks fetched — the engine's search minus the
query embedding); `--queries` takes fewer per mode. Writes a markdown table to stdout (and `--out FILE`).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench.rag_bench import corpus, percentile  # noqa: E402
from proxy.rag.chunking import Chunk  # noqa: E402
from proxy.rag.loaders import Document  # noqa: E402
from proxy.rag.search import rrf  # noqa: E402
from proxy.rag.store import Ingested, Store  # noqa: E402
from tests.rag import stores as registry  # noqa: E402

DOCUMENT_CHUNKS = 1000
QUERIES = 200


def ingest(store: Store, texts: list[str], vectors: np.ndarray) -> tuple[str, float]:
    collection = store.create_collection("bench", "bench-embedding", {"strategy": "recursive"})
    started = time.perf_counter()
    for start in range(0, len(texts), DOCUMENT_CHUNKS):
        source = f"doc{start // DOCUMENT_CHUNKS:05d}.txt"
        batch = texts[start:start + DOCUMENT_CHUNKS]
        chunks = [Chunk(text, source, i) for i, text in enumerate(batch)]
        document = Document(source, (), f"h-{source}", sum(len(t) for t in batch))
        store.write_documents(collection.id, [Ingested(document, chunks, vectors[start:start + len(batch)])])
    return collection.id, time.perf_counter() - started


def timed(calls: list) -> tuple[float, float]:  # type: ignore[type-arg]
    took = []
    for call in calls:
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1000)
    return percentile(took, 50), percentile(took, 99)


def measure(name: str, chunks: int, dims: int, workdir: Path, queries_per_mode: int = QUERIES) -> dict[str, object]:
    texts, queries = corpus(chunks)
    queries = queries[:queries_per_mode]
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(chunks, dims)).astype(np.float32)
    picks = [random.Random(i).randrange(chunks) for i in range(len(queries))]
    probes = [vectors[i] + rng.normal(scale=0.3, size=dims).astype(np.float32) for i in picks]
    backend = registry.start(name, workdir)
    store = backend.open(backend.settings("bench"))
    try:
        cid, seconds = ingest(store, texts, vectors)
        assert store.dense([cid], probes[0], 10), f"{name}: dense search found nothing"

        def hybrid(vector: np.ndarray, query: str) -> None:
            fused = rrf([store.dense([cid], vector, 20), store.keyword([cid], query, 20)])[:5]
            store.hits([chunk_id for chunk_id, _ in fused])

        dense = timed([lambda v=v: store.dense([cid], v, 5) for v in probes])
        keyword = timed([lambda q=q: store.keyword([cid], q, 5) for q in queries])
        both = timed([lambda v=v, q=q: hybrid(v, q) for v, q in zip(probes, queries)])
    finally:
        store.close()
        backend.stop()
    return {"store": name, "chunks": chunks, "ingest": chunks / seconds, "dense": dense, "keyword": keyword,
            "hybrid": both}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--stores", default=",".join(n for n in registry.names() if n != "memory"))
    parser.add_argument("--queries", type=int, default=QUERIES, help="queries per mode (at most 200)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [f"| store | chunks | ingest chunks/s | dense p50 / p99 ms | keyword p50 / p99 ms | hybrid p50 / p99 ms |",
             "|---|---|---|---|---|---|"]
    for name in args.stores.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            try:
                row = measure(name, args.chunks, args.dims, Path(tmp), args.queries)
            except registry.Unavailable as exc:
                lines.append(f"| {name} | – | not run: {exc} | | | |")
                continue
        cells = [f"{row[m][0]:.2f} / {row[m][1]:.2f}" for m in ("dense", "keyword", "hybrid")]  # type: ignore[index]
        lines.append(f"| {name} | {row['chunks']:,} | {row['ingest']:,.0f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
