"""The seed API (`POST /invoke`, CONTRACT §14): request mapping as a table, then end to end through
`omni-llm serve` — answers, streams, every error code in the seed's shape, the shipped strategies."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.config import load_config, parse_config
from proxy.errors import InvalidRequest
from proxy.ingress.invoke import to_chat_request
from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, run_proxy

ROOT = Path(__file__).resolve().parent.parent
CONFIG = parse_config("""
providers: {demo: {type: mock}, o: {type: openai, api_key: k}}
models: {demo: {provider: demo, model: mock-1}}
strategies: {balanced: [demo]}
""", {})


@pytest.mark.parametrize("seed, expected", [
    ({"prompt": "hi", "model_name": "demo"}, {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}),
    ({"prompt": "hi", "model_provider": "openai", "model_name": "gpt-4o"},
     {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    ({"prompt": "hi", "model_provider": "openai", "model_name": "demo"}, {"model": "demo"}),  # configured: as is
    ({"prompt": "hi", "model_name": "balanced"}, {"model": "balanced"}),  # a strategy: as is
    ({"prompt": "hi", "fallback_strategy": "balanced"}, {"model": "balanced", "fallback_strategy": "balanced"}),
    ({"prompt": "hi", "model_name": "demo", "system_prompt": "be brief", "context": "ctx"},
     {"messages": [{"role": "system", "content": "be brief"}, {"role": "system", "content": "Context:\nctx"},
                   {"role": "user", "content": "hi"}]}),
    ({"prompt": "hi", "model_name": "demo", "context": [{"role": "user", "content": "a"},
                                                        {"role": "assistant", "content": "b"}]},
     {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "hi"}]}),
    ({"prompt": "look", "model_name": "demo", "image_url": "https://example.com/a.png"},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"},
                                                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
    ({"prompt": "hi", "model_name": "demo", "model_config": {
        "temperature": 0.2, "max_tokens": 9, "top_p": 0.9, "top_k": 5, "frequency_penalty": 0.1, "presence_penalty": 0.2,
        "stop_sequences": ["END"], "seed": 7, "stream": True, "response_format": "json"}},
     {"temperature": 0.2, "max_tokens": 9, "top_p": 0.9, "top_k": 5, "frequency_penalty": 0.1, "presence_penalty": 0.2,
      "stop": ["END"], "seed": 7, "stream": True, "response_format": {"type": "json_object"}}),
    ({"prompt": "hi", "model_name": "demo", "structured_output_enabled": True,
      "structured_output_schema": {"name": "string", "tags": ["string"]}},
     {"structured_output": {"format": {"name": "string", "tags": ["string"]}}}),
    ({"prompt": "hi", "model_name": "demo", "structured_output_enabled": True,
      "structured_output_schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
     {"structured_output": {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}),
    ({"prompt": "hi", "model_name": "demo", "structured_output": {"enabled": True, "schema": {"a": "integer"},
                                                                  "method": "pydantic", "max_repairs": 2}},
     {"structured_output": {"enabled": True, "format": {"a": "integer"}, "method": "pydantic", "max_repairs": 2}}),
    ({"prompt": "hi", "model_name": "demo", "structured_output": {"enabled": False, "schema": {"a": "integer"}}},
     {"structured_output": None}),
    ({"prompt": "hi", "model_name": "demo", "rag_enabled": True, "s3_path": "s3://docs/handbook/",
      "vector_store_type": "faiss"}, {"rag": {"sources": ["s3://docs/handbook/"]}}),
    ({"prompt": "hi", "model_name": "demo", "rag_config": {"collection_name": "handbook", "top_k": 3}},
     {"rag": {"collection": "handbook", "top_k": 3}}),
    ({"prompt": "hi", "model_name": "demo", "mcp_config": {"servers": ["files"], "max_iterations": 2, "x": 1}},
     {"mcp": {"servers": ["files"], "max_iterations": 2}}),
])
def test_seed_request_to_chat_request(seed: dict[str, Any], expected: dict[str, Any]) -> None:
    body, _ = to_chat_request(seed, CONFIG)
    for key, value in expected.items():
        assert body.get(key) == value, key


@pytest.mark.parametrize("seed, param", [
    ({"model_name": "demo"}, "prompt"),
    ({"prompt": "  ", "model_name": "demo"}, "prompt"),
    ({"prompt": "hi"}, "model_name"),
    ({"prompt": "hi", "model_name": "demo", "model_config": {"temprature": 1}}, "model_config.temprature"),
    ({"prompt": "hi", "model_name": "demo", "model_config": {"response_format": "xml"}}, "model_config.response_format"),
    ({"prompt": "hi", "model_name": "demo", "model_config": {"response_format": "structured"}}, "structured_output"),
    ({"prompt": "hi", "model_name": "demo", "image_url": "file:///etc/passwd"}, "image_url"),
    ({"prompt": "hi", "model_name": "demo", "context": [{"role": "robot", "content": "x"}]}, "context[0]"),
    ({"prompt": "hi", "model_name": "demo", "structured_output_enabled": True}, "structured_output_schema"),
    ({"prompt": "hi", "model_name": "demo", "rag_enabled": True}, "s3_path"),
    ({"prompt": "hi", "model_name": "demo", "mcp_config": {"tools": ["x"]}}, "mcp_config.servers"),
    ({"prompt": "hi", "model_name": "demo", "output_config": {"max_response_length": 0}},
     "output_config.max_response_length"),
])
def test_bad_seed_requests_name_the_field(seed: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_chat_request(seed, CONFIG)
    assert info.value.param == param


def config_yaml(upstream: str) -> str:
    return f"""
