"""RAG end to end: the real `omni-llm serve`, the official openai SDK (files, vector stores, chat with `rag`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, omni_llm_command, run_proxy
from tests.rag.documents import MARKDOWN, TEXT, write_pdf

MAX_BYTES = 300_000


def config(upstream: str, data: Path) -> str:
    return f"""
server: {{api_keys: [], max_request_bytes: {MAX_BYTES}}}
providers:
  up: {{type: openai, api_key: sk-upstream-0123456789, base_url: "{upstream}/v1", max_retries: 0}}
  local: {{type: local}}
  demo: {{type: mock}}
models:
  gpt-test: {{provider: up, model: echo-model}}
  demo: {{provider: demo, model: mock-1}}
  local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}
rag:
  store: {{type: sqlite, path: "{data}/rag.db"}}
  allowed_paths: ["{data}/shared"]
  chunking: {{strategy: recursive, chunk_size: 400, chunk_overlap: 50}}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rag-e2e")
    (root / "shared").mkdir()
    (root / "shared" / "facts.txt").write_text(TEXT)
    (root / "private.txt").write_text("the server's own secret file")
    write_pdf(root / "report.pdf")
    return root


@pytest.fixture(scope="module")
def proxy(openai_upstream: tuple[str, Recorder], data: Path) -> Iterator[RunningProxy]:
    with run_proxy(config(openai_upstream[0], data)) as running:
        yield running


@pytest.fixture(scope="module")
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def handbook(client: openai.OpenAI, data: Path) -> str:
    guide = client.files.create(file=("guide.md", MARKDOWN.encode()), purpose="assistants")
    report = client.files.create(file=(data / "report.pdf").open("rb"), purpose="assistants")
    assert (guide.object, guide.filename, guide.bytes, guide.purpose) == ("file", "guide.md", len(MARKDOWN), "assistants")
    store = client.vector_stores.create(name="handbook", file_ids=[guide.id, report.id])
    assert (store.object, store.name, store.status) == ("vector_store", "handbook", "completed")
    assert store.file_counts.completed == store.file_counts.total == 2 and store.usage_bytes > 0
    return store.id


def test_files_api(client: openai.OpenAI) -> None:
    created = client.files.create(file=("notes.txt", b"plain notes"), purpose="assistants")
    assert client.files.retrieve(created.id).filename == "notes.txt"
    assert created.id in [f.id for f in client.files.list()]
    assert client.files.content(created.id).read() == b"plain notes"
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_upload_over_the_size_limit_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.txt", b"x" * (MAX_BYTES + 1)), purpose="assistants")
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"  # type: ignore[index]


def test_vector_store_crud_and_files(client: openai.OpenAI, handbook: str) -> None:
    assert client.vector_stores.retrieve(handbook).name == "handbook"
    assert handbook in [s.id for s in client.vector_stores.list()]
    files = list(client.vector_stores.files.list(vector_store_id=handbook))
    assert len(files) == 2 and all(f.status == "completed" and f.vector_store_id == handbook for f in files)
    extra = client.files.create(file=("facts.txt", TEXT.encode()), purpose="assistants")
    added = client.vector_stores.files.create(vector_store_id=handbook, file_id=extra.id,
                                              attributes={"team": "geo"})
    assert (added.id, added.status, added.attributes) == (extra.id, "completed", {"team": "geo"})
    assert client.vector_stores.files.retrieve(file_id=extra.id, vector_store_id=handbook).status == "completed"
    assert client.vector_stores.retrieve(handbook).file_counts.completed == 3
    hits = client.vector_stores.search(handbook, query="capital of Australia", filters={
        "type": "eq", "key": "team", "value": "geo"})
    assert [h.filename for h in hits.data] == ["facts.txt"] and hits.data[0].attributes["team"] == "geo"
    client.vector_stores.files.delete(file_id=extra.id, vector_store_id=handbook)
    assert client.vector_stores.retrieve(handbook).file_counts.completed == 2
    image = client.files.create(file=("photo.png", b"\x89PNG\r\n"), purpose="assistants")
    failed = client.vector_stores.files.create(vector_store_id=handbook, file_id=image.id)
    assert failed.status == "failed" and failed.last_error is not None and "unsupported" in failed.last_error.message


def test_vector_store_search(client: openai.OpenAI, handbook: str) -> None:
    page = client.vector_stores.search(handbook, query="Nordwind Shipping quarterly revenue", max_num_results=2)
    results = page.data
    assert 1 <= len(results) <= 2 and results[0].filename == "report.pdf"
    assert results[0].attributes["page"] == 2 and "42 million" in results[0].content[0].text
    assert results[0].content[0].type == "text" and 0 < results[0].score <= 1
    raw = httpx.post(f"{client.base_url}vector_stores/{handbook}/search", json={"query": "refund"}).json()
    assert raw["object"] == "vector_store.search_results.page" and raw["search_query"] == "refund"
    assert raw["has_more"] is False and raw["next_page"] is None
    none = client.vector_stores.search(handbook, query="refund", ranking_options={"score_threshold": 1.01})
    assert none.data == []


