"""One conformance suite for every RAG store (CONTRACT §10 `rag.store`): the same rows on each.

The stores are listed in tests/rag/stores/ (one module each, started once per session). A store whose
server or client cannot run here is skipped with the reason, and fails the run under CI instead.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.app import Gateway
from proxy.config import parse_config
from proxy.rag.chunking import Chunk
from proxy.rag.engine import RagEngine
from proxy.rag.loaders import Document
from proxy.rag.search import parse_filter
from proxy.rag.store import Ingested, Store
from tests.rag import corpus
from tests.rag import stores as registry

DIMS = 8


@pytest.fixture(scope="session")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    backends: dict[str, Any] = {}
    yield backends
    for backend in backends.values():
        if not isinstance(backend, str):
            backend.stop()


@pytest.fixture(params=registry.names())
def backend(request: pytest.FixtureRequest, started: dict[str, Any],
            tmp_path_factory: pytest.TempPathFactory) -> registry.Backend:
    name = request.param
    if name not in started:
        try:
            started[name] = registry.start(name, tmp_path_factory.mktemp(f"store-{name}"))
        except registry.Unavailable as exc:
            started[name] = str(exc)
    found = started[name]
    if isinstance(found, str):
        message = f"RAG STORE '{name}' NOT TESTED: {found}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found  # type: ignore[no-any-return]


@pytest.fixture
def settings(backend: registry.Backend) -> dict[str, Any]:
    return backend.settings("t" + uuid.uuid4().hex[:12])


@pytest.fixture
def store(backend: registry.Backend, settings: dict[str, Any]) -> Iterator[Store]:
    opened = backend.open(settings)
    yield opened
    opened.close()


def vector(i: int, dims: int = DIMS) -> np.ndarray:
    """A unit vector near axis i (i < dims): the nearest stored vector to vector(i) is the one made from i."""
    v = np.full(dims, 0.05, dtype=np.float32)
    v[i % dims] = 1.0
    return v / np.linalg.norm(v)


def document(source: str, texts: Sequence[str], axes: Sequence[int], *, pages: Sequence[int | None] | None = None,
             attributes: dict[str, Any] | None = None, digest: str = "h1") -> Ingested:
    attrs = attributes or {}
    chunks = [Chunk(text, source, i, (pages or [None] * len(texts))[i], None, dict(attrs)) for i, text in enumerate(texts)]
    doc = Document(source, (), f"{digest}-{source}", sum(len(t) for t in texts), dict(attrs))
    return Ingested(doc, chunks, np.stack([vector(a) for a in axes]) if texts else np.zeros((0, DIMS)))


def contents(store: Store, ranked: list[tuple[str, float]]) -> list[str]:
    found = store.hits([chunk_id for chunk_id, _ in ranked])
    return [found[chunk_id].content for chunk_id, _ in ranked]


def new_collection(store: Store, name: str = "docs") -> str:
    return store.create_collection(name, "demo-embedding", {"strategy": "recursive"}, {"team": "a"}).id


# -- collections and documents ---------------------------------------------------------------
def test_collections_lifecycle(store: Store) -> None:
    created = store.create_collection("handbook", "demo-embedding", {"strategy": "token", "chunk_size": 50},
                                      {"owner": "ops"})
    assert created.id.startswith("vs_") and created.name == "handbook" and created.documents == 0
    assert store.get_collection("handbook") == store.get_collection(created.id) == created
    assert created.chunking == {"strategy": "token", "chunk_size": 50} and created.metadata == {"owner": "ops"}
    other = store.create_collection("other", "demo-embedding", {})
    assert [c.name for c in store.list_collections()] == ["handbook", "other"]
    store.write_documents(created.id, [document("a.txt", ["alpha one", "alpha two"], [0, 1])])
    counted = store.get_collection("handbook")
    assert counted is not None and (counted.documents, counted.chunks, counted.dimensions) == (1, 2, DIMS)
    assert counted.usage_bytes == len("alpha one") + len("alpha two")
    assert store.delete_collection(created.id) is True
    assert store.delete_collection(created.id) is False
    assert store.get_collection("handbook") is None and store.get_collection(created.id) is None
    assert [c.id for c in store.list_collections()] == [other.id]
    assert store.dense([created.id], vector(0), 5) == [] and store.keyword([created.id], "alpha", 5) == []
    again = store.create_collection("handbook", "demo-embedding", {})  # the name is free again
    assert again.id != created.id and store.get_collection("handbook") == again


def test_add_readd_replace_delete(store: Store) -> None:
    cid = new_collection(store)
    store.write_documents(cid, [document("a.txt", ["red apples", "green pears", "blue plums"], [0, 1, 2]),
                                document("b.txt", ["yellow bananas"], [3], digest="h9")])
    assert store.document_hashes(cid) == {"a.txt": "h1-a.txt", "b.txt": "h9-b.txt"}
    assert {(d.source, d.chunks) for d in store.list_documents(cid)} == {("a.txt", 3), ("b.txt", 1)}
    first = store.dense([cid], vector(0), 10)
    assert len(first) == 4

    store.write_documents(cid, [document("a.txt", ["red apples", "green pears", "blue plums"], [0, 1, 2])])
    assert len(store.dense([cid], vector(0), 10)) == 4, "re-adding a document keeps one copy of its chunks"
    assert store.get_collection(cid).chunks == 4  # type: ignore[union-attr]

    store.write_documents(cid, [document("a.txt", ["crimson cherries"], [4], digest="h2")])
    assert store.document_hashes(cid)["a.txt"] == "h2-a.txt"
    ranked = store.dense([cid], vector(0), 10)
    assert sorted(contents(store, ranked)) == ["crimson cherries", "yellow bananas"], "replaced chunks are gone"
    assert store.keyword([cid], "apples", 5) == []
    assert contents(store, store.keyword([cid], "cherries", 5)) == ["crimson cherries"]
    stale = [chunk_id for chunk_id, _ in first]
    assert set(store.hits(stale)) <= {chunk_id for chunk_id, _ in ranked}, "old chunk ids no longer resolve"

    assert store.delete_document(cid, "a.txt") is True
    assert store.delete_document(cid, "a.txt") is False
    assert contents(store, store.dense([cid], vector(4), 10)) == ["yellow bananas"]
    assert list(store.document_hashes(cid)) == ["b.txt"]
    assert store.get_collection(cid).chunks == 1  # type: ignore[union-attr]


def test_dimension_mismatch_is_refused_and_writes_nothing(store: Store) -> None:
    cid = new_collection(store)
    store.write_documents(cid, [document("a.txt", ["one"], [0])])
    wrong = Ingested(Document("b.txt", (), "x", 3), [Chunk("two", "b.txt", 0)], np.ones((1, DIMS + 4)))
    with pytest.raises(ValueError):
        store.write_documents(cid, [wrong])
    assert list(store.document_hashes(cid)) == ["a.txt"]


# -- search --------------------------------------------------------------------------------------
def test_dense_search_ranks_by_cosine_across_collections(store: Store) -> None:
    a, b = new_collection(store, "a"), new_collection(store, "b")
    store.write_documents(a, [document("a.txt", [f"alpha {i}" for i in range(4)], [0, 1, 2, 3])])
    store.write_documents(b, [document("b.txt", [f"beta {i}" for i in range(4)], [4, 5, 6, 7])])
    ranked = store.dense([a], vector(2), 3)
    assert contents(store, ranked)[0] == "alpha 2" and len(ranked) == 3
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-3), "dense scores are cosine similarities"
    assert all(x[1] >= y[1] for x, y in zip(ranked, ranked[1:])), "best first"
    assert contents(store, store.dense([a, b], vector(6), 1)) == ["beta 2"]
    assert all(c.startswith("alpha") for c in contents(store, store.dense([a], vector(6), 4)))
    hit = store.hits([ranked[0][0]])[ranked[0][0]]
    assert (hit.collection, hit.source, hit.chunk_index) == ("a", "a.txt", 2)


def test_keyword_search_finds_rare_words(store: Store) -> None:
    cid = new_collection(store)
    texts = ["the quick brown fox jumps", "a lazy dog sleeps all day", "volcanic magma erupts violently",
             "sourdough starter needs feeding", "the brown dog and the brown fox"]
    store.write_documents(cid, [document("k.txt", texts, [0, 1, 2, 3, 4])])
    assert contents(store, store.keyword([cid], "magma", 5)) == ["volcanic magma erupts violently"]
    assert contents(store, store.keyword([cid], "sourdough feeding", 5))[0] == "sourdough starter needs feeding"
    ranked = store.keyword([cid], "brown fox", 5)
    assert set(contents(store, ranked)[:2]) == {"the quick brown fox jumps", "the brown dog and the brown fox"}
    assert all(0 < score <= 1 for _, score in ranked) and all(x[1] >= y[1] for x, y in zip(ranked, ranked[1:]))
    assert store.keyword([cid], "zeppelin", 5) == []
    assert store.keyword([cid], "the and", 5) == [], "stop words alone match nothing"


FILTERS = [
    ({"type": "eq", "key": "source", "value": "manual.pdf"}, {"m0", "m1", "m2"}),
    ({"type": "gt", "key": "page", "value": 1}, {"m1", "m2"}),
    ({"type": "lte", "key": "page", "value": 1}, {"m0"}),
    ({"type": "eq", "key": "team", "value": "blue"}, {"n0", "n1"}),
    ({"type": "ne", "key": "team", "value": "blue"}, {"m0", "m1", "m2"}),
    ({"type": "in", "key": "team", "value": ["red", "green"]}, {"m0", "m1", "m2"}),
    ({"type": "nin", "key": "year", "value": [2024]}, {"m0", "m1", "m2"}),
    ({"type": "gte", "key": "year", "value": 2024}, {"n0", "n1"}),
    ({"type": "and", "filters": [{"type": "eq", "key": "source", "value": "manual.pdf"},
                                 {"type": "eq", "key": "page", "value": 3}]}, {"m2"}),
    ({"type": "or", "filters": [{"type": "eq", "key": "chunk_index", "value": 0},
                                {"type": "eq", "key": "page", "value": 3}]}, {"m0", "m2", "n0"}),
    ({"type": "eq", "key": "missing", "value": "x"}, set()),
]


@pytest.mark.parametrize(("raw", "expected"), FILTERS, ids=[f"{r['type']}-{i}" for i, (r, _) in enumerate(FILTERS)])
def test_filters_apply_to_dense_and_keyword(store: Store, raw: dict[str, Any], expected: set[str]) -> None:
    cid = new_collection(store)
    store.write_documents(cid, [
        document("manual.pdf", ["m0 shared word", "m1 shared word", "m2 shared word"], [0, 1, 2], pages=[1, 2, 3],
                 attributes={"team": "red", "year": 2023}),
        document("notes.md", ["n0 shared word", "n1 shared word"], [3, 4], attributes={"team": "blue", "year": 2024}),
    ])
    where = parse_filter(raw)
    dense = {c.split()[0] for c in contents(store, store.dense([cid], vector(0), 10, where))}
    keyword = {c.split()[0] for c in contents(store, store.keyword([cid], "shared", 10, where))}
    assert dense == expected and keyword == expected


# -- uploads, sharing, scale -----------------------------------------------------------------------
def test_files_round_trip(store: Store) -> None:
    blob = random.Random(7).randbytes(100_000)
    stored = store.add_file("big.bin", "assistants", blob)
    empty = store.add_file("empty.txt", "assistants", b"")
    assert stored.id.startswith("file-") and stored.bytes == len(blob)
    assert store.get_file(stored.id) == stored and store.file_content(stored.id) == blob
    assert store.file_content(empty.id) == b""
    assert [f.id for f in store.list_files()] == [stored.id, empty.id]
    assert store.delete_file(stored.id) is True and store.delete_file(stored.id) is False
    assert store.get_file(stored.id) is None and store.file_content(stored.id) is None
    assert [f.id for f in store.list_files()] == [empty.id]


def test_a_second_instance_sees_the_same_data(backend: registry.Backend, settings: dict[str, Any],
                                              store: Store) -> None:
    cid = new_collection(store, "shared")
    store.write_documents(cid, [document("s.txt", ["shared knowledge base"], [5])])
    other = backend.open(settings)
    try:
        found = other.get_collection("shared")
        assert found is not None and found.id == cid and found.chunks == 1
        assert contents(other, other.dense([cid], vector(5), 1)) == ["shared knowledge base"]
        assert contents(other, other.keyword([cid], "knowledge", 1)) == ["shared knowledge base"]
        other.write_documents(cid, [document("t.txt", ["second writer"], [6])])
    finally:
        other.close()
    assert store.document_hashes(cid).keys() == {"s.txt", "t.txt"}
    assert contents(store, store.dense([cid], vector(6), 1)) == ["second writer"]


def test_ten_thousand_chunks(store: Store) -> None:
    cid = new_collection(store)
    rng = np.random.default_rng(11)
    for batch in range(10):
        texts = [f"chunk{batch}x{i} filler text about topic{i % 50}" for i in range(1000)]
        vectors = rng.normal(size=(1000, 32)).astype(np.float32)
        chunks = [Chunk(t, f"doc{batch}.txt", i) for i, t in enumerate(texts)]
        if batch == 7:
            target = vectors[123].copy()
        store.write_documents(cid, [Ingested(Document(f"doc{batch}.txt", (), f"h{batch}", 1), chunks, vectors)])
    assert store.get_collection(cid).chunks == 10_000  # type: ignore[union-attr]
    assert contents(store, store.dense([cid], target, 3))[0] == "chunk7x123 filler text about topic23"
    assert contents(store, store.keyword([cid], "chunk3x456", 3)) == ["chunk3x456 filler text about topic6"]
    where = parse_filter({"type": "eq", "key": "source", "value": "doc2.txt"})
    assert all(c.startswith("chunk2x") for c in contents(store, store.dense([cid], target, 5, where)))


# -- through the engine: what `omni-llm rag ingest` and the `rag` field use --------------------------
def engine_on(store: Store, tmp_path: Path) -> RagEngine:
    config = parse_config(f"""
