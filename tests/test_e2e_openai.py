"""End to end: the real `omni-llm serve`, the official openai client and raw SSE, a fake OpenAI upstream."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, collect_tool_calls, run_proxy, sse_events

UPSTREAM_KEY = "sk-upstream-secret-0123456789"


def config(upstream: str) -> str:
    return f"""
server:
  api_keys: []
providers:
  up: {{type: openai, api_key: "{UPSTREAM_KEY}", base_url: "{upstream}/v1", max_retries: 1}}
  compat: {{type: openai_compatible, base_url: "{upstream}/v1", max_retries: 0}}
  demo: {{type: mock, chunk_delay_ms: 1}}
models:
  gpt-test: {{provider: up, model: echo-model, input_cost_per_mtok: 1.0, output_cost_per_mtok: 2.0}}
  tools: {{provider: up, model: tools}}
  local: {{provider: compat, model: echo-model}}
  broken: {{provider: up, model: fail-500}}
  limited: {{provider: up, model: fail-429}}
  bad-request: {{provider: up, model: fail-400}}
  leaky: {{provider: up, model: leak-401}}
  flaky: {{provider: up, model: flaky-1}}
  midstream: {{provider: up, model: midstream-error}}
  dropper: {{provider: up, model: drop}}
  endless: {{provider: up, model: endless}}
  garbage: {{provider: up, model: garbage}}
  embed: {{provider: up, model: text-embedding-3-small, mode: embedding}}
  demo: {{provider: demo, model: mock-1}}
  demo-embed: {{provider: demo, model: mock-embed, mode: embedding}}
