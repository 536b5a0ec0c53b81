"""The pgvector store beyond the conformance rows: errors, the HNSW index, filters' types, sharing, end to end.

Runs against the PostgreSQL + pgvector that the `pgserver` wheel bundles (tests/rag/stores/pgvector.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from proxy.errors import ProviderUnavailable
from proxy.rag.chunking import Chunk
from proxy.rag.loaders import Document
from proxy.rag.search import matches, parse_filter
from proxy.rag.store import Ingested, open_store
from tests.proxy_server import free_port, run_proxy
from tests.rag.stores import Unavailable
from tests.rag.stores.pgvector import PostgresCluster
from tests.rag.gateway import gateway_yaml

psycopg = pytest.importorskip("psycopg", reason="the pgvector extra is not installed")

from proxy.rag.stores.pgvector import PgvectorStore, chunk_table, dense_query  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    try:
        running = PostgresCluster()
    except Unavailable as exc:
        import os

        if os.environ.get("CI") == "true":
            pytest.fail(f"pgvector NOT TESTED: {exc}")
        pytest.skip(f"pgvector NOT TESTED: {exc}")
    yield running
    running.stop()


@pytest.fixture
def dsn(cluster: PostgresCluster) -> str:
    return cluster.create_database("t" + uuid.uuid4().hex[:12])


@pytest.fixture
def store(dsn: str) -> Iterator[PgvectorStore]:
    opened = open_store({"type": "pgvector", "dsn": dsn})
    assert isinstance(opened, PgvectorStore)
    yield opened
    opened.close()


def ingest(store: PgvectorStore, collection_id: str, source: str, vectors: np.ndarray,
           attributes: dict[str, Any] | None = None, pages: list[int | None] | None = None) -> None:
    attrs = attributes or {}
    chunks = [Chunk(f"{source} row{i} shared words", source, i, (pages or [None] * len(vectors))[i], None,
                    dict(attrs)) for i in range(len(vectors))]
    store.write_documents(collection_id, [Ingested(Document(source, (), f"h-{source}", 10, dict(attrs)), chunks,
                                                   vectors)])


def contents_of(store: PgvectorStore, ranked: list[tuple[str, float]]) -> list[str]:
    found = store.hits([chunk_id for chunk_id, _ in ranked])
    return [found[chunk_id].content for chunk_id, _ in ranked]


# -- a store that cannot be reached says so -----------------------------------------------------
def test_unreachable_wrong_database_and_bad_dsn_are_503_naming_the_store(cluster: PostgresCluster) -> None:
    closed = free_port()
    cases = [
        (f"postgresql://omni:s3cret@127.0.0.1:{closed}/rag", f"127.0.0.1:{closed}/rag", "unreachable"),
        (cluster.url("no_such_database"), "no_such_database", "does not exist"),
        ("definitely not a dsn", "dsn", "not a PostgreSQL connection string"),
    ]
    for dsn, names, says in cases:
        with pytest.raises(ProviderUnavailable) as caught:
            open_store({"type": "pgvector", "dsn": dsn})
        message = str(caught.value)
        assert caught.value.status == 503 and "pgvector" in message and names in message and says in message
        assert "s3cret" not in message


def test_a_server_that_goes_away_is_503_not_a_traceback() -> None:
    own = PostgresCluster()
    try:
        store = PgvectorStore(own.create_database("gone"))
        cid = store.create_collection("c", "m", {}).id
    finally:
        own.stop()
    with pytest.raises(ProviderUnavailable) as caught:
        store.get_collection(cid)
    assert caught.value.status == 503 and "pgvector" in str(caught.value)
    store.close()


# -- the HNSW index ----------------------------------------------------------------------------
def test_the_hnsw_index_is_built_once_the_collection_is_large_and_serves_dense_queries(
        store: PgvectorStore, dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.rag.stores import pgvector

    monkeypatch.setattr(pgvector, "HNSW_AFTER", 2000 * 32)  # 2,000 chunks of 32 dimensions (not 80,000)
    cid = store.create_collection("big", "m", {}).id
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    table = chunk_table(cid).as_string(None).strip('"')

    def indexes(conn: Any) -> list[str]:
        return [row[0] for row in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]

    with psycopg.connect(dsn, autocommit=True) as conn:
        from pgvector.psycopg import register_vector

        ingest(store, cid, "doc0.txt", vectors[:1000])
        assert not any("hnsw" in d for d in indexes(conn)), "a small collection is scanned exactly"
        assert contents_of(store, store.dense([cid], vectors[234], 1)) == ["doc0.txt row234 shared words"]
        for part in (1, 2):  # the second write builds the index, the third adds to it row by row
            ingest(store, cid, f"doc{part}.txt", vectors[part * 1000:(part + 1) * 1000])
        register_vector(conn)
        conn.execute(f"ANALYZE {table}")
        definitions = indexes(conn)
        assert any("USING hnsw (embedding vector_cosine_ops)" in d for d in definitions), definitions
        assert any("USING gin (tsv)" in d for d in definitions), definitions
        params = {"q": vectors[42], "k": 5}
        plan = "\n".join(r[0] for r in conn.execute(
            b"EXPLAIN " + dense_query([cid], psycopg.sql.SQL("true"), exact=False).as_bytes(conn), params))
        assert f"Index Scan using {table}_hnsw" in plan, plan
        exact = "\n".join(r[0] for r in conn.execute(
            b"EXPLAIN " + dense_query([cid], psycopg.sql.SQL("true"), exact=True).as_bytes(conn), params))
        assert "hnsw" not in exact, exact

        def scans() -> int:
            row = conn.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s",
                               (f"{table}_hnsw",)).fetchone()
            return int(row[0])

        before = scans()
        ranked = store.dense([cid], vectors[2321], 3)
        assert contents_of(store, ranked)[0] == "doc2.txt row321 shared words"
        store.close()  # a backend reports its statistics when it exits (else when idle, within 10 s)
        deadline = time.monotonic() + 30
        while scans() == before and time.monotonic() < deadline:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            time.sleep(0.05)
        assert scans() > before, "the store's own dense query went through the HNSW index"
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-5)


def test_filtered_and_large_k_dense_queries_return_k_exact_rows(store: PgvectorStore) -> None:
    cid = store.create_collection("big", "m", {}).id
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    ingest(store, cid, "bulk.txt", vectors[:2990], attributes={"kind": "bulk"})
    ingest(store, cid, "rare.txt", vectors[2990:], attributes={"kind": "rare"})
    query = rng.normal(size=16).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit[2990:] @ (query / np.linalg.norm(query))
    expected = [f"rare.txt row{i} shared words" for i in np.argsort(-cosine)[:5]]
    # The planner answers the first two from the `source` index or a scan; the third (an estimated 99%
    # of the rows, 0.3% in fact) from the HNSW index, whose candidates the filter then almost all rejects.
    for raw in ({"type": "eq", "key": "source", "value": "rare.txt"}, {"type": "eq", "key": "kind", "value": "rare"},
                {"type": "ne", "key": "kind", "value": "bulk"}):
        ranked = store.dense([cid], query, 5, parse_filter(raw))
        found = store.hits([chunk_id for chunk_id, _ in ranked])
        assert [found[chunk_id].content for chunk_id, _ in ranked] == expected, raw
        assert [score for _, score in ranked] == pytest.approx(sorted(cosine, reverse=True)[:5], abs=1e-5)
    many = store.dense([cid], query, 400)  # beyond pgvector's default candidate list of 40
    assert len(many) == 400 and all(x[1] >= y[1] for x, y in zip(many, many[1:]))


# -- filters keep each value's type (search.matches is the reference) --------------------------------
ROWS = [
    ("a.txt", 1, {"year": 2023, "name": "Zed", "score": 1.5, "flag": True}),
    ("b.txt", 2, {"year": "2023", "name": "apple", "score": 2, "flag": False}),
    ("c.txt", None, {"year": 2024, "name": "Éclair", "score": -1}),
    ("d.txt", 3, {"name": "banana", "note": None}),
]
TYPED_FILTERS = [
    {"type": "eq", "key": "year", "value": 2023}, {"type": "eq", "key": "year", "value": "2023"},
    {"type": "gt", "key": "year", "value": 2022}, {"type": "gte", "key": "year", "value": "2000"},
    {"type": "ne", "key": "year", "value": 2023}, {"type": "nin", "key": "year", "value": [2024, "x"]},
    {"type": "in", "key": "year", "value": [2023, "2024"]}, {"type": "lt", "key": "name", "value": "a"},
    {"type": "gt", "key": "name", "value": "b"}, {"type": "gte", "key": "score", "value": 1.5},
    {"type": "lt", "key": "score", "value": 2.0}, {"type": "eq", "key": "score", "value": 2.0},
    {"type": "eq", "key": "flag", "value": True}, {"type": "ne", "key": "flag", "value": True},
    {"type": "ne", "key": "note", "value": "x"}, {"type": "eq", "key": "page", "value": "1"},
    {"type": "ne", "key": "page", "value": "1"}, {"type": "gt", "key": "page", "value": 1.5},
    {"type": "in", "key": "page", "value": [1, 3, "2"]}, {"type": "nin", "key": "page", "value": [1]},
    {"type": "lt", "key": "source", "value": "b"}, {"type": "ne", "key": "source", "value": 3},
    {"type": "eq", "key": "chunk_index", "value": 0},
    {"type": "or", "filters": [{"type": "eq", "key": "name", "value": "Zed"},
                               {"type": "and", "filters": [{"type": "gt", "key": "score", "value": 0},
                                                           {"type": "lt", "key": "year", "value": "3"}]}]},
]


def test_filters_compare_values_of_their_own_type_only(store: PgvectorStore) -> None:
    cid = store.create_collection("typed", "m", {}).id
    for n, (source, page, attributes) in enumerate(ROWS):
        ingest(store, cid, source, np.eye(8, dtype=np.float32)[n:n + 1], attributes=attributes, pages=[page])
    fields = {source: {**attributes, "source": source, "page": page, "section": None, "chunk_index": 0}
              for source, page, attributes in ROWS}
    for raw in TYPED_FILTERS:
        where = parse_filter(raw)
        assert where is not None
        expected = {source for source, f in fields.items() if matches(where, f)}
        for ranked in (store.dense([cid], np.ones(8, dtype=np.float32), 10, where),
                       store.keyword([cid], "shared", 10, where)):
            found = store.hits([chunk_id for chunk_id, _ in ranked])
            assert {hit.source for hit in found.values()} == expected, raw


# -- transactions and sharing ---------------------------------------------------------------------
def test_a_failed_write_leaves_nothing_and_nul_characters_are_dropped(store: PgvectorStore) -> None:
    cid = store.create_collection("tx", "m", {}).id
    ingest(store, cid, "kept.txt", np.eye(4, dtype=np.float32)[:1])
    good = Ingested(Document("new.txt", (), "h", 3), [Chunk("fresh text", "new.txt", 0)], np.ones((1, 4)))
    bad = Ingested(Document("bad\x00.txt", (), "h", 3), [Chunk("broken", "bad\x00.txt", 0)], np.ones((1, 4)))
    with pytest.raises(psycopg.Error):
        store.write_documents(cid, [good, bad])
    assert list(store.document_hashes(cid)) == ["kept.txt"]
    assert store.keyword([cid], "fresh", 5) == []
    binary = Ingested(Document("bin.txt", (), "h", 3), [Chunk("nul\x00inside", "bin.txt", 0)], np.ones((1, 4)))
    store.write_documents(cid, [binary])
    ranked = store.keyword([cid], "nulinside", 5)
    assert [store.hits([ranked[0][0]])[ranked[0][0]].content] == ["nulinside"]


def test_instances_opening_and_writing_at_once_share_one_schema(dsn: str) -> None:
    count = 6
    barrier = threading.Barrier(count)
    stores: list[PgvectorStore] = []
    errors: list[BaseException] = []
    cid: list[str] = []

    def instance(n: int) -> None:
        try:
            barrier.wait()
            store = PgvectorStore(dsn)  # schema creation races: one creates, the others wait and find it
            stores.append(store)
            barrier.wait()
            if n == 0:
                cid.append(store.create_collection("shared", "m", {}).id)
            barrier.wait()
            vectors = np.eye(count, dtype=np.float32)[n:n + 1]
            ingest(store, cid[0], f"writer{n}.txt", vectors)  # the first write creates the chunk table
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=instance, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors, errors
        found = stores[0].get_collection("shared")
        assert found is not None and (found.documents, found.chunks, found.dimensions) == (count, count, count)
        for n, store in enumerate(stores):
            ranked = store.dense([cid[0]], np.eye(count, dtype=np.float32)[n], 1)
            assert store.hits([ranked[0][0]])[ranked[0][0]].source == f"writer{n}.txt"
        assert stores[1].delete_collection(cid[0]) is True
        assert stores[2].dense([cid[0]], np.ones(count, dtype=np.float32), 3) == []
        assert stores[3].hits([ranked[0][0]]) == {}
    finally:
        for store in stores:
            store.close()


# -- end to end: the real server, a pgvector-configured gateway ------------------------------------
def gateway_config(dsn: str) -> str:
    return gateway_yaml(f'{{type: pgvector, dsn: "{dsn}"}}', rag="  embedding_model: local-embedding\n",
                        chunking="{strategy: recursive, chunk_size: 300, chunk_overlap: 0}")


GUIDE = """# Refunds
Customers may ask for a refund within 30 days of purchase, with the receipt.

