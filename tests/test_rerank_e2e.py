"""Rerank end to end (CONTRACT §10): the real `omni-llm serve`, raw HTTP and the official cohere SDK on
`/v1/rerank` (and `/v2/rerank`), the mock, Cohere (real cohere SDK) and Bedrock (real boto3) against
their fakes, and `rag.rerank` reordering what the search found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import bedrock as fake_bedrock
from tests.fakes import cohere as fake_cohere
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, run_proxy

DOCUMENTS = ["Berlin is the capital of Germany.", "Paris is the capital of France.", "capital letters",
             "The Eiffel tower is in Paris, France."]
QUERY = "Paris France capital"


def config(cohere_url: str, bedrock_url: str, data: Path) -> str:
    aws = f'type: bedrock, region: eu-west-3, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret-0123456789, base_url: "{bedrock_url}"'
    return f"""
server: {{api_keys: []}}
providers:
  demo: {{type: mock}}
  co: {{type: cohere, api_key: co-secret-0123456789, base_url: "{cohere_url}", max_retries: 0}}
  aws: {{{aws}, max_retries: 0}}
  local: {{type: local}}
models:
  demo: {{provider: demo, model: mock-1}}
  demo-rerank: {{provider: demo, model: mock-rerank-1, mode: rerank}}
  co-rerank: {{provider: co, model: rerank-v3.5, mode: rerank, input_cost_per_mtok: 1000}}
  co-rerank-limited: {{provider: co, model: fail-429, mode: rerank}}
  co-rerank-bad: {{provider: co, model: fail-400, mode: rerank}}
  co-rerank-broken: {{provider: co, model: fail-500, mode: rerank}}
  co-rerank-garbage: {{provider: co, model: garbage, mode: rerank}}
  aws-rerank: {{provider: aws, model: "cohere.rerank-v3-5:0", mode: rerank}}
  aws-rerank-paged: {{provider: aws, model: "amazon.rerank-paged-v1:0", mode: rerank}}
  aws-rerank-denied: {{provider: aws, model: fail-403, mode: rerank}}
  local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}
strategies:
  sturdy-rerank: [co-rerank-broken, demo-rerank]
rag:
  store: {{type: sqlite, path: "{data}/rag.db"}}
  chunking: {{strategy: recursive, chunk_size: 400, chunk_overlap: 0}}
