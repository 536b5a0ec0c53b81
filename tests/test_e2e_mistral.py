"""End to end: the real `omni-llm serve` with a `mistral` provider, the openai client and raw SSE, the fake Mistral."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from tests.fakes import mistral as fake_mistral
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, collect_tool_calls, run_proxy

UPSTREAM_KEY = "mistral-upstream-secret-0123456789"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_mistral.make_app(recorder)) as url:
        yield url, recorder


@pytest.fixture(scope="module")
def proxy(upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    config = f"""
server: {{api_keys: []}}
providers:
  mistral: {{type: mistral, api_key: "{UPSTREAM_KEY}", base_url: "{upstream[0]}", max_retries: 0,
             headers: {{x-team: blue}}}}
models:
  mistral-large: {{provider: mistral, model: mistral-large-latest}}
  tools: {{provider: mistral, model: tools}}
  replay: {{provider: mistral, model: replay}}
  limited: {{provider: mistral, model: fail-429}}
  invalid: {{provider: mistral, model: fail-422}}
  denied: {{provider: mistral, model: fail-401}}
  broken: {{provider: mistral, model: fail-500}}
  midstream: {{provider: mistral, model: midstream-error}}
  embed: {{provider: mistral, model: mistral-embed, mode: embedding}}
  broken-embed: {{provider: mistral, model: no-id, mode: embedding}}
"""
    with run_proxy(config) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


def test_chat_maps_seed_and_drops_unsupported(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mistral-large", messages=[{"role": "user", "content": "hi"}], seed=9, user="u1",
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}})
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi" and completion.model == "mistral-large"
    assert completion.usage.total_tokens == 17
    assert raw.headers["x-omni-dropped-params"] == "user"
    sent = upstream[1].last()
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" and sent.headers["x-team"] == "blue"
    assert sent.body["random_seed"] == 9 and "seed" not in sent.body and "user" not in sent.body
    assert sent.body["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_history_from_another_vendor_replays_with_consistent_ids(client: openai.OpenAI) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_openai_style_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_openai_style_1", "content": "21C"},
    ]
    completion = client.chat.completions.create(model="replay", messages=messages, tools=TOOLS)
    # the fake rejects ids that are not 9 alphanumerics and echoes the id it got: the client sees its own
    assert completion.choices[0].message.tool_calls[0].id == "call_openai_style_1"


def test_stream_parallel_tool_calls(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    chunks = list(client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "x"}], tools=TOOLS, tool_choice="required", stream=True,
        stream_options={"include_usage": True}))
    calls = collect_tool_calls(chunks)
    assert [(calls[i]["id"], calls[i]["name"], orjson.loads(calls[i]["args"])) for i in sorted(calls)] == [
        ("Wx1Ab2Cd3", "get_weather", {"city": "Paris"}), ("Tm4Ef5Gh6", "get_time", {"tz": "CET"})]
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 17
    assert upstream[1].last().body["tool_choice"] == "any"


def test_stream_raw_sse_invariants(proxy: RunningProxy) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "mistral-large", "stream": True, "messages": [{"role": "user", "content": "a b"}]}) as response:
        raw = b"".join(response.iter_raw())
    events = [e[len(b"data: "):] for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks].count("stop") == 1
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: a b"


def test_image_parts_pass_as_urls(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    client.chat.completions.create(model="mistral-large", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]}])
    parts = upstream[1].last().body["messages"][0]["content"]
    assert [p["image_url"]["url"] for p in parts[1:]] == ["https://example.com/a.png", "data:image/png;base64,iVBORw0K"]


@pytest.mark.parametrize(
    ("model", "status", "etype"),
    [("limited", 429, "rate_limit_error"), ("invalid", 422, "invalid_request_error"),
     ("denied", 502, "upstream_error"), ("broken", 502, "upstream_error")],
)
def test_upstream_errors(proxy: RunningProxy, model: str, status: int, etype: str) -> None:
    for stream in (False, True):
        response = httpx.post(proxy.v1 + "/chat/completions", json={
            "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == status, response.text
        assert response.json()["error"]["type"] == etype
        if status == 429:
            assert response.headers["retry-after"] == "0"
        assert UPSTREAM_KEY not in response.text


def test_error_after_first_byte_is_an_error_event(proxy: RunningProxy) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "midstream", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_raw())
    events = [orjson.loads(e[len(b"data: "):]) for e in raw.split(b"\n\n") if e]
    assert b"[DONE]" not in raw
    assert events[1]["choices"][0]["delta"]["content"] == "echo:"
    assert "scripted mid-stream failure" in events[-1]["error"]["message"]


def test_embeddings(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    result = client.embeddings.create(model="embed", input=["a", "b"], dimensions=2)  # base64, encoded by the gateway
    assert [d.embedding for d in result.data] == [[0.5, 0.125], [1.5, 0.125]]
    assert result.model == "embed" and result.usage.total_tokens == 4
    assert upstream[1].last().body == {"model": "mistral-embed", "input": ["a", "b"], "output_dimension": 2}


def test_embedding_response_without_id_is_502(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/embeddings", json={"model": "broken-embed", "input": "x"})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
