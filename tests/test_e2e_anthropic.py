"""End to end: the real `omni-llm serve`, the openai client and raw SSE, a fake Anthropic upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes import anthropic as fake_anthropic
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, collect_tool_calls, free_port, run_proxy, sse_events

UPSTREAM_KEY = "sk-ant-upstream-secret-0123456789"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def config(upstream: str) -> str:
    models = {"claude": "claude-sonnet-5", "claude-tools": "tools", "claude-thinking": "thinking",
              "claude-refusal": "refusal", "claude-bad": "fail-400", "claude-auth": "fail-401",
              "claude-limited": "fail-429", "claude-broken": "fail-500", "claude-overloaded": "fail-529",
              "claude-midstream": "midstream-error", "claude-garbage": "garbage"}
    lines = "\n".join(f"  {name}: {{provider: claude, model: {model}}}" for name, model in models.items())
    return f"""
server:
  api_keys: []
providers:
  claude: {{type: anthropic, api_key: "{UPSTREAM_KEY}", base_url: "{upstream}", max_retries: 0,
           headers: {{x-team: omni}}}}
  hasty: {{type: anthropic, api_key: "{UPSTREAM_KEY}", base_url: "{upstream}", max_retries: 0, timeout_s: 0.3}}
  nowhere: {{type: anthropic, api_key: "{UPSTREAM_KEY}", base_url: "http://127.0.0.1:{free_port()}", max_retries: 0}}
models:
{lines}
  claude-capped: {{provider: claude, model: claude-haiku-4-5, max_tokens: 1000}}
  claude-slow: {{provider: hasty, model: slow-1000}}
  claude-down: {{provider: nowhere, model: claude-haiku-4-5}}
  claude-embed: {{provider: claude, model: claude-haiku-4-5, mode: embedding}}
