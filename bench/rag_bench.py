"""RAG benchmark: ingest throughput and search latency of the embedded store, with the local model.

    python -m bench.rag_bench                 # 10k and 100k chunks (a few minutes)
    python -m bench.rag_bench --sizes 10000   # quicker

A synthetic corpus (seeded, so runs compare) of ~60-word chunks over a
4,000-word vocabulary is ingested through the same path as `omni-llm rag
ingest` (chunking, embeddings through the gateway's router with the offline
`local-embedding` model, one transaction into SQLite), then queried: each mode
`search()` end to end (query embedding + dense and/or BM25 + fusion + fetching
the chunks), p50/p99 over 200 queries, plus the bare store calls. One core:
BLAS threads are pinned to 1 before numpy loads.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

CONFIG = """
providers: {{local: {{type: local}}}}
models: {{local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}}}
rag:
  store: {{type: sqlite, path: "{db}"}}
  chunking: {{strategy: recursive, chunk_size: 2000, chunk_overlap: 0}}
"""
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zen", "dor", "pel", "qua", "ris", "bon", "tal", "fen"]
QUERIES = 200


def vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def corpus(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """n chunk texts (Zipf-ish word frequencies, like prose) and query strings."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    texts = [" ".join(rng.choices(words, weights, k=60)) for _ in range(n)]
    queries = [" ".join(rng.sample(texts[rng.randrange(n)].split(), 5)) for _ in range(QUERIES)]
    return texts, queries


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run(size: int, folder: Path) -> dict[str, float]:
    from proxy.app import Gateway
    from proxy.config import parse_config
    from proxy.rag.engine import engine_for
    from proxy.rag.loaders import Document
    from proxy.rag.parsers import Part

    texts, queries = corpus(size)
    engine = engine_for(Gateway(parse_config(CONFIG.format(db=folder / f"rag-{size}.db"), {})))
    collection = await engine.get_or_create("bench")
    await engine.embedder("local-embedding").embed(["warm up the model"])
    # One document per 100 chunks (each chunk one paragraph, under chunk_size): the ingest path as in production.
    documents = [Document(f"doc-{i}.txt", tuple(Part(t) for t in texts[i:i + 100]), f"h{i}", 1)
                 for i in range(0, size, 100)]
    started = time.perf_counter()
    report = await engine.ingest_documents(collection, documents)
    ingest_s = time.perf_counter() - started
    assert report.chunks == size, report.chunks
    collection = await engine.get(collection.id)
    figures = {"chunks": size, "ingest_s": ingest_s, "ingest_chunks_per_s": size / ingest_s}

    started = time.perf_counter()
    await engine.search([collection], queries[0], top_k=5, mode="dense")  # loads the matrix from SQLite
    figures["matrix_load_ms"] = (time.perf_counter() - started) * 1000
    vector = (await engine.embedder("local-embedding").embed([queries[0]]))[0]
    for mode in ("hybrid", "dense", "keyword"):
        latencies = []
        for query in queries:
            started = time.perf_counter()
            hits = await engine.search([collection], query, top_k=5, mode=mode)
            latencies.append((time.perf_counter() - started) * 1000)
            assert hits
        figures[f"{mode}_p50_ms"] = statistics.median(latencies)
        figures[f"{mode}_p99_ms"] = percentile(latencies, 99)
    for name, call in (("store_dense", lambda q: engine.store.dense([collection.id], vector, 20)),
                       ("store_keyword", lambda q: engine.store.keyword([collection.id], q, 20))):
        latencies = []
        for query in queries:
            started = time.perf_counter()
            call(query)
            latencies.append((time.perf_counter() - started) * 1000)
        figures[f"{name}_p50_ms"] = statistics.median(latencies)
    await engine.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            rows.append(asyncio.run(run(size, Path(tmp))))
    print("| chunks | ingest chunks/s | hybrid p50 / p99 ms | dense p50 / p99 ms | keyword p50 / p99 ms "
          "| store dense / keyword p50 ms | matrix load ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['chunks']:,} | {r['ingest_chunks_per_s']:,.0f} | {r['hybrid_p50_ms']:.1f} / {r['hybrid_p99_ms']:.1f} "
              f"| {r['dense_p50_ms']:.1f} / {r['dense_p99_ms']:.1f} | {r['keyword_p50_ms']:.1f} / {r['keyword_p99_ms']:.1f} "
              f"| {r['store_dense_p50_ms']:.1f} / {r['store_keyword_p50_ms']:.1f} | {r['matrix_load_ms']:.0f} |")


if __name__ == "__main__":
    main()