server: {{api_keys: ["seed-key"]}}
providers:
  demo: {{type: mock}}
  up: {{type: openai, api_key: k, base_url: "{upstream}/v1", max_retries: 0}}
models:
  demo: {{provider: demo, model: mock-1, input_cost_per_mtok: 1, output_cost_per_mtok: 2}}
  limited: {{provider: up, model: fail-429}}
  broken: {{provider: up, model: fail-500}}
strategies:
  balanced: [broken, demo]
"""


@pytest.fixture(scope="module")
def proxy(openai_upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    with run_proxy(config_yaml(openai_upstream[0])) as running:
        yield running


def invoke(proxy: RunningProxy, body: dict[str, Any], key: str | None = "seed-key") -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    return httpx.post(proxy.url + "/invoke", json=body, headers=headers, timeout=30)


def test_answer_shape(proxy: RunningProxy) -> None:
    response = invoke(proxy, {"prompt": "hello there", "model_name": "demo", "system_prompt": "be brief"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["success"] is True and answer["error"] is None
    assert "hello there" in answer["response"]["content"]
    assert answer["response"]["role"] == "assistant" and answer["response"]["finish_reason"] == "stop"
    meta = answer["metadata"]
    assert meta["model_used"] == "demo" and meta["provider"] == "demo"
    assert meta["request_id"] == response.headers["x-request-id"]
    assert isinstance(meta["execution_time"], float) and 0 <= meta["execution_time"] < 10  # seconds
    usage = meta["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2) / 1e6)
    assert answer["tool_calls"] == [] and answer["rag_context"] is None


def test_fallback_strategy_and_structured_output(proxy: RunningProxy) -> None:
    response = invoke(proxy, {"prompt": "Ada, London", "model_name": "broken", "fallback_strategy": "balanced",
                              "structured_output_enabled": True,
                              "structured_output_schema": {"name": "string", "city": "string", "kind": "person|place"}})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["metadata"]["model_used"] == "demo"
    parsed = orjson.loads(answer["response"]["content"])
    assert set(parsed) == {"name", "city", "kind"} and parsed["kind"] in ("person", "place")
    assert answer["response"]["parsed"] == parsed


def test_output_config(proxy: RunningProxy) -> None:
    answer = invoke(proxy, {"prompt": "a long enough prompt to answer", "model_name": "demo",
                            "output_config": {"max_response_length": 12, "include_metadata": False}}).json()
    assert len(answer["response"]["content"]) == 12 and "metadata" not in answer


def test_stream_is_the_chat_completions_sse(proxy: RunningProxy) -> None:
    with httpx.stream("POST", proxy.url + "/invoke", headers={"x-api-key": "seed-key"}, timeout=30,
                      json={"prompt": "stream me", "model_name": "demo", "model_config": {"stream": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [orjson.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert "stream me" in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


@pytest.mark.parametrize("body, key, status, code", [
    ({"prompt": "hi", "model_name": "demo"}, None, 401, "UNAUTHORIZED"),
    ({"prompt": "hi", "model_name": "demo"}, "wrong", 401, "UNAUTHORIZED"),
    ({"model_name": "demo"}, "seed-key", 400, "INVALID_REQUEST"),
    ({"prompt": "hi", "model_name": "nope"}, "seed-key", 404, "INVALID_MODEL"),
    ({"prompt": "hi", "model_provider": "nosuch", "model_name": "x"}, "seed-key", 404, "INVALID_MODEL"),
    ({"prompt": "hi", "model_name": "limited"}, "seed-key", 429, "RATE_LIMIT"),
    ({"prompt": "hi", "model_name": "broken"}, "seed-key", 502, "UPSTREAM_ERROR"),
    ({"prompt": "hi", "model_name": "demo", "fallback_strategy": "nope"}, "seed-key", 400, "INVALID_REQUEST"),
])
def test_errors_in_the_seed_shape(proxy: RunningProxy, body: dict[str, Any], key: str | None, status: int,
                                  code: str) -> None:
    response = invoke(proxy, body, key)
    assert response.status_code == status
    answer = response.json()
    assert answer["success"] is False and answer["error"]["code"] == code
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    assert set(answer["error"]["details"]) >= {"provider", "model", "retry_after"}
    assert answer["metadata"]["request_id"] == response.headers["x-request-id"]
    assert answer["metadata"]["timestamp"].startswith("20")
    if status == 429:
        assert response.headers["retry-after"] and answer["error"]["details"]["retry_after"] is not None


def test_malformed_json_is_a_seed_error(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.url + "/invoke", content=b"{not json", headers={"x-api-key": "seed-key"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"


def test_the_seed_strategies_are_shipped_and_skip_providers_not_ready() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_PROJECT_ID"))}
    config = load_config(ROOT / "models.yaml", env)
    for name in ("performance_optimized", "cost_optimized", "quality_optimized", "balanced"):
        assert name in config.strategies and config.strategies[name][-1] == "demo"
    no_keys = {name: "" for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY",
                                     "COHERE_API_KEY", "GROQ_API_KEY", "GOOGLE_PROJECT_ID", "OMNI_LLM_API_KEY",
                                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    no_keys.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
                   AWS_EC2_METADATA_DISABLED="true")
    with run_proxy((ROOT / "models.yaml").read_text(), env=no_keys) as proxy:
        for name in ("performance_optimized", "cost_optimized", "quality_optimized", "balanced"):
            response = httpx.post(proxy.url + "/invoke", json={"prompt": "hi", "fallback_strategy": name}, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["metadata"]["model_used"] == "demo"