"""


@pytest.fixture(scope="module")
def cohere_upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_cohere.make_app(recorder)) as url:
        yield url, recorder


@pytest.fixture(scope="module")
def bedrock_upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_bedrock.make_app(recorder)) as url:
        yield url, recorder


@pytest.fixture(scope="module")
def proxy(cohere_upstream: tuple[str, Recorder], bedrock_upstream: tuple[str, Recorder],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    data = tmp_path_factory.mktemp("rerank-e2e")
    with run_proxy(config(cohere_upstream[0], bedrock_upstream[0], data)) as running:
        yield running


def rerank(proxy: RunningProxy, body: dict[str, Any], path: str = "/v1/rerank") -> httpx.Response:
    return httpx.post(proxy.url + path, json=body, timeout=30)


def test_mock_reranks_by_shared_words(proxy: RunningProxy) -> None:
    response = rerank(proxy, {"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": 3})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [r["index"] for r in answer["results"]] == [1, 3, 0]  # all 3 words; 2 of 3; 1 of 3 (first of a tie)
    assert [r["relevance_score"] for r in answer["results"]] == [1.0, 0.666667, 0.333333]
    assert all(set(r) == {"index", "relevance_score"} for r in answer["results"])
    assert answer["model"] == "demo-rerank" and answer["id"]
    assert answer["meta"]["billed_units"]["search_units"] == 1
    assert answer["usage"]["prompt_tokens"] > 0 and answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"]
    assert response.headers["x-omni-provider"] == "demo" and response.headers["x-omni-upstream-model"] == "mock-rerank-1"


def test_documents_as_objects_top_n_and_return_documents(proxy: RunningProxy) -> None:
    documents = [{"text": d, "id": f"doc-{i}"} for i, d in enumerate(DOCUMENTS)]
    for path in ("/v1/rerank", "/rerank"):
        answer = rerank(proxy, {"model": "demo-rerank", "query": QUERY, "documents": documents, "top_n": 2,
                                "return_documents": True}, path).json()
        assert [(r["index"], r["document"]) for r in answer["results"]] == [(1, {"text": DOCUMENTS[1]}),
                                                                            (3, {"text": DOCUMENTS[3]})]
    everything = rerank(proxy, {"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": 50}).json()
    assert sorted(r["index"] for r in everything["results"]) == [0, 1, 2, 3]  # top_n over the count: all of them
    scores = [r["relevance_score"] for r in everything["results"]]
    assert scores == sorted(scores, reverse=True)


TOO_MANY = ["d"] * 1001


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"query": QUERY, "documents": DOCUMENTS}, 400, "model", None),
    ({"model": "demo-rerank", "documents": DOCUMENTS}, 400, "query", None),
    ({"model": "demo-rerank", "query": "   ", "documents": DOCUMENTS}, 400, "query", None),
    ({"model": "demo-rerank", "query": 7, "documents": DOCUMENTS}, 400, "query", None),
    ({"model": "demo-rerank", "query": QUERY}, 400, "documents", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": []}, 400, "documents", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": "one text"}, 400, "documents", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": TOO_MANY}, 400, "documents", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": ["a", 5]}, 400, "documents[1]", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": [{"title": "a"}]}, 400, "documents[0].text", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": 0}, 400, "top_n", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": "2"}, 400, "top_n", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": True}, 400, "top_n", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "return_documents": "yes"}, 400,
     "return_documents", None),
    ({"model": "no-such-reranker", "query": QUERY, "documents": DOCUMENTS}, 404, "model", "model_not_found"),
    ({"model": "demo", "query": QUERY, "documents": DOCUMENTS}, 400, "model", None),
    ({"model": "local-embedding", "query": QUERY, "documents": DOCUMENTS}, 400, "model", None),
    ({"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "fallbacks": ["demo"]}, 400, "fallbacks[0]",
     None),
    ({"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS, "fallbacks": ["nope"]}, 404, "model",
     "model_not_found"),
    ({"model": "co-rerank-bad", "query": QUERY, "documents": DOCUMENTS}, 400, None, None),  # upstream 400 passes
])
def test_errors_in_the_openai_shape(proxy: RunningProxy, body: dict[str, Any], status: int, param: str | None,
                                    code: str | None) -> None:
    response = rerank(proxy, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == "invalid_request_error"


def test_malformed_json_and_wrong_method(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/rerank", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(proxy.v1 + "/rerank").status_code == 405


def test_cohere_through_the_sdk(proxy: RunningProxy, cohere_upstream: tuple[str, Recorder]) -> None:
    response = rerank(proxy, {"model": "co-rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": 2,
                              "return_documents": True, "max_tokens_per_doc": 512})
    assert response.status_code == 200, response.text
    sent = cohere_upstream[1].last()
    assert sent.path == "/v2/rerank"
    assert sent.body == {"model": "rerank-v3.5", "query": QUERY, "documents": DOCUMENTS, "top_n": 2,
                         "max_tokens_per_doc": 512}
    assert sent.headers["authorization"] == "Bearer co-secret-0123456789"
    answer = response.json()
    assert answer["id"] == "rr-1" and answer["meta"]["api_version"] == {"version": "2"}
    assert [(r["index"], r["relevance_score"], r["document"]["text"]) for r in answer["results"]] == [
        (1, 0.9, DOCUMENTS[1]), (3, 0.6, DOCUMENTS[3])]
    cost = float(response.headers["x-omni-cost-usd"])  # 1000 USD per 1M tokens: the offline token count
    assert cost == pytest.approx(answer["usage"]["prompt_tokens"] * 1000 / 1e6)
    assert "co-secret" not in response.text


@pytest.mark.parametrize(("model", "status", "code"), [
    ("co-rerank-limited", 429, "rate_limit_exceeded"), ("co-rerank-broken", 502, "upstream_error"),
    ("co-rerank-garbage", 502, "upstream_error"), ("aws-rerank-denied", 502, "upstream_error"),
])
def test_upstream_failures(proxy: RunningProxy, model: str, status: int, code: str) -> None:
    response = rerank(proxy, {"model": model, "query": QUERY, "documents": DOCUMENTS})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_bedrock_agent_runtime_rerank(proxy: RunningProxy, bedrock_upstream: tuple[str, Recorder]) -> None:
    response = rerank(proxy, {"model": "aws-rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": 3})
    assert response.status_code == 200, response.text
    sent = bedrock_upstream[1].last()
    assert sent.path == "/rerank"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-3/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.body == {
        "queries": [{"type": "TEXT", "textQuery": {"text": QUERY}}],
        "sources": [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}}}
                    for d in DOCUMENTS],
        "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
            "modelConfiguration": {"modelArn": "arn:aws:bedrock:eu-west-3::foundation-model/cohere.rerank-v3-5:0"},
            "numberOfResults": 3}},
    }
    answer = response.json()
    assert [(r["index"], r["relevance_score"]) for r in answer["results"]] == [(1, 0.8), (3, 0.533333), (0, 0.266667)]
    assert answer["usage"]["search_units"] == 1 and answer["usage"]["prompt_tokens"] > 0


def test_bedrock_pages_are_followed(proxy: RunningProxy, bedrock_upstream: tuple[str, Recorder]) -> None:
    before = len(bedrock_upstream[1].requests)
    response = rerank(proxy, {"model": "aws-rerank-paged", "query": QUERY, "documents": DOCUMENTS})
    assert response.status_code == 200, response.text
    pages = bedrock_upstream[1].requests[before:]
    assert [p.body.get("nextToken") for p in pages] == [None, "2"]
    assert [r["index"] for r in response.json()["results"]] == [1, 3, 0, 2]


def test_a_rerank_strategy_falls_back(proxy: RunningProxy) -> None:
    for body in ({"model": "sturdy-rerank"}, {"model": "co-rerank-broken", "fallbacks": ["demo-rerank"]}):
        response = rerank(proxy, {**body, "query": QUERY, "documents": DOCUMENTS, "top_n": 1})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "demo-rerank" and response.json()["results"][0]["index"] == 1
        assert response.headers["x-omni-attempts"].startswith("co-rerank-broken=co/fail-500:502, demo-rerank=demo/mock-rerank-1:200")


def test_provider_slash_model_is_a_rerank_model(proxy: RunningProxy, cohere_upstream: tuple[str, Recorder]) -> None:
    response = rerank(proxy, {"model": "co/rerank-english-v3.0", "query": QUERY, "documents": DOCUMENTS})
    assert response.status_code == 200, response.text
    assert cohere_upstream[1].last().body["model"] == "rerank-english-v3.0"


def test_the_cohere_sdk_can_use_the_gateway(proxy: RunningProxy) -> None:
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=proxy.url)  # the SDK posts to {base_url}/v2/rerank
    answer = client.rerank(model="demo-rerank", query=QUERY, documents=DOCUMENTS, top_n=2)
    assert [(r.index, r.relevance_score) for r in answer.results] == [(1, 1.0), (3, 0.666667)]
    with pytest.raises(cohere.BadRequestError) as caught:
        client.rerank(model="demo", query=QUERY, documents=DOCUMENTS)
    assert caught.value.body["error"]["param"] == "model"


def test_metrics_count_rerank_requests(proxy: RunningProxy) -> None:
    rerank(proxy, {"model": "demo-rerank", "query": QUERY, "documents": DOCUMENTS})
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'omni_requests_total{model="demo-rerank",provider="demo",route="rerank",status="200"}' in metrics


# -- rag.rerank -------------------------------------------------------------------------------------------

# Keyword search (BM25 over Porter stems) ranks STEMS first: it repeats both query words' stems in a short
# chunk. The mock reranker counts exact words, and only EXACT has "penguins" and "huddle" as written.
STEMS = "Penguin huddling: a penguin huddles, the penguin huddled."
EXACT = ("On the sea ice the emperor penguins huddle for warmth through the long dark months of the polar year, "
         "taking turns at the windy edge of the group while the storms pass over the colony.")
OTHER = "Seals rest on the beach in summer."
RAG_QUERY = "penguins huddle"


@pytest.fixture(scope="module")
def colony(proxy: RunningProxy) -> str:
    client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
    ids = [client.files.create(file=(name, text.encode()), purpose="assistants").id
           for name, text in (("stems.txt", STEMS), ("exact.txt", EXACT), ("other.txt", OTHER))]
    client.vector_stores.create(name="colony", file_ids=ids)
    return "colony"


def chat(proxy: RunningProxy, rag: dict[str, Any], stream: bool = False) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", timeout=60, json={
        "model": "demo", "stream": stream, "messages": [{"role": "user", "content": RAG_QUERY}], "rag": rag})


def test_rag_rerank_reorders_the_retrieved_chunks(proxy: RunningProxy, colony: str) -> None:
    plain = chat(proxy, {"collection": colony, "search": "keyword", "top_k": 2}).json()["rag_context"]
    assert [c["source"] for c in plain] == ["stems.txt", "exact.txt"]  # BM25's order
    reranked = chat(proxy, {"collection": colony, "search": "keyword", "top_k": 2, "rerank": "demo-rerank"}).json()
    context = reranked["rag_context"]
    assert [c["source"] for c in context] == ["exact.txt", "stems.txt"]
    assert [c["score"] for c in context] == [1.0, 0.0]  # the reranker's relevance, not the search score
    expected = rerank(proxy, {"model": "demo-rerank", "query": RAG_QUERY, "documents": [STEMS, EXACT]}).json()
    assert [r["relevance_score"] for r in expected["results"]] == [1.0, 0.0]
    top = chat(proxy, {"collection": colony, "top_k": 1, "rerank": "demo-rerank"}).json()["rag_context"]
    assert [c["source"] for c in top] == ["exact.txt"]  # hybrid search too; top_k kept after reranking


def test_rag_rerank_threshold_applies_to_rerank_scores(proxy: RunningProxy, colony: str) -> None:
    response = chat(proxy, {"collection": colony, "top_k": 3, "rerank": "co-rerank", "score_threshold": 0.5})
    context = response.json()["rag_context"]
    assert [(c["source"], c["score"]) for c in context] == [("exact.txt", 0.9)]
    logged = proxy.access_entry(response.headers["x-request-id"])  # the rerank's tokens and spend, beside the chat's
    assert logged["model"] == "demo" and logged["rag_rerank_model"] == "co-rerank"
    assert logged["rag_rerank_tokens"] > 0
    assert logged["rag_rerank_cost_usd"] == pytest.approx(logged["rag_rerank_tokens"] * 1000 / 1e6)


def test_rag_rerank_in_a_stream(proxy: RunningProxy, colony: str) -> None:
    response = chat(proxy, {"collection": colony, "search": "keyword", "top_k": 1, "rerank": "demo-rerank"}, True)
    first = next(line for line in response.text.splitlines() if line.startswith("data: {"))
    assert '"rag_context":[{"content":"On the sea ice' in first


def test_invoke_rag_config_reranks(proxy: RunningProxy, colony: str) -> None:
    response = httpx.post(proxy.url + "/invoke", timeout=60, json={
        "prompt": RAG_QUERY, "model_name": "demo",
        "rag_config": {"collection": colony, "search": "keyword", "top_k": 2, "rerank": "demo-rerank"}})
    assert response.status_code == 200, response.text
    assert [c["source"] for c in response.json()["rag_context"]] == ["exact.txt", "stems.txt"]


@pytest.mark.parametrize(("rerank_model", "message"), [
    ("no-such-reranker", "does not exist"), ("demo", "not a `mode: rerank` model"), (5, "rag.rerank must be"),
    ("", "rag.rerank must be"),
])
def test_rag_rerank_must_name_a_rerank_model(proxy: RunningProxy, colony: str, rerank_model: Any,
                                             message: str) -> None:
    response = chat(proxy, {"collection": colony, "rerank": rerank_model})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "rag.rerank" and message in error["message"]


def test_rag_rerank_failure_fails_the_request_unless_a_fallback_serves(proxy: RunningProxy, colony: str) -> None:
    for stream in (False, True):
        failed = chat(proxy, {"collection": colony, "rerank": "co-rerank-broken"}, stream)
        assert failed.status_code == 502, failed.text
        error = failed.json()["error"]
        assert error["code"] == "upstream_error" and "rag.rerank with 'co-rerank-broken' failed" in error["message"]
    limited = chat(proxy, {"collection": colony, "rerank": "co-rerank-limited"})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    served = chat(proxy, {"collection": colony, "search": "keyword", "top_k": 1, "rerank": "sturdy-rerank"})
    assert served.status_code == 200 and served.json()["rag_context"][0]["source"] == "exact.txt"


# -- virtual keys: the model allow-list, spend and the usage log ------------------------------------------

MASTER = "master-key-0123456789"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    data = tmp_path_factory.mktemp("rerank-keys")
    with run_proxy(f"""
