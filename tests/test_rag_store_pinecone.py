"""The pinecone RAG store beyond the conformance rows: configuration errors, the control-plane path,
what the fake refuses (so the adapter is held to the service's limits), and a chat request with `rag`
through the real server. All against tests/fakes/pinecone.py: no Pinecone service runs here.
"""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

pytest.importorskip("pinecone", reason="the pinecone extra is not installed: pip install 'omni-llm[pinecone]'")

from proxy.errors import InvalidRequest, ProviderUnavailable  # noqa: E402
from proxy.rag.chunking import Chunk  # noqa: E402
from proxy.rag.loaders import Document  # noqa: E402
from proxy.rag.search import parse_filter  # noqa: E402
from proxy.rag.store import Ingested, Store, open_store  # noqa: E402
from tests.fakes.pinecone import FakePinecone  # noqa: E402
from tests.fakes.server import serve_app  # noqa: E402
from tests.proxy_server import run_proxy  # noqa: E402
from tests.rag.documents import MARKDOWN  # noqa: E402
from tests.rag.gateway import gateway_yaml

DIMENSION = 16


@pytest.fixture(scope="module")
def fake() -> Iterator[FakePinecone]:
    pinecone = FakePinecone()
    with serve_app(pinecone.app()) as url:
        pinecone.base_url = url
        pinecone.create_index("docs", DIMENSION)
        pinecone.create_index("cosine-index", DIMENSION, metric="cosine")
        pinecone.create_index("e2e", 256)  # the local embedding model's width
        yield pinecone


@pytest.fixture
def control_plane(fake: FakePinecone, monkeypatch: pytest.MonkeyPatch) -> FakePinecone:
    """The SDK's control plane is https://api.pinecone.io unless PINECONE_CONTROLLER_HOST says otherwise."""
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", fake.base_url)
    return fake


def settings(fake: FakePinecone, **overrides: Any) -> dict[str, Any]:
    return {"type": "pinecone", "api_key": fake.api_key, "index": "docs", "prefix": "t" + uuid.uuid4().hex[:8],
            **overrides}


def ingested(source: str, texts: list[str], dims: int = DIMENSION, attributes: dict[str, Any] | None = None,
             rng: np.random.Generator | None = None) -> Ingested:
    rng = rng or np.random.default_rng(3)
    chunks = [Chunk(t, source, i, None, None, dict(attributes or {})) for i, t in enumerate(texts)]
    return Ingested(Document(source, (), f"h-{source}", 10, dict(attributes or {})), chunks,
                    rng.normal(size=(len(texts), dims)).astype(np.float32))


# -- configuration errors: clear, naming the store --------------------------------------------------
def test_wrong_api_key_is_a_clear_error(control_plane: FakePinecone) -> None:
    for extra in ({}, {"host": control_plane.host("docs")}):  # the control plane, then the data plane
        with pytest.raises(ProviderUnavailable) as caught:
            open_store(settings(control_plane, api_key="pcsk_wrong", **extra))
        assert "pinecone RAG store" in caught.value.message and "API key was refused" in caught.value.message


def test_unknown_index_is_a_clear_error(control_plane: FakePinecone) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        open_store(settings(control_plane, index="no-such-index"))
    assert "pinecone RAG store" in caught.value.message and "'no-such-index' not found" in caught.value.message


def test_an_index_that_cannot_score_sparse_values_is_refused(control_plane: FakePinecone) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        open_store(settings(control_plane, index="cosine-index"))
    assert "metric dotproduct" in caught.value.message and "cosine" in caught.value.message


def test_dimension_mismatch_is_a_clear_error(control_plane: FakePinecone) -> None:
    store = open_store(settings(control_plane))
    try:
        cid = store.create_collection("wide", "m", {}).id
        with pytest.raises(ValueError, match=r"pinecone index 'docs' has dimension 16: embeddings of 24"):
            store.write_documents(cid, [ingested("a.txt", ["too wide"], dims=24)])
        assert store.document_hashes(cid) == {}
        store.write_documents(cid, [ingested("b.txt", ["narrower fits"], dims=8)])  # zero-padded
        assert store.get_collection(cid).dimensions == 8  # type: ignore[union-attr]
    finally:
        store.close()


def test_an_unreachable_host_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    with pytest.raises(ProviderUnavailable) as caught:
        open_store({"type": "pinecone", "api_key": "k", "index": "docs", "host": f"http://127.0.0.1:{port}"})
    assert "pinecone RAG store cannot open the index" in caught.value.message


# -- behaviour the conformance rows do not reach -------------------------------------------------------
@pytest.fixture
def store(control_plane: FakePinecone) -> Iterator[Store]:
    opened = open_store(settings(control_plane))  # no host: resolved through describe_index
    yield opened
    opened.close()


def test_ne_and_nin_never_match_a_missing_attribute(store: Store) -> None:
    """Pinecone's `$ne`/`$nin` hold for a record without the key; the store guards them with `$exists`."""
    cid = store.create_collection("guards", "m", {}).id
    store.write_documents(cid, [ingested("tagged.txt", ["tagged words"], attributes={"team": "red"}),
                                ingested("plain.txt", ["plain words"])])
    for raw in ({"type": "ne", "key": "team", "value": "blue"}, {"type": "nin", "key": "team", "value": ["blue"]}):
        found = store.keyword([cid], "words", 10, parse_filter(raw))
        assert [store.hits([i])[i].source for i, _ in found] == ["tagged.txt"], raw
    with pytest.raises(InvalidRequest, match="only numbers"):  # Pinecone's $gt/$lt compare numbers
        store.dense([cid], np.ones(DIMENSION), 5, parse_filter({"type": "gt", "key": "team", "value": "a"}))


