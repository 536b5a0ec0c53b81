"""Rerank without a server: request parsing, chains, result shaping, the translators' pure mappings, spans."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from proxy.config import ConfigError, parse_config
from proxy.errors import InvalidRequest, UpstreamError
from proxy.rerank import MAX_DOCUMENTS, RerankRequest, parse_rerank, rerank_chain, to_rerank_response
from translators.bedrock.rerank import bedrock_rerank_model_arn, from_bedrock_rerank_response, to_bedrock_rerank_request
from translators.cohere.rerank import from_cohere_rerank_response, to_cohere_rerank_request

CONFIG = """
providers:
  demo: {type: mock}
  co: {type: cohere, api_key: k}
models:
  demo: {provider: demo}
  demo-rerank: {provider: demo, model: mock-rerank-1, mode: rerank}
  co-rerank: {provider: co, model: rerank-v3.5, mode: rerank}
strategies:
  rerankers: [co-rerank, demo-rerank]
"""


def request(**overrides: Any) -> RerankRequest:
    fields: dict[str, Any] = {"model": "m", "query": "q", "documents": ("a", "b", "c"), "top_n": 3,
                              "return_documents": False, **overrides}
    return RerankRequest(**fields)


def test_parse_accepts_strings_and_objects_and_clamps_top_n() -> None:
    parsed = parse_rerank({"model": "m", "query": "q", "documents": ["a", {"text": "b", "id": 1}], "top_n": 9})
    assert parsed == RerankRequest("m", "q", ("a", "b"), 2, False)
    assert parse_rerank({"model": "m", "query": "q", "documents": ["a"], "return_documents": None}).top_n == 1
    assert len(parse_rerank({"model": "m", "query": "q", "documents": ["x"] * MAX_DOCUMENTS}).documents) == 1000


@pytest.mark.parametrize(("body", "param"), [
    ({"query": "q", "documents": ["a"]}, "model"),
    ({"model": "m", "query": "", "documents": ["a"]}, "query"),
    ({"model": "m", "query": "q", "documents": {}}, "documents"),
    ({"model": "m", "query": "q", "documents": ["x"] * (MAX_DOCUMENTS + 1)}, "documents"),
    ({"model": "m", "query": "q", "documents": [None]}, "documents[0]"),
    ({"model": "m", "query": "q", "documents": ["a", {"text": 3}]}, "documents[1].text"),
    ({"model": "m", "query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
    ({"model": "m", "query": "q", "documents": ["a"], "top_n": 1.5}, "top_n"),
    ({"model": "m", "query": "q", "documents": ["a"], "return_documents": 1}, "return_documents"),
    ({"model": "m", "query": "q", "documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
])
def test_parse_names_the_bad_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_rerank(body)
    assert caught.value.param == param and caught.value.status == 400


def test_chains_of_rerank_models_only() -> None:
    config = parse_config(CONFIG, {})
    assert [name for name, _ in rerank_chain(config, {"model": "rerankers"})] == ["co-rerank", "demo-rerank"]
    adhoc = rerank_chain(config, {"model": "co/rerank-english-v3.0"})
    assert adhoc[0][1][0].mode == "rerank" and adhoc[0][1][0].model == "rerank-english-v3.0"
    with pytest.raises(InvalidRequest) as caught:
        rerank_chain(config, {"model": "demo"})
    assert caught.value.param == "model" and "chat model" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        rerank_chain(config, {"model": "nope"}, "rag.rerank")
    assert (caught.value.status, caught.value.param) == (400, "rag.rerank")


def test_config_rejects_rerank_on_providers_without_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("providers: {m: {type: mistral, api_key: k}}\nmodels: {r: {provider: m, model: x, mode: rerank}}",
                     {})
    assert caught.value.problems == [
        "models.r.mode: provider type 'mistral' cannot serve rerank models (rerank works with: mock, bedrock, cohere)"]


def test_results_are_sorted_cut_and_decorated() -> None:
    answer = {"results": [{"index": 2, "relevance_score": 0.1}, {"index": 0, "relevance_score": 0.7},
                          {"index": 1, "relevance_score": 0.7}]}
    shaped = to_rerank_response(answer, request(top_n=2, return_documents=True), "pub", "req1")
    assert shaped["results"] == [{"index": 0, "relevance_score": 0.7, "document": {"text": "a"}},
                                 {"index": 1, "relevance_score": 0.7, "document": {"text": "b"}}]
    assert shaped["id"] == "rerank-req1" and shaped["model"] == "pub"
    assert shaped["usage"] == {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4, "search_units": 1}
    vendor = to_rerank_response({**answer, "meta": {"tokens": {"input_tokens": 99}}}, request(), "pub", "r")
    assert vendor["usage"]["prompt_tokens"] == 99  # the vendor's count wins over the offline one


@pytest.mark.parametrize("results", [
    None, [{"index": 3, "relevance_score": 0.5}], [{"index": 0, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.4}],
    [{"index": "0", "relevance_score": 0.5}], [{"index": 0, "relevance_score": None}], [{"index": True, "relevance_score": 1}],
])
def test_malformed_upstream_results_are_502(results: Any) -> None:
    with pytest.raises(UpstreamError):
        to_rerank_response({"results": results}, request(), "m", "r")


def test_cohere_mapping() -> None:
    kwargs = to_cohere_rerank_request({"query": "q", "documents": ["a", "b"], "top_n": 1}, "rerank-v3.5")
    assert kwargs == {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"], "top_n": 1}
    body = {"id": "x", "results": [{"index": 1, "relevance_score": 0.5, "relevant_spans": []}],
            "meta": {"billed_units": {"search_units": 1}}}
    assert from_cohere_rerank_response(body) == {"id": "x", "results": [{"index": 1, "relevance_score": 0.5}],
                                                 "meta": {"billed_units": {"search_units": 1}}}


def test_bedrock_mapping() -> None:
    assert bedrock_rerank_model_arn("amazon.rerank-v1:0", "us-west-2") == \
        "arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0"
    assert bedrock_rerank_model_arn("cohere.rerank-v3-5:0", "cn-north-1").startswith("arn:aws-cn:bedrock:cn-north-1::")
    assert bedrock_rerank_model_arn("arn:aws:bedrock:x::foundation-model/y", "us-east-1") == \
        "arn:aws:bedrock:x::foundation-model/y"
    params = to_bedrock_rerank_request({"query": "q", "documents": ["a"], "top_n": 1, "max_tokens_per_doc": 9},
                                       "cohere.rerank-v3-5:0", "us-west-2")
    settings = params["rerankingConfiguration"]["bedrockRerankingConfiguration"]
    assert settings["modelConfiguration"]["additionalModelRequestFields"] == {"max_tokens_per_doc": 9}
    amazon = to_bedrock_rerank_request({"query": "q", "documents": ["a"], "max_tokens_per_doc": 9},
                                       "amazon.rerank-v1:0", "us-west-2")
    assert amazon["rerankingConfiguration"]["bedrockRerankingConfiguration"] == {
        "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0"}}
    with pytest.raises(InvalidRequest) as caught:
        to_bedrock_rerank_request({"query": "q", "documents": ["a", ""]}, "amazon.rerank-v1:0", "us-west-2")
    assert caught.value.param == "documents[1]"
    pages = [{"results": [{"index": 1, "relevanceScore": 0.9}], "nextToken": "t"},
             {"results": [{"index": 0, "relevanceScore": 0.1, "document": {"type": "TEXT"}}]}]
    assert from_bedrock_rerank_response(pages) == {"results": [{"index": 1, "relevance_score": 0.9},
                                                               {"index": 0, "relevance_score": 0.1}]}


async def test_rerank_spans(tmp_path: Any) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the `otel` extra is not installed")
    pytest.importorskip("numpy", reason="the `rag` extra is not installed")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from proxy.app import create_app
    from proxy.otel import Tracing

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "facts.txt").write_text("The lighthouse keeper's cat is called Biscuit.")
    yaml = CONFIG.replace("strategies:\n  rerankers: [co-rerank, demo-rerank]\n", "") + f"""\
  local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}