server: {{api_keys: ["{MASTER}"]}}
providers: {{demo: {{type: mock}}}}
models:
  demo: {{provider: demo, model: mock-1}}
  demo-rerank: {{provider: demo, model: mock-rerank-1, mode: rerank, input_cost_per_mtok: 1000}}
  other-rerank: {{provider: demo, model: mock-rerank-2, mode: rerank}}
state: {{database: "sqlite:///{data}/state.db"}}
""") as running:
        yield running


def test_keys_gate_rerank(keyed: RunningProxy) -> None:
    master = {"authorization": f"Bearer {MASTER}"}
    created = httpx.post(keyed.url + "/admin/keys", headers=master, json={"name": "t", "models": ["demo", "demo-rerank"]})
    assert created.status_code == 200, created.text
    key = {"authorization": f"Bearer {created.json()['key']}"}
    body = {"query": QUERY, "documents": DOCUMENTS}
    assert httpx.post(keyed.v1 + "/rerank", json={"model": "demo-rerank", **body}).status_code == 401
    allowed = httpx.post(keyed.v1 + "/rerank", headers=key, json={"model": "demo-rerank", **body})
    assert allowed.status_code == 200, allowed.text
    denied = httpx.post(keyed.v1 + "/rerank", headers=key, json={"model": "other-rerank", **body})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    via_rag = httpx.post(keyed.v1 + "/chat/completions", headers=key, json={
        "model": "demo", "messages": [{"role": "user", "content": "hi"}],
        "rag": {"collection": "any", "rerank": "other-rerank"}})
    assert via_rag.status_code == 403 and via_rag.json()["error"]["param"] == "rag.rerank"
    tokens = allowed.json()["usage"]["prompt_tokens"]
    usage = httpx.get(keyed.url + "/admin/usage", headers=master, params={"key": created.json()["id"]})
    rows = {(row["model"], row["status"]): row for row in usage.json()["data"]}
    row = rows[("demo-rerank", 200)]
    assert row["route"] == "rerank" and row["prompt_tokens"] == tokens
    assert row["cost_usd"] == pytest.approx(tokens * 1000 / 1e6)
    assert ("other-rerank", 403) in rows