def test_large_uploads_and_many_records_page_through_list(store: Store, control_plane: FakePinecone) -> None:
    blob = random.Random(5).randbytes(3_000_000)  # 123 parts: more than one list page and one fetch call
    stored = store.add_file("big.bin", "assistants", blob)
    assert store.file_content(stored.id) == blob
    cid = store.create_collection("many", "m", {}).id
    store.write_documents(cid, [ingested(f"d{i}.txt", [f"doc {i}"]) for i in range(130)])
    assert len(store.list_documents(cid)) == 130 and store.get_collection(cid).chunks == 130  # type: ignore[union-attr]
    assert store.delete_file(stored.id) and store.file_content(stored.id) is None


def test_replacing_a_document_deletes_its_old_chunks_by_id_prefix(store: Store, control_plane: FakePinecone) -> None:
    cid = store.create_collection("replace", "m", {}).id
    store.write_documents(cid, [ingested("a.txt", [f"old {i}" for i in range(250)])])
    store.write_documents(cid, [ingested("a.txt", ["new"]), ingested("b.txt", ["other"])])
    namespaces = control_plane.indexes["docs"].namespaces
    chunk_space = next(space for name, space in namespaces.items() if name.endswith(cid))
    assert len(chunk_space) == 2
    store.delete_collection(cid)
    assert not any(name.endswith(cid) for name in namespaces)


# -- the fake holds the adapter to the service's rules --------------------------------------------------
def test_the_fake_refuses_what_the_service_refuses(fake: FakePinecone) -> None:
    data = fake.host("docs")
    headers = {"Api-Key": fake.api_key, "X-Pinecone-Api-Version": "2026-07"}

    def post(path: str, body: dict[str, Any], **extra: str) -> httpx.Response:
        return httpx.post(data + path, json=body, headers={**headers, **extra})

    ok = {"id": "v", "values": [1.0] + [0.0] * (DIMENSION - 1)}
    assert post("/vectors/upsert", {"vectors": [ok]}).status_code == 200
    refused = {
        "zeros": post("/vectors/upsert", {"vectors": [{**ok, "values": [0.0] * DIMENSION}]}),
        "dimension": post("/vectors/upsert", {"vectors": [{**ok, "values": [1.0]}]}),
        "null metadata": post("/vectors/upsert", {"vectors": [{**ok, "metadata": {"a": None}}]}),
        "nested metadata": post("/vectors/upsert", {"vectors": [{**ok, "metadata": {"a": {"b": 1}}}]}),
        "big metadata": post("/vectors/upsert", {"vectors": [{**ok, "metadata": {"a": "x" * 41_000}}]}),
        "1001 vectors": post("/vectors/upsert", {"vectors": [{**ok, "id": str(i)} for i in range(1001)]}),
        "no dense vector": post("/query", {"topK": 1, "sparseVector": {"indices": [1], "values": [1.0]}}),
        "bad operator": post("/query", {"topK": 1, "vector": ok["values"], "filter": {"a": {"$like": "x"}}}),
        "string range": post("/query", {"topK": 1, "vector": ok["values"], "filter": {"a": {"$gt": "x"}}}),
        "delete by filter": post("/vectors/delete", {"filter": {"a": {"$eq": 1}}, "namespace": ""}),
        "no api version": httpx.post(data + "/query", json={"topK": 1, "vector": ok["values"]},
                                     headers={"Api-Key": fake.api_key}),
    }
    for case, response in refused.items():
        assert response.status_code == 400, case
        assert set(response.json()) == {"code", "message", "details"}, case
    too_big = post("/vectors/upsert", {"vectors": [{**ok, "metadata": {"a": "x" * 30_000}, "id": str(i)}
                                                    for i in range(80)]})
    assert too_big.status_code == 413
    assert post("/query", {"topK": 1, "vector": ok["values"]}, **{"Api-Key": "wrong"}).status_code == 401
    described = httpx.get(fake.base_url + "/indexes/nope", headers=headers)
    assert described.status_code == 404 and described.json()["error"]["code"] == "NOT_FOUND"


# -- end to end: the real server, a pinecone-configured gateway ------------------------------------------
def test_chat_with_rag_through_the_server(fake: FakePinecone) -> None:
    config = gateway_yaml(f'{{type: pinecone, api_key: "{fake.api_key}", index: e2e, prefix: e2e}}')
    with run_proxy(config, env={"PINECONE_CONTROLLER_HOST": fake.base_url}) as proxy:
        client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
        guide = client.files.create(file=("guide.md", MARKDOWN.encode()), purpose="assistants")
        created = client.vector_stores.create(name="handbook", file_ids=[guide.id])
        assert created.status == "completed" and created.file_counts.completed == 1
        completion = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "How many days do I have to ask for a refund?"}],
            extra_body={"rag": {"collection": "handbook", "top_k": 2}})
        context = completion.model_extra["rag_context"]  # type: ignore[index]
        assert context and context[0]["source"] == "guide.md" and "30 days" in context[0]["content"]
        keyword = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "refund"}],
            extra_body={"rag": {"collection": created.id, "search": "keyword", "top_k": 1}})
        assert "30 days" in keyword.model_extra["rag_context"][0]["content"]  # type: ignore[index]
    assert any(name.startswith("e2e-vs_") for name in fake.indexes["e2e"].namespaces), "chunks live in Pinecone"

    with run_proxy(config.replace(fake.api_key, "pcsk_wrong"), env={"PINECONE_CONTROLLER_HOST": fake.base_url}) as bad:
        response = httpx.post(bad.v1 + "/chat/completions", json={
            "model": "demo", "messages": [{"role": "user", "content": "hi"}], "rag": {"collection": "handbook"}})
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "provider_unavailable" and "pinecone RAG store" in error["message"]
