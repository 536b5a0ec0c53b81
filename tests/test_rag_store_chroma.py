"""The chroma RAG store beyond the conformance rows: settings, errors, offline use, the gateway end to end."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from proxy.errors import InvalidRequest, ProviderUnavailable
from proxy.rag.search import parse_filter
from proxy.rag.store import Store, open_store
from tests.fakes.server import Recorder
from tests.proxy_server import free_port, run_proxy
from tests.rag.documents import MARKDOWN
from tests.rag.stores import Unavailable
from tests.test_rag_stores import DIMS, contents, document, new_collection, vector

pytest.importorskip("chromadb", reason="the chroma extra is not installed")

from tests.rag.stores.chroma_server import ChromaServer, run_server  # noqa: E402
from tests.rag.gateway import gateway_yaml


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    try:
        running = run_server(tmp_path_factory.mktemp("chroma-server"))
    except Unavailable as exc:
        pytest.fail(str(exc))
    yield running
    running.stop()


def test_an_unreachable_server_is_a_503_naming_the_store() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderUnavailable) as caught:
        open_store({"type": "chroma", "url": url})
    assert caught.value.status == 503 and caught.value.code == "provider_unavailable"
    assert "chroma" in caught.value.message and url in caught.value.message


@pytest.mark.parametrize("settings", [
    {"type": "chroma", "url": "ftp://127.0.0.1:8000"},
    {"type": "chroma", "url": "http://127.0.0.1:8000/some/path"},
    {"type": "chroma", "path": "x", "prefix": "-bad"},
    {"type": "chroma", "path": "x", "prefix": "has space"},
    {"type": "chroma", "url": "http://127.0.0.1:99999"},
    {"type": "chroma", "path": "x", "url": "http://127.0.0.1:8000"},
])
def test_bad_settings_are_a_503_naming_the_store(settings: dict[str, Any], tmp_path: Path) -> None:
    if "path" in settings:
        settings = {**settings, "path": str(tmp_path / "db")}
    with pytest.raises(ProviderUnavailable) as caught:
        open_store(settings)
    assert "chroma RAG store" in caught.value.message


def test_the_api_key_is_sent_as_the_chroma_token_header() -> None:
    """A 127.0.0.1 listener that records the client's first request, then refuses it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        opener = subprocess.Popen([sys.executable, "-c", (
            "from proxy.rag.store import open_store\n"
            f"open_store({{'type': 'chroma', 'url': 'http://127.0.0.1:{port}', 'api_key': 'ck-secret-1'}})\n")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            listener.settimeout(30)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        finally:
            opener.wait(30)
    headers = {line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip()
               for line in head.split(b"\r\n")[1:] if b":" in line}
    assert headers[b"x-chroma-token"] == b"ck-secret-1"
    assert opener.returncode != 0


def test_a_refusing_server_is_a_503_naming_the_store() -> None:
    """A server (or a proxy in front of it) that answers 401 to everything: a 503 naming the store, no traceback."""
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def refuse() -> None:
            conn, _ = listener.accept()
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 12\r\nconnection: close\r\n\r\nbad token!!!")

        thread = threading.Thread(target=refuse, daemon=True)
        thread.start()
        with pytest.raises(ProviderUnavailable) as caught:
            open_store({"type": "chroma", "url": f"http://127.0.0.1:{port}", "api_key": "wrong"})
        thread.join(30)
    assert "chroma" in caught.value.message and "bad token" in caught.value.message


def test_a_range_filter_on_text_is_a_clear_400(tmp_path: Path) -> None:
    store = open_store({"type": "chroma", "path": str(tmp_path / "db")})
    try:
        cid = new_collection(store)
        store.write_documents(cid, [document("a.txt", ["one"], [0])])
        with pytest.raises(InvalidRequest) as caught:
            store.dense([cid], vector(0), 3, parse_filter({"type": "gt", "key": "source", "value": "a"}))
        assert "chroma" in caught.value.message and "numbers" in caught.value.message
    finally:
        store.close()


def test_mixed_type_in_and_nin(tmp_path: Path) -> None:
    store = open_store({"type": "chroma", "path": str(tmp_path / "db")})
    try:
        cid = new_collection(store)
        store.write_documents(cid, [document("a.txt", ["a word"], [0], attributes={"v": "x"}),
                                    document("b.txt", ["b word"], [1], attributes={"v": 3}),
                                    document("c.txt", ["c word"], [2], attributes={"v": 2.5}),
                                    document("d.txt", ["d word"], [3])])

        def found(raw: dict[str, Any]) -> set[str]:
            return {c.split()[0] for c in contents(store, store.keyword([cid], "word", 10, parse_filter(raw)))}

        assert found({"type": "in", "key": "v", "value": ["x", 3, 2.5]}) == {"a", "b", "c"}
        assert found({"type": "in", "key": "v", "value": [3.0]}) == {"b"}
        assert found({"type": "nin", "key": "v", "value": ["x", 3]}) == {"c"}, "d has no `v`: nin never matches it"
        assert found({"type": "ne", "key": "v", "value": "x"}) == {"b", "c"}
    finally:
        store.close()