# Shipping
Parcels leave the Rotterdam warehouse every weekday at noon.
"""


def test_chat_with_rag_through_a_pgvector_gateway(dsn: str) -> None:
    with run_proxy(gateway_config(dsn)) as proxy:
        client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
        uploaded = client.files.create(file=("guide.md", GUIDE.encode()), purpose="assistants")
        created = client.vector_stores.create(name="handbook", file_ids=[uploaded.id])
        assert created.status == "completed" and created.file_counts.completed == 1
        completion = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "How many days do I have to ask for a refund?"}],
            extra_body={"rag": {"collection": "handbook", "top_k": 1}})
        context = completion.model_extra["rag_context"]  # type: ignore[index]
        assert context[0]["source"] == "guide.md" and context[0]["section"] == "Refunds"
        assert "30 days" in context[0]["content"] and 0 < context[0]["score"] <= 1
        for mode in ("keyword", "dense"):
            answer = client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "x"}],
                extra_body={"rag": {"collection": created.id, "query": "Rotterdam warehouse parcels",
                                    "search": mode, "top_k": 1}})
            assert answer.model_extra["rag_context"][0]["section"] == "Shipping", mode  # type: ignore[index]
        assert client.files.content(uploaded.id).read() == GUIDE.encode()
    # the data lives in PostgreSQL: a second gateway on the same database sees it
    with run_proxy(gateway_config(dsn)) as again:
        stores = httpx.get(again.v1 + "/vector_stores").json()["data"]
        assert [(s["name"], s["file_counts"]["completed"]) for s in stores] == [("handbook", 1)]


def test_an_unreachable_pgvector_store_is_a_503_through_the_gateway() -> None:
    with run_proxy(gateway_config(f"postgresql://omni@127.0.0.1:{free_port()}/rag")) as proxy:
        response = httpx.post(proxy.v1 + "/chat/completions", json={
            "model": "demo", "messages": [{"role": "user", "content": "hi"}], "rag": {"collection": "handbook"}})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "provider_unavailable" and "pgvector" in error["message"]
        assert "Traceback" not in proxy.logs()
        plain = httpx.post(proxy.v1 + "/chat/completions", json={
            "model": "demo", "messages": [{"role": "user", "content": "hi"}]})
        assert plain.status_code == 200, "chat without rag does not touch the store"