def test_chat_with_rag_injects_numbered_sources_and_returns_rag_context(
        client: openai.OpenAI, handbook: str, openai_upstream: tuple[str, Recorder]) -> None:
    completion = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "How many days do I have to ask for a refund?"}],
        extra_body={"rag": {"collection": "handbook", "top_k": 2}})
    context = completion.model_extra["rag_context"]  # type: ignore[index]
    assert len(context) == 2 and set(context[0]) == {"content", "source", "page", "section", "score", "chunk_id"}
    assert context[0]["source"] == "guide.md" and context[0]["section"] == "Refunds"
    assert "30 days" in context[0]["content"]
    sent = [r for r in openai_upstream[1].requests if r.path == "/v1/chat/completions"][-1].body
    assert "rag" not in sent
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "system", "user"]
    injected = sent["messages"][1]["content"]
    assert "[1] (source: guide.md, section: Refunds)" in injected and "[2]" in injected and "cite" in injected
    assert "30 days" in injected


def test_chat_rag_by_vector_store_id_list_and_query(client: openai.OpenAI, handbook: str) -> None:
    completion = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "unrelated words"}],
        extra_body={"rag": {"collection": [handbook], "query": "penguins Antarctic winter", "search": "keyword",
                            "top_k": 1}})
    context = completion.model_extra["rag_context"]  # type: ignore[index]
    assert [(c["source"], c["page"]) for c in context] == [("report.pdf", 3)]


def test_stream_carries_rag_context_on_the_first_chunk(client: openai.OpenAI, handbook: str) -> None:
    stream = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Which port does the service listen on?"}],
        stream=True, extra_body={"rag": {"collection": "handbook", "top_k": 1}})
    chunks = list(stream)
    first = chunks[0].model_extra or {}
    assert first["rag_context"][0]["section"] == "Installation"
    assert all("rag_context" not in (c.model_extra or {}) for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("echo:")


def test_unknown_collection_is_404_before_any_stream(client: openai.OpenAI, proxy: RunningProxy) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], stream=stream,
                                           extra_body={"rag": {"collection": "no-such-collection"}})
        assert caught.value.code == "collection_not_found" and "no-such-collection" in caught.value.message
    response = httpx.get(proxy.v1 + "/vector_stores/vs_missing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "collection_not_found"


@pytest.mark.parametrize(("rag", "param"), [
    ("handbook", "rag"), ({"top_k": 2}, "rag.collection"), ({"collection": "handbook", "top_k": 0}, "rag.top_k"),
    ({"collection": "handbook", "search": "fuzzy"}, "rag.search"),
    ({"collection": "handbook", "rerank": "some-reranker"}, "rag.rerank"),
    ({"collection": "handbook", "rerank": "demo"}, "rag.rerank"),  # a chat model, not `mode: rerank`
    ({"collection": "handbook", "colection": "x"}, "rag.colection"),
])
def test_bad_rag_fields_are_400_naming_the_field(client: openai.OpenAI, rag: object, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"rag": rag})
    assert caught.value.param == param


def test_an_empty_result_still_answers(client: openai.OpenAI) -> None:
    client.vector_stores.create(name="empty")
    completion = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "anything"}],
                                                extra_body={"rag": {"collection": "empty"}})
    assert completion.model_extra["rag_context"] == []  # type: ignore[index]
    assert completion.choices[0].message.content == "You said: anything"
    deleted = client.vector_stores.delete(client.vector_stores.retrieve(
        next(s.id for s in client.vector_stores.list() if s.name == "empty")).id)
    assert deleted.deleted and deleted.object == "vector_store.deleted"


def test_adhoc_sources_only_under_allowed_paths(client: openai.OpenAI, data: Path) -> None:
    completion = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "What is the capital of Australia?"}],
        extra_body={"rag": {"sources": [str(data / "shared")], "top_k": 1}})
    assert "Canberra" in completion.model_extra["rag_context"][0]["content"]  # type: ignore[index]
    for outside in (str(data / "private.txt"), str(data / "shared" / ".." / "private.txt"), "/etc/passwd"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "secret?"}],
                                           extra_body={"rag": {"sources": [outside]}})
        assert caught.value.param == "rag.sources" and "allowed_paths" in caught.value.message


def test_cli_ingest_is_seen_by_the_running_server(client: openai.OpenAI, proxy: RunningProxy, data: Path) -> None:
    config_path = data / "cli.yaml"
    config_path.write_text(Path(proxy.log_path.parent / "models.yaml").read_text())
    (data / "cli-docs").mkdir()
    (data / "cli-docs" / "owls.md").write_text("# Owls\nBarn owls hunt voles at night by sound alone.")
    done = subprocess.run([*omni_llm_command(), "rag", "ingest", "wildlife", str(data / "cli-docs"),
                           "--config", str(config_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    completion = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "How do barn owls find voles?"}],
        extra_body={"rag": {"collection": "wildlife", "top_k": 1}})
    assert completion.model_extra["rag_context"][0]["section"] == "Owls"  # type: ignore[index]
    done = subprocess.run([*omni_llm_command(), "rag", "delete", "wildlife", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "owls"}],
                                       extra_body={"rag": {"collection": "wildlife"}})


def test_the_local_model_serves_v1_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="local-embedding", input=["a kitten naps", "a cat sleeps", "tax law"])
    vectors = [item.embedding for item in result.data]
    assert [len(v) for v in vectors] == [256, 256, 256]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    cosine = [sum(a * b for a, b in zip(vectors[0], v)) for v in vectors[1:]]
    assert cosine[0] > cosine[1]  # meaning, offline
    assert result.usage.prompt_tokens > 0
    short = client.embeddings.create(model="local-embedding", input="x", dimensions=64)
    assert len(short.data[0].embedding) == 64
