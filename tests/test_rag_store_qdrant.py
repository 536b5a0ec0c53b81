"""The `qdrant` RAG store beyond the conformance suite: config errors, server mode (an unreachable port,
a refused api key and the request shapes, against tests/fakes/qdrant.py), local mode's one client per
directory, filters Qdrant needs care with, and the real server answering chat with `rag` from Qdrant."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

pytest.importorskip("qdrant_client", reason="QDRANT STORE NOT TESTED: pip install 'omni-llm[qdrant]'")

from proxy.errors import InvalidRequest, ProviderUnavailable
from proxy.rag.chunking import Chunk
from proxy.rag.loaders import Document
from proxy.rag.search import parse_filter
from proxy.rag.store import Ingested, open_store
from proxy.rag.stores.qdrant import BATCH, QdrantStore, parents
from tests.fakes import qdrant as fake_qdrant
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import free_port, run_proxy
from tests.rag.documents import MARKDOWN
from tests.rag.gateway import gateway_yaml


def ingested(source: str, texts: list[str], attributes: dict[str, Any] | None = None, dims: int = 4) -> Ingested:
    chunks = [Chunk(t, source, i, None, None, dict(attributes or {})) for i, t in enumerate(texts)]
    vectors = np.eye(dims, dtype=np.float32)[[i % dims for i in range(len(texts))]] + 0.01
    return Ingested(Document(source, (), "h-" + source, 10, dict(attributes or {})), chunks, vectors)


# the fake is plain http: the client rightly warns that the api key travels in clear
pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_qdrant.make_app(recorder, api_key="qd-secret")) as url:
        yield url, recorder


# -- configuration and server mode ------------------------------------------------------------------
def test_an_unreachable_server_is_a_503_naming_the_store() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderUnavailable) as caught:
        open_store({"type": "qdrant", "url": url})
    assert caught.value.status == 503 and caught.value.code == "provider_unavailable"
    assert "qdrant RAG store" in caught.value.message and url in caught.value.message
    assert "unreachable" in caught.value.message


@pytest.mark.parametrize(("settings", "says"), [
    ({}, "exactly one of"),
    ({"url": "http://127.0.0.1:1", "path": "/tmp/x"}, "exactly one of"),
    ({"path": "/tmp/x", "prefix": "bad prefix!"}, "prefix"),
])
def test_bad_settings_are_a_clear_error(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ProviderUnavailable, match=says):
        QdrantStore(**settings)


def test_a_refused_api_key_is_a_503_saying_so(fake: tuple[str, Recorder]) -> None:
    with pytest.raises(ProviderUnavailable, match="refused the api key"):
        open_store({"type": "qdrant", "url": fake[0], "api_key": "wrong"})


def test_server_mode_request_shapes(fake: tuple[str, Recorder]) -> None:
    url, recorder = fake
    store = open_store({"type": "qdrant", "url": url, "api_key": "qd-secret", "prefix": "shapes"})
    try:
        first = len(recorder.requests)
        cid = store.create_collection("docs", "m", {}).id
        store.write_documents(cid, [ingested("a.md", [f"word{i} text" for i in range(BATCH + 5)],
                                             {"team": "red", "year": 2024, "score": 0.5, "draft": False})])
        store.document_hashes(cid)
        where = parse_filter({"type": "ne", "key": "team", "value": "blue"})
        assert len(store.keyword([cid], "word3", 5, where)) == 1
        seen = recorder.requests[first:]
    finally:
        store.close()
    assert all(r.headers.get("api-key") == "qd-secret" for r in seen)
    chunks = f"/collections/shapes_chunks_{cid}"
    created = next(r.body for r in seen if r.method == "PUT" and r.path == chunks)
    assert created["vectors"] == {"dense": {"size": 4, "distance": "Cosine"}}
    assert created["sparse_vectors"] == {"keyword": {"modifier": "idf"}}
    indexes = {r.body["field_name"]: r.body["field_schema"] for r in seen if r.path == chunks + "/index"}
    assert indexes == {"source": "keyword", "generation": "keyword", "section": "keyword", "page": "integer",
                       "chunk_index": "integer", "attributes.team": "keyword", "attributes.year": "float",
                       "attributes.score": "float", "attributes.draft": "bool"}
    upserts = [len(r.body["points"]) for r in seen if r.method == "PUT" and r.path == chunks + "/points"]
    assert upserts == [BATCH, 5], "chunks are written in batches"
    point = next(r.body for r in seen if r.method == "PUT" and r.path == chunks + "/points")["points"][0]
    assert set(point["vector"]) == {"dense", "keyword"} and point["payload"]["attributes"]["team"] == "red"
    scroll = next(r.body for r in seen if r.path == "/collections/shapes_records/points/scroll")
    assert scroll["filter"] == {"must": [{"key": "parents", "match": {"value": f"document/{cid}/"}}]}, \
        "listing records is a filtered scroll"
    query = next(r.body for r in seen if r.path == chunks + "/points/query")
    assert query["using"] == "keyword" and query["filter"]["must_not"][0] == {"is_empty": {"key": "attributes.team"}}


def test_two_gateways_on_one_server_with_different_prefixes_do_not_see_each_other(
        fake: tuple[str, Recorder]) -> None:
    one = open_store({"type": "qdrant", "url": fake[0], "api_key": "qd-secret", "prefix": "one"})
    two = open_store({"type": "qdrant", "url": fake[0], "api_key": "qd-secret", "prefix": "two"})
    try:
        one.create_collection("docs", "m", {})
        assert two.list_collections() == [] and [c.name for c in one.list_collections()] == ["docs"]
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("mode", ["url", "path"])
def test_a_collection_deleted_by_another_gateway_searches_as_empty(fake: tuple[str, Recorder], tmp_path: Path,
                                                                    mode: str) -> None:
    settings = {"type": "qdrant", "url": fake[0], "api_key": "qd-secret", "prefix": "gone"} if mode == "url" \
        else {"type": "qdrant", "path": str(tmp_path / "q")}
    one, two = open_store(settings), open_store(settings)
    try:
        cid = one.create_collection("docs", "m", {}).id
        one.write_documents(cid, [ingested("a.txt", ["alpha text"])])
        assert len(two.dense([cid], np.ones(4), 5)) == 1  # `two` has now seen the collection
        chunk = two.keyword([cid], "alpha", 5)[0][0]
        assert one.delete_collection(cid) is True
        assert two.dense([cid], np.ones(4), 5) == [] and two.keyword([cid], "alpha", 5) == []
        assert two.hits([chunk]) == {}
    finally:
        one.close()
        two.close()


def test_record_parents() -> None:
    assert parents("document/vs_1/abc") == ["document/", "document/vs_1/"]
    assert parents("name/x") == ["name/"] and parents("flat") == []


# -- local mode ---------------------------------------------------------------------------------------
def test_local_stores_on_one_path_share_one_client_and_release_the_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "q")
    first = open_store({"type": "qdrant", "path": path})
    second = open_store({"type": "qdrant", "path": path})  # the same process: no "already accessed" error
    cid = first.create_collection("docs", "m", {}).id
    first.write_documents(cid, [ingested("a.txt", ["volcanic magma erupts", "quiet meadow"])])
    first.close()
    assert second.get_collection("docs").chunks == 2  # type: ignore[union-attr]
    second.close()
    probe = (f"from proxy.rag.store import open_store; s = open_store({{'type': 'qdrant', 'path': {path!r}}}); "
             "print(s.get_collection('docs').chunks); s.close()")
    done = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr  # both closed: the lock is free
    again = open_store({"type": "qdrant", "path": path})
    try:
        held = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60)
        assert held.returncode != 0 and "ProviderUnavailable" in held.stderr and "already accessed" in held.stderr
        ranked = again.keyword([cid], "magma", 5)  # reopened from disk: the keyword index is rebuilt
        assert [again.hits([c])[c].content for c, _ in ranked] == ["volcanic magma erupts"]
    finally:
        again.close()


def test_local_replacement_removes_the_older_longer_version(tmp_path: Path) -> None:
    store = open_store({"type": "qdrant", "path": str(tmp_path / "q")})
    try:
        cid = store.create_collection("docs", "m", {}).id
        store.write_documents(cid, [ingested("long.txt", [f"old{i} text" for i in range(BATCH + 44)]),
                                    ingested("other.txt", ["other text"])])
        store.write_documents(cid, [ingested("long.txt", ["new0 text", "new1 text"])])
        ranked = store.dense([cid], np.ones(4, dtype=np.float32), 1000)
        found = store.hits([c for c, _ in ranked])
        assert sorted(h.content for h in found.values()) == ["new0 text", "new1 text", "other text"]
        assert store.delete_document(cid, "long.txt") is True
        assert [h.content for h in store.hits([c for c, _ in store.dense([cid], np.ones(4), 1000)]).values()] \
            == ["other text"]
    finally:
        store.close()


@pytest.mark.parametrize(("raw", "expected"), [
    ({"type": "eq", "key": "score", "value": 3}, {"s3"}),  # an integer bound matches the float 3.0
    ({"type": "in", "key": "score", "value": [3, 4.5]}, {"s3", "s4"}),
    ({"type": "gte", "key": "score", "value": 4}, {"s4"}),
    ({"type": "eq", "key": "dotted.key", "value": "yes"}, {"s3"}),  # a key with a dot is one key, not a path
    ({"type": "nin", "key": "dotted.key", "value": ["no"]}, {"s3"}),  # s4 has no such key: no match
    ({"type": "eq", "key": "flag", "value": True}, {"s4"}),
    ({"type": "ne", "key": "flag", "value": True}, set()),  # s3 has no flag
])
def test_filters_qdrant_needs_care_with(tmp_path: Path, raw: dict[str, Any], expected: set[str]) -> None:
    store = open_store({"type": "qdrant", "path": str(tmp_path / "q")})
    try:
        cid = store.create_collection("docs", "m", {}).id
        store.write_documents(cid, [ingested("s3.txt", ["s3 shared"], {"score": 3.0, "dotted.key": "yes"}),
                                    ingested("s4.txt", ["s4 shared"], {"score": 4.5, "flag": True})])
        ranked = store.dense([cid], np.ones(4, dtype=np.float32), 10, parse_filter(raw))
        found = store.hits([c for c, _ in ranked])
        assert {found[c].content.split()[0] for c, _ in ranked} == expected
    finally:
        store.close()


def test_a_string_range_is_a_400(tmp_path: Path) -> None:
    store = open_store({"type": "qdrant", "path": str(tmp_path / "q")})
    try:
        cid = store.create_collection("docs", "m", {}).id
        store.write_documents(cid, [ingested("a.txt", ["alpha"])])
        with pytest.raises(InvalidRequest, match="numbers only") as caught:
            store.keyword([cid], "alpha", 5, parse_filter({"type": "gt", "key": "section", "value": "m"}))
        assert caught.value.status == 400 and caught.value.param == "filters"
    finally:
        store.close()


# -- through the real server -----------------------------------------------------------------------
def test_chat_with_rag_through_a_qdrant_gateway(tmp_path: Path) -> None:
    with run_proxy(gateway_yaml(f'{{type: qdrant, path: "{tmp_path / "qdrant"}", prefix: e2e}}')) as proxy:
        client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
        guide = client.files.create(file=("guide.md", MARKDOWN.encode()), purpose="assistants")
        store = client.vector_stores.create(name="handbook", file_ids=[guide.id])
        assert store.status == "completed" and store.file_counts.completed == 1
        completion = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "How many days do I have to ask for a refund?"}],
            extra_body={"rag": {"collection": "handbook", "top_k": 1}})
        context = completion.model_extra["rag_context"]  # type: ignore[index]
        assert [(c["source"], c["section"]) for c in context] == [("guide.md", "Refunds")]
        assert "30 days" in context[0]["content"]
        for search in ("keyword", "dense"):
            found = client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "x"}],
                extra_body={"rag": {"collection": store.id, "query": "which port does the service listen on",
                                    "search": search, "top_k": 1}})
            assert found.model_extra["rag_context"][0]["section"] == "Installation", search  # type: ignore[index]
        hits = client.vector_stores.search(store.id, query="refund", filters={
            "type": "eq", "key": "section", "value": "Security"})
        assert [h.content[0].text for h in hits.data] and all("constant time" in h.content[0].text for h in hits.data)


def test_an_unreachable_qdrant_is_a_503_on_the_chat_route() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with run_proxy(gateway_yaml(f'{{type: qdrant, url: "{url}"}}')) as proxy:
        response = httpx.post(proxy.v1 + "/chat/completions", json={
            "model": "demo", "messages": [{"role": "user", "content": "hi"}], "rag": {"collection": "handbook"}}, timeout=120)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "provider_unavailable" and "qdrant" in error["message"] and url in error["message"]
        assert "Traceback" not in response.text