"""


@pytest.fixture(scope="module")
def proxy(openai_upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    with run_proxy(config(openai_upstream[0])) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)



def test_chat_non_stream_passes_through_and_renames_model(client: openai.OpenAI, openai_upstream: tuple[str, Recorder]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello"}], seed=7, logprobs=True,
        extra_body={"custom_field": {"kept": True}, "fallbacks": ["demo"]},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello"
    assert completion.model == "gpt-test"
    sent = openai_upstream[1].last().body
    assert sent["model"] == "echo-model"
    assert sent["seed"] == 7 and sent["logprobs"] is True and sent["custom_field"] == {"kept": True}
    assert "fallbacks" not in sent
    assert openai_upstream[1].last().headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert raw.headers["x-omni-provider"] == "up"
    assert raw.headers["x-omni-upstream-model"] == "echo-model"
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-omni-latency-ms"]) >= 0
    # 9 prompt tokens at $1/M + 3 completion tokens at $2/M
    assert float(raw.headers["x-omni-cost-usd"]) == pytest.approx(15e-6)


def test_openai_compatible_without_key(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: hi"


def test_tool_calls_keep_ids(client: openai.OpenAI, openai_upstream: tuple[str, Recorder]) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    completion = client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "weather?"}], tools=tools, tool_choice="auto",
        response_format={"type": "json_object"},
    )
    calls = completion.choices[0].message.tool_calls
    assert [c.id for c in calls] == ["call_weather_1", "call_time_2"]
    assert completion.choices[0].finish_reason == "tool_calls"
    sent = openai_upstream[1].last().body
    assert sent["tools"] == tools and sent["tool_choice"] == "auto" and sent["response_format"] == {"type": "json_object"}


def test_stream_with_sdk_and_usage(client: openai.OpenAI, openai_upstream: tuple[str, Recorder]) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 12
    assert {c.model for c in chunks} == {"gpt-test"}
    assert len({c.id for c in chunks}) == 1
    assert openai_upstream[1].last().body["stream_options"] == {"include_usage": True}


def test_stream_raw_sse_invariants_and_usage_stripped(proxy: RunningProxy, openai_upstream: tuple[str, Recorder]) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
        "model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "a b"}],
    }) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    # the proxy always asks the upstream for usage...
    assert openai_upstream[1].last().body["stream_options"] == {"include_usage": True}
    # ...and strips it when the client did not ask
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("finish_reason" in ch for c in chunks for ch in c["choices"])
    finished = [c for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert finished == [chunks[-1]] and finished[0]["choices"][0]["finish_reason"] == "stop"


def test_stream_tool_call_fragments(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "x"}], stream=True,
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    ))
    calls = collect_tool_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert [orjson.loads(calls[i]["args"]) for i in (0, 1)] == [{"city": "Paris"}, {"tz": "CET"}]
    assert calls[0]["id"] == "call_weather_1"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("model", "status", "etype", "code"),
    [
        ("broken", 502, "upstream_error", "upstream_error"),
        ("limited", 429, "rate_limit_error", "rate_limit_exceeded"),
        ("bad-request", 400, "invalid_request_error", None),
        ("leaky", 502, "upstream_error", "upstream_error"),
        ("garbage", 502, "upstream_error", "upstream_error"),
        ("nope", 404, "invalid_request_error", "model_not_found"),
    ],
)
def test_upstream_errors_map_to_contract(proxy: RunningProxy, model: str, status: int, etype: str, code: str | None) -> None:
    for stream in (False, True):
        response = httpx.post(proxy.v1 + "/chat/completions", headers={"x-request-id": f"err-{model}-{stream}"}, json={
            "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == (etype, code)
        assert UPSTREAM_KEY not in response.text
        if status == 429:
            assert response.headers["retry-after"] == "0"
    proxy.access_entry(f"err-{model}-True")  # the last request's log line is written (after its answer)
    assert UPSTREAM_KEY not in proxy.logs()


def test_bad_request_message_passes_through(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions", json={"model": "bad-request", "messages": [{"role": "user", "content": "x"}]})
    assert response.json()["error"]["message"] == "scripted failure 400"


def test_retry_then_success(proxy: RunningProxy, openai_upstream: tuple[str, Recorder]) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions", json={"model": "flaky", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert openai_upstream[1].counters["flaky-1"] == 2
    assert response.headers["x-omni-attempts"] == "flaky=up/flaky-1:502, flaky=up/flaky-1:200"


def test_fallback_to_next_model(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="broken", messages=[{"role": "user", "content": "fall back"}], extra_body={"fallbacks": ["demo"]})
    assert raw.parse().model == "demo"
    assert raw.headers["x-omni-provider"] == "demo"
    assert "You said: fall back" in raw.parse().choices[0].message.content


def test_error_after_first_byte_is_an_event_without_done(proxy: RunningProxy, client: openai.OpenAI) -> None:
    for model in ("midstream", "dropper"):
        with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": model, "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}) as response:
            assert response.status_code == 200
            events = sse_events(response)
        assert b"[DONE]" not in events
        last = orjson.loads(events[-1])
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert orjson.loads(events[1])["choices"][0]["delta"]["content"] == "echo:"
        # Everything sent before the failure is relayed, even when it arrived in the same read.
        assert "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "echo: a"
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a b c"}], stream=True))


def test_client_disconnect_closes_upstream(proxy: RunningProxy, openai_upstream: tuple[str, Recorder]) -> None:
    recorder = openai_upstream[1]
    before = recorder.closed_streams
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "endless", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as response:
        for line in response.iter_lines():
            if "tick2" in line:
                break
    # The gateway must notice the disconnect and close its upstream stream long before 2000 ticks.
    deadline = 100
    while recorder.closed_streams == before and deadline:
        httpx.get(proxy.url + "/health")
        deadline -= 1
        time.sleep(0.05)
    assert recorder.closed_streams > before


def test_embeddings_float_and_base64(client: openai.OpenAI, openai_upstream: tuple[str, Recorder]) -> None:
    result = client.embeddings.create(model="embed", input=["a", "b"])  # the SDK asks for base64 and decodes
    assert [d.embedding for d in result.data] == [[0.5, -0.25, 0.125], [1.5, -0.25, 0.125]]
    assert openai_upstream[1].last().body["encoding_format"] == "base64"
    assert result.model == "embed" and result.usage.total_tokens == 3
    as_float = client.embeddings.create(model="embed", input="a", encoding_format="float")
    assert as_float.data[0].embedding == [0.5, -0.25, 0.125]


def test_mock_embeddings_base64_encoded_by_gateway(proxy: RunningProxy) -> None:
    plain = httpx.post(proxy.v1 + "/embeddings", json={"model": "demo-embed", "input": "x", "dimensions": 4}).json()
    packed = httpx.post(proxy.v1 + "/embeddings", json={"model": "demo-embed", "input": "x", "dimensions": 4,
                                                        "encoding_format": "base64"}).json()
    vector = plain["data"][0]["embedding"]
    assert len(vector) == 4
    decoded = struct.unpack("<4f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector, rel=1e-6)
