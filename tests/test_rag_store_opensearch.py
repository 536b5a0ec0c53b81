"""The opensearch RAG store beyond the conformance rows: credentials, an unreachable cluster, the index layout,
efficient k-NN filtering, attribute types, listing past one page, and a chat with `rag` through the real server.

No OpenSearch runs here: the store talks through the real opensearch-py client to tests/fakes/opensearch.py,
a fake of the REST API (the fake's own checks are at the end).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

pytest.importorskip("opensearchpy", reason="the opensearch extra is not installed")

from opensearchpy import OpenSearch  # noqa: E402
from opensearchpy import exceptions as os_errors  # noqa: E402

from proxy.errors import ProviderUnavailable  # noqa: E402
from proxy.rag.chunking import Chunk  # noqa: E402
from proxy.rag.loaders import Document  # noqa: E402
from proxy.rag.search import parse_filter  # noqa: E402
from proxy.rag.store import Ingested, open_store  # noqa: E402
from proxy.rag.stores import opensearch as adapter  # noqa: E402
from tests.fakes.opensearch import FakeOpenSearch, serve  # noqa: E402
from tests.fakes.server import Recorder  # noqa: E402
from tests.proxy_server import free_port, run_proxy  # noqa: E402
from tests.rag.documents import MARKDOWN  # noqa: E402
from tests.rag.gateway import gateway_yaml

DIMS = 8


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, FakeOpenSearch]]:
    with serve() as running:
        yield running


@pytest.fixture
def store(cluster: tuple[str, FakeOpenSearch], request: pytest.FixtureRequest) -> Iterator[Any]:
    opened = open_store({"type": "opensearch", "url": cluster[0], "prefix": f"t{abs(hash(request.node.name))}"})
    yield opened
    opened.close()


def axis(i: int, dims: int = DIMS) -> np.ndarray:
    v = np.full(dims, 0.01, dtype=np.float32)
    v[i % dims] = 1.0
    return v


def ingest(store: Any, cid: str, source: str, texts: list[str], axes: list[int],
           attributes: dict[str, Any] | None = None) -> None:
    attrs = attributes or {}
    chunks = [Chunk(t, source, i, None, None, dict(attrs)) for i, t in enumerate(texts)]
    store.write_documents(cid, [Ingested(Document(source, (), f"h-{source}", 10, dict(attrs)), chunks,
                                         np.stack([axis(a) for a in axes]))])


def texts(store: Any, ranked: list[tuple[str, float]]) -> list[str]:
    found = store.hits([chunk_id for chunk_id, _ in ranked])
    return [found[chunk_id].content for chunk_id, _ in ranked]


def test_basic_auth_is_sent_and_wrong_credentials_are_a_clear_503() -> None:
    with serve(credentials=("admin", "s3cret-Pass")) as (url, fake):
        store = open_store({"type": "opensearch", "url": url, "username": "admin", "password": "s3cret-Pass",
                            "prefix": "auth"})
        cid = store.create_collection("docs", "m", {}).id
        ingest(store, cid, "a.txt", ["guarded words"], [0])
        assert texts(store, store.keyword([cid], "guarded", 1)) == ["guarded words"]
        expected = "Basic " + base64.b64encode(b"admin:s3cret-Pass").decode()
        assert fake.recorder.requests and all(r.headers.get("authorization") == expected
                                              for r in fake.recorder.requests)
        store.close()
        wrong = open_store({"type": "opensearch", "url": url, "username": "admin", "password": "nope"})
        with pytest.raises(ProviderUnavailable) as caught:
            wrong.list_collections()
        assert "opensearch RAG store" in str(caught.value) and "credentials" in str(caught.value)
        assert caught.value.status == 503 and caught.value.code == "provider_unavailable"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no trust store knows, and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_verify_certs_over_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    with serve(ssl_certfile=str(cert), ssl_keyfile=str(key)) as (url, _):
        assert url.startswith("https://")
        strict = open_store({"type": "opensearch", "url": url, "verify_certs": True})
        with pytest.raises(ProviderUnavailable, match="unreachable.*CERTIFICATE_VERIFY_FAILED"):
            strict.list_collections()
        lax = open_store({"type": "opensearch", "url": url, "verify_certs": False, "prefix": "lax"})
        assert lax.list_collections() == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the documented way to trust a private CA
        trusted = open_store({"type": "opensearch", "url": url, "prefix": "trusted"})
        assert trusted.create_collection("docs", "m", {}).name == "docs"
        for opened in (strict, lax, trusted):
            opened.close()


def test_an_unreachable_cluster_is_a_503_naming_the_store() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store = open_store({"type": "opensearch", "url": url})
    with pytest.raises(ProviderUnavailable) as caught:
        store.get_collection("docs")
    assert f"the opensearch RAG store at {url} is unreachable" in str(caught.value)


def test_credentials_in_the_url_work_and_never_reach_an_error_message() -> None:
    with serve(credentials=("admin", "in-url-Secret")) as (url, _):
        store = open_store({"type": "opensearch", "url": url.replace("http://", "http://admin:in-url-Secret@")})
        assert store.list_collections() == []
        store.close()
    dead = open_store({"type": "opensearch", "url": f"http://admin:in-url-Secret@127.0.0.1:{free_port()}"})
    with pytest.raises(ProviderUnavailable) as caught:
        dead.list_collections()
    assert "in-url-Secret" not in str(caught.value) and "unreachable" in str(caught.value)


def test_a_bad_prefix_is_refused_before_any_request() -> None:
    with pytest.raises(ProviderUnavailable, match="prefix 'Bad Prefix'"):
        open_store({"type": "opensearch", "url": "http://127.0.0.1:9", "prefix": "Bad Prefix"})


def test_index_layout(store: Any, cluster: tuple[str, FakeOpenSearch]) -> None:
    cid = store.create_collection("docs", "m", {}).id
    ingest(store, cid, "a.txt", ["one"], [0], {"team": "red"})
    index = cluster[1].indices[f"{store.prefix}-chunks-{cid}"]
    vector = index.mapping["properties"]["vector"]
    assert index.settings["knn"] is True and vector["dimension"] == DIMS
    assert vector["method"] == {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"}
    assert index.mapping["properties"]["content"]["type"] == "text"
    assert index.mapping["properties"]["attr_s"]["properties"]["team"]["type"] == "keyword"
    assert cluster[1].indices[store.catalog].mapping["properties"] == {"key": {"type": "keyword"}}
    assert store.delete_collection(cid) and f"{store.prefix}-chunks-{cid}" not in cluster[1].indices


def test_the_filter_runs_inside_the_knn_search(store: Any) -> None:
    """200 chunks near the query, 3 far from it that pass the filter: a post-filtered top 3 would find none."""
    cid = store.create_collection("docs", "m", {}).id
    ingest(store, cid, "near.txt", [f"near {i}" for i in range(200)], [0] * 200, {"kind": "near"})
    ingest(store, cid, "far.txt", ["far a", "far b", "far c"], [5, 6, 7], {"kind": "far"})
    where = parse_filter({"type": "eq", "key": "kind", "value": "far"})
    ranked = store.dense([cid], axis(0), 3, where)
    assert sorted(texts(store, ranked)) == ["far a", "far b", "far c"]
    cosine = float(axis(0) @ axis(5) / np.linalg.norm(axis(0)) / np.linalg.norm(axis(5)))
    assert ranked[0][1] == pytest.approx(cosine, abs=1e-4), "scores are cosines again, not (1 + cos)/2"


def test_attribute_types_never_clash_and_compare_like_matches(store: Any) -> None:
    cid = store.create_collection("docs", "m", {}).id
    ingest(store, cid, "s.txt", ["string seven"], [0], {"code": "7", "dotted.key": "x", "flag": True})
    ingest(store, cid, "n.txt", ["number seven"], [1], {"code": 7, "dotted.key": 2.5, "flag": False})
    cases = [({"type": "eq", "key": "code", "value": "7"}, ["string seven"]),
             ({"type": "eq", "key": "code", "value": 7}, ["number seven"]),
             ({"type": "gt", "key": "code", "value": 5}, ["number seven"]),
             ({"type": "gte", "key": "code", "value": "0"}, ["string seven"]),
             ({"type": "ne", "key": "code", "value": 7}, ["string seven"]),
             ({"type": "eq", "key": "dotted.key", "value": "x"}, ["string seven"]),
             ({"type": "lt", "key": "dotted.key", "value": 3}, ["number seven"]),
             ({"type": "eq", "key": "flag", "value": True}, ["string seven"]),
             ({"type": "eq", "key": "flag", "value": 0}, ["number seven"]),
             ({"type": "eq", "key": "page", "value": 1}, []),
             ({"type": "nin", "key": "nothing", "value": ["x"]}, [])]
    for raw, expected in cases:
        where = parse_filter(raw)
        assert sorted(texts(store, store.dense([cid], axis(0), 5, where))) == expected, raw
        assert sorted(texts(store, store.keyword([cid], "seven", 5, where))) == expected, raw


def test_listing_pages_past_one_search(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapter, "PAGE", 4)
    names = [f"c{i:02d}" for i in range(11)]
    for name in names:
        store.create_collection(name, "m", {})
    assert sorted(c.name for c in store.list_collections()) == names


def test_chat_with_rag_through_the_server(cluster: tuple[str, FakeOpenSearch],
                                          openai_upstream: tuple[str, Recorder]) -> None:
    config = gateway_yaml(f'{{type: opensearch, url: "{cluster[0]}", prefix: e2e, verify_certs: true}}',
                          upstream=openai_upstream[0])
    with run_proxy(config) as proxy:
        client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
        guide = client.files.create(file=("guide.md", MARKDOWN.encode()), purpose="assistants")
        store = client.vector_stores.create(name="handbook", file_ids=[guide.id])
        assert store.file_counts.completed == 1
        completion = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "How many days do I have to ask for a refund?"}],
            extra_body={"rag": {"collection": "handbook", "top_k": 2}})
        context = completion.model_extra["rag_context"]  # type: ignore[index]
        assert context[0]["source"] == "guide.md" and context[0]["section"] == "Refunds"
        sent = [r for r in openai_upstream[1].requests if r.path == "/v1/chat/completions"][-1].body
        assert "30 days" in sent["messages"][0]["content"]
    assert f"e2e-chunks-{store.id}" in cluster[1].indices and "e2e-catalog" in cluster[1].indices


def test_an_unreachable_cluster_through_the_server_is_a_503(openai_upstream: tuple[str, Recorder]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = f"""
server: {{api_keys: []}}
providers:
  demo: {{type: mock}}