def test_keyword_search_when_every_word_is_common(tmp_path: Path) -> None:
    """Words in most chunks are still searchable (the longest is ranked), capitals match, filters apply."""
    store = open_store({"type": "chroma", "path": str(tmp_path / "db")})
    try:
        cid = new_collection(store)
        texts = [f"Harbour report {i} " + ("harbour " * (i % 3)) for i in range(300)]
        store.write_documents(cid, [document("h.txt", texts, [i % DIMS for i in range(300)])])
        ranked = store.keyword([cid], "HARBOUR report", 5)
        assert len(ranked) == 5 and all("harbour harbour" in c for c in contents(store, ranked))
        where = parse_filter({"type": "lt", "key": "chunk_index", "value": 3})
        assert sorted(contents(store, store.keyword([cid], "harbour", 10, where))) == sorted(texts[:3])
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["path", "url"])
def test_nothing_is_downloaded_and_no_network_is_used(mode: str, server: ChromaServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Chroma's default embedding function would fetch an ONNX model on first use: it must never run."""
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    models = tmp_path / "onnx_models"
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", models)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    used: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        used.append("the default embedding function")
        raise AssertionError("the default embedding function ran")

    monkeypatch.setattr(ONNXMiniLM_L6_V2, "__call__", refuse)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download_model_if_not_exists", refuse)
    connect = socket.socket.connect

    def loopback_only(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            used.append(f"connect {address}")
            raise OSError("network access in a test")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    settings = {"type": "chroma", "path": str(tmp_path / "db")} if mode == "path" \
        else {"type": "chroma", "url": server.url, "prefix": f"offline-{mode}-"}
    store = open_store(settings)
    try:
        cid = new_collection(store)
        store.write_documents(cid, [document("o.txt", ["offline harbour", "second chunk"], [0, 1])])
        assert contents(store, store.dense([cid], vector(0), 1)) == ["offline harbour"]
        assert contents(store, store.keyword([cid], "harbour", 1)) == ["offline harbour"]
        assert store.delete_collection(cid)
    finally:
        store.close()
    assert used == [] and not models.exists()


def test_importing_the_app_does_not_import_chromadb() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, proxy.app; print('chromadb' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# -- the gateway end to end, on the real Chroma server --------------------------------------------------
def test_chat_with_rag_through_a_chroma_backed_gateway(server: ChromaServer,
                                                        openai_upstream: tuple[str, Recorder]) -> None:
    store = f'{{type: chroma, url: "{server.url}", prefix: e2e-}}'
    with run_proxy(gateway_yaml(store, upstream=openai_upstream[0])) as proxy:
        client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
        guide = client.files.create(file=("guide.md", MARKDOWN.encode()), purpose="assistants")
        created = client.vector_stores.create(name="handbook", file_ids=[guide.id])
        assert created.status == "completed" and created.file_counts.completed == 1
        completion = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "How many days do I have to ask for a refund?"}],
            extra_body={"rag": {"collection": "handbook", "top_k": 1}})
        context = completion.model_extra["rag_context"]  # type: ignore[index]
        assert context[0]["source"] == "guide.md" and "30 days" in context[0]["content"]
        sent = [r for r in openai_upstream[1].requests if r.path == "/v1/chat/completions"][-1].body
        assert "30 days" in sent["messages"][0]["content"]
        hits = client.vector_stores.search(created.id, query="refund original card", filters={
            "type": "eq", "key": "section", "value": "Refunds"})
        assert hits.data and all(h.attributes["section"] == "Refunds" for h in hits.data)
    # the collection lives on the server: a second gateway sees it
    shared = open_store({"type": "chroma", "url": server.url, "prefix": "e2e-"})
    try:
        assert [c.name for c in shared.list_collections()] == ["handbook"]
    finally:
        shared.close()


def test_an_unreachable_chroma_server_is_a_503_on_the_api(openai_upstream: tuple[str, Recorder]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with run_proxy(gateway_yaml(f'{{type: chroma, url: "{url}"}}', upstream=openai_upstream[0])) as proxy:
        response = httpx.post(proxy.v1 + "/chat/completions", json={
            "model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "rag": {"collection": "handbook"}}, timeout=60)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "provider_unavailable" and "chroma" in error["message"] and url in error["message"]
        assert "Traceback" not in response.text and "Traceback" not in proxy.logs()


def test_the_store_is_unit_length_and_cosine_on_the_server(server: ChromaServer) -> None:
    store: Store = open_store({"type": "chroma", "url": server.url, "prefix": "scale-"})
    try:
        cid = new_collection(store)
        raw = np.stack([vector(0) * 7.0, vector(1) * 0.1])  # not unit length: the store normalises
        from proxy.rag.chunking import Chunk
        from proxy.rag.loaders import Document
        from proxy.rag.store import Ingested

        store.write_documents(cid, [Ingested(Document("u.txt", (), "h", 2), [Chunk("big", "u.txt", 0),
                                                                              Chunk("small", "u.txt", 1)], raw)])
        ranked = store.dense([cid], vector(1), 2)
        assert contents(store, ranked) == ["small", "big"] and ranked[0][1] == pytest.approx(1.0, abs=1e-3)
    finally:
        store.close()


def test_large_writes_are_split_under_the_servers_payload_limit(server: ChromaServer) -> None:
    """4,000 rows (under the max batch size, 5,461) of 1,536-dimension vectors and 3 kB texts: ~47 MB in one
    body, over the server's default request limit (`max_payload_size_bytes`, 40 MiB)."""
    from proxy.rag.chunking import Chunk
    from proxy.rag.loaders import Document
    from proxy.rag.store import Ingested

    store = open_store({"type": "chroma", "url": server.url, "prefix": "big-"})
    try:
        cid = new_collection(store)
        rng = np.random.default_rng(3)
        count = 4000
        chunks = [Chunk(f"row{i} " + "filler " * 430, "big.txt", i) for i in range(count)]
        vectors = rng.normal(size=(count, 1536)).astype(np.float32)
        store.write_documents(cid, [Ingested(Document("big.txt", (), "h", 1), chunks, vectors)])
        assert store.get_collection(cid).chunks == count  # type: ignore[union-attr]
        assert contents(store, store.dense([cid], vectors[3210], 1))[0].startswith("row3210 ")
    finally:
        store.close()