rag: {{store: {{type: sqlite, path: "{tmp_path}/rag.db"}}, allowed_paths: ["{tmp_path}/docs"]}}
"""
    yaml = yaml.replace("  demo: {type: mock}\n", "  demo: {type: mock}\n  local: {type: local}\n", 1)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(parse_config(yaml, dict(os.environ)), tracing=Tracing(provider, {}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "demo", "messages": [{"role": "user", "content": "What is the cat called?"}],
            "rag": {"sources": [f"{tmp_path}/docs/facts.txt"], "rerank": "demo-rerank"}})
        assert response.status_code == 200, response.text
        spans = {s.name: s for s in exporter.get_finished_spans()}
        step = spans["rerank demo-rerank"]
        assert step.parent.span_id == spans["chat demo"].context.span_id  # type: ignore[union-attr]
        assert step.attributes["gen_ai.operation.name"] == "rerank" and step.attributes["omni_llm.rag.candidates"] == 1
        assert spans["rerank mock-rerank-1"].parent.span_id == step.context.span_id  # type: ignore[union-attr]
        exporter.clear()
        response = await client.post("/v1/rerank", json={"model": "demo-rerank", "query": "cat", "documents": ["a cat"]})
        assert response.status_code == 200, response.text
        spans = {s.name: s for s in exporter.get_finished_spans()}
        assert spans["rerank demo-rerank"].attributes["gen_ai.operation.name"] == "rerank"
        assert spans["rerank mock-rerank-1"].parent.span_id == spans["rerank demo-rerank"].context.span_id  # type: ignore[union-attr]
    gateway = app.state.gateway
    await gateway.pool.aclose()
    await gateway.rag.aclose()