"""


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_anthropic.make_app(recorder)) as url:
        yield url, recorder


@pytest.fixture(scope="module")
def proxy(anthropic_upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    with run_proxy(config(anthropic_upstream[0])) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


@pytest.fixture()
def sent(anthropic_upstream: tuple[str, Recorder]) -> Any:
    """The body of the last request the fake received (call after the request)."""
    return lambda: anthropic_upstream[1].last().body



def test_chat_maps_request_and_response(client: openai.OpenAI, anthropic_upstream: tuple[str, Recorder],
                                        sent: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude-capped", user="u1", stop="END", temperature=0.2, top_p=0.9, seed=7,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello there"}],
        extra_body={"top_k": 5},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude-capped"
    assert completion.usage.prompt_tokens == 17 and completion.usage.completion_tokens == 7
    assert completion.usage.prompt_tokens_details.cached_tokens == 5
    assert raw.headers["x-omni-provider"] == "claude"
    assert raw.headers["x-omni-dropped-params"] == "seed"
    body = sent()
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 1000  # the model entry's default
    assert body["system"] == "Be terse."
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.2, 0.9, 5)
    assert body["metadata"] == {"user_id": "u1"} and body["stop_sequences"] == ["END"]
    headers = anthropic_upstream[1].last().headers
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}" and headers["x-team"] == "omni"


def test_vision_and_json_schema(client: openai.OpenAI, sent: Any) -> None:
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgpmYWtl"}}]}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}}})
    body = sent()
    assert [b["source"]["type"] for b in body["messages"][0]["content"][1:]] == ["url", "base64"]
    assert body["output_config"]["format"]["schema"]["additionalProperties"] is False
    assert body["max_tokens"] == 4096


def test_stream_with_sdk_and_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 24
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 5
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {"claude"}


def test_stream_raw_sse_invariants(proxy: RunningProxy) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "claude", "stream": True, "messages": [{"role": "user", "content": "a b"}]}) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"] and "usage" not in c for c in chunks)
    finished = [c for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert finished == [chunks[-1]] and finished[0]["choices"][0]["finish_reason"] == "stop"


def test_tools_non_stream(client: openai.OpenAI, sent: Any) -> None:
    completion = client.chat.completions.create(
        model="claude-tools", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER, TIME],
        tool_choice="required", parallel_tool_calls=False)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("toolu_weather_1", "get_weather", {"city": "Paris"}), ("toolu_time_2", "get_time", {"tz": "CET"})]
    assert sent()["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent()["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]


def test_stream_parallel_tool_calls_with_interleaved_fragments(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="claude-tools", messages=[{"role": "user", "content": "x"}], stream=True, tools=[WEATHER, TIME]))
    calls = collect_tool_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert [orjson.loads(calls[i]["args"]) for i in (0, 1)] == [{"city": "Paris"}, {"tz": "CET"}]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_thinking_round_trip_with_tools(client: openai.OpenAI, sent: Any) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Paris?"}]
    first = client.chat.completions.create(model="claude-thinking", messages=messages, tools=[WEATHER],
                                           reasoning_effort="low")
    assert sent()["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    message = first.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == "Let me think."
    blocks = extra["thinking_blocks"]
    assert blocks == fake_anthropic.THINKING
    assert first.usage.completion_tokens_details.reasoning_tokens == 4
    # The client sends the assistant turn back as it got it, plus the tool result.
    messages += [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny"}]
    second = client.chat.completions.create(model="claude-thinking", messages=messages, tools=[WEATHER],
                                            reasoning_effort="low")
    assert second.choices[0].finish_reason == "tool_calls"
    replayed = sent()["messages"]
    assert [m["role"] for m in replayed] == ["user", "assistant", "user"]
    assert replayed[1]["content"][:2] == fake_anthropic.THINKING  # verbatim, signatures included, first
    assert replayed[1]["content"][3] == fake_anthropic.TOOL_USES[0]
    assert replayed[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_weather_1", "content": "sunny"}]


def test_thinking_stream(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="claude-thinking", messages=[{"role": "user", "content": "x"}], tools=[WEATHER],
        reasoning_effort="low", stream=True))
    extras = [c.choices[0].delta.model_extra or {} for c in chunks]
    assert "".join(e.get("reasoning_content", "") for e in extras) == "Let me think."
    assert [b for e in extras for b in e.get("thinking_blocks", [])] == fake_anthropic.THINKING
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Checking."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_refusal_is_content_filter(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="claude-refusal", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize(("model", "status", "etype", "message"), [
    ("claude-bad", 400, "invalid_request_error", "scripted failure 400"),
    ("claude-auth", 502, "upstream_error", None),
    ("claude-limited", 429, "rate_limit_error", "scripted failure 429"),
    ("claude-broken", 502, "upstream_error", "scripted failure 500"),
    ("claude-overloaded", 502, "upstream_error", "scripted failure 529"),
    ("claude-garbage", 502, "upstream_error", None),
    ("claude-slow", 504, "timeout_error", None),
    ("claude-down", 502, "upstream_error", None),
])
def test_upstream_errors_map_to_contract(proxy: RunningProxy, model: str, status: int, etype: str,
                                         message: str | None) -> None:
    for stream in (False, True):
        response = httpx.post(proxy.v1 + "/chat/completions", headers={"x-request-id": f"err-{model}-{stream}"}, json={
            "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == etype
        if message:
            assert error["message"] == message
        if status == 429:
            assert response.headers["retry-after"] == "7"
        assert UPSTREAM_KEY not in response.text
    proxy.access_entry(f"err-{model}-True")  # the last request's log line is written (after its answer)
    assert UPSTREAM_KEY not in proxy.logs()


def test_invalid_translation_is_a_400_before_any_upstream_call(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions", json={"model": "claude", "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


def test_error_after_stream_started_is_an_event_without_done(proxy: RunningProxy, client: openai.OpenAI) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "claude-midstream", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}) as r:
        assert r.status_code == 200
        events = sse_events(r)
    assert b"[DONE]" not in events
    assert "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "echo: a"
    error = orjson.loads(events[-1])["error"]
    assert error["type"] == "upstream_error" and "Overloaded" in error["message"]
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="claude-midstream", messages=[{"role": "user", "content": "a b"}],
                                            stream=True))


def test_embeddings_are_not_offered(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/embeddings", json={"model": "claude-embed", "input": "x"})
    assert response.status_code == 400 and "embeddings" in response.json()["error"]["message"]