providers:
  local: {{type: local}}
models:
  local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}
rag:
  store: {{type: sqlite, path: "{tmp_path / 'unused.db'}"}}
  chunking: {{strategy: recursive, chunk_size: 300, chunk_overlap: 50}}
""", {})
    gateway = Gateway(config)
    gateway.rag = RagEngine(gateway, store)
    return gateway.rag


async def test_engine_ingest_hybrid_search_and_threshold(store: Store, tmp_path: Path) -> None:
    engine = engine_on(store, tmp_path)
    collection = await engine.get_or_create("quality")
    folder = corpus.write(tmp_path / "corpus")
    report = await engine.ingest(collection, [str(folder)])
    assert len(report.added) == len(corpus.FILES) and not report.skipped
    again = await engine.ingest(collection, [str(folder)])
    assert again.added == [] and len(again.unchanged) == len(corpus.FILES), "unchanged files are not re-added"
    for mode in ("hybrid", "dense", "keyword"):
        for query, answer in corpus.KEYWORD:
            hits = await engine.search([collection], query, top_k=3, mode=mode)
            assert hits and Path(hits[0].source).name == answer, (mode, query)
    for query, answer in corpus.PARAPHRASE[:3]:
        hits = await engine.search([collection], query, top_k=3, mode="dense")
        assert answer in [Path(h.source).name for h in hits], query
    hits = await engine.search([collection], "sourdough starter", top_k=5, mode="hybrid")
    assert hits[0].score == pytest.approx(1.0), "first in both rankings: the fused score is 1"
    kept = await engine.search([collection], "sourdough starter", top_k=5, mode="hybrid", score_threshold=0.99)
    assert [h.chunk_id for h in kept] == [hits[0].chunk_id]