models:
  demo: {{provider: demo, model: mock-1}}
rag:
  store: {{type: opensearch, url: "{dead}"}}
"""
    with run_proxy(config) as proxy:
        response = httpx.post(proxy.v1 + "/chat/completions", timeout=30, json={
            "model": "demo", "messages": [{"role": "user", "content": "hi"}], "rag": {"collection": "docs"}})
        error = response.json()["error"]
        assert response.status_code == 503 and error["code"] == "provider_unavailable"
        assert f"opensearch RAG store at {dead} is unreachable" in error["message"]


# -- the fake itself: what real OpenSearch would say -----------------------------------------------------
def test_the_fake_answers_like_opensearch(cluster: tuple[str, FakeOpenSearch]) -> None:
    client = OpenSearch(hosts=[cluster[0]], max_retries=0)
    with pytest.raises(os_errors.NotFoundError) as missing:
        client.search(index="fake-nothing", body={"query": {"match_all": {}}})
    assert missing.value.error == "index_not_found_exception"
    client.indices.create(index="fake-check", body={"mappings": {"properties": {"n": {"type": "integer"}}}})
    with pytest.raises(os_errors.RequestError) as again:
        client.indices.create(index="fake-check", body={})
    assert again.value.error == "resource_already_exists_exception"
    client.index(index="fake-check", id="1", body={"n": 1, "t": "hello world"})
    assert client.get(index="fake-check", id="1")["_source"]["n"] == 1, "GET is real-time"
    assert client.count(index="fake-check")["count"] == 0, "search sees a write only after a refresh"
    client.indices.refresh(index="fake-check")
    assert client.search(index="fake-check", body={"query": {"match": {"t": "HELLO"}}})["hits"]["total"]["value"] == 1
    for bad in ({"query": {"fuzzy_thing": {}}}, {"query": {"match_all": {}}, "size": 10_001}, {"aggs": {}}):
        with pytest.raises(os_errors.RequestError):
            client.search(index="fake-check", body=bad)
    with pytest.raises(os_errors.RequestError) as unparsable:
        client.index(index="fake-check", id="2", body={"n": "not a number"})
    assert unparsable.value.error == "mapper_parsing_exception"
    with pytest.raises(os_errors.RequestError) as bad_name:
        client.indices.create(index="Upper", body={})
    assert bad_name.value.error == "invalid_index_name_exception"
    client.close()
