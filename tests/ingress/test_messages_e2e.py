"""End to end: the official `anthropic` SDK against `omni-llm serve` on /v1/messages, routed to the
OpenAI, Bedrock and Gemini fakes (translated) and to the Anthropic fake (passed through)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.fakes.server import Recorder
from tests.ingress.conftest import GATEWAY_KEY
from tests.proxy_server import RunningProxy

WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
# public model name -> (upstream fake, its scripted model)
CHAT = {"gpt": "oai", "bedrock": "aws", "gemini": "gem", "claude": "ant"}
TOOLS = {"gpt-tools": "oai", "bedrock-tools": "aws", "gemini-tools": "gem", "claude-tools": "ant"}


@pytest.fixture()
def client(proxy: RunningProxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=GATEWAY_KEY, max_retries=0)


@pytest.mark.parametrize("model", list(CHAT))
def test_text_every_provider(client: anthropic.Anthropic, model: str) -> None:
    message = client.messages.create(model=model, max_tokens=100, system="Be terse.",
                                     messages=[{"role": "user", "content": "hello there"}])
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0


@pytest.mark.parametrize("model", list(CHAT))
def test_stream_every_provider(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=100,
                                messages=[{"role": "user", "content": "one two three"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert final.content[0].text == "echo: one two three" and final.model == model
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0  # message_delta carries the whole usage (OpenAI-shaped upstreams report it last)


@pytest.mark.parametrize("model", list(TOOLS))
@pytest.mark.parametrize("streamed", [False, True])
def test_tools_every_provider(client: anthropic.Anthropic, model: str, streamed: bool,
                              fakes: dict[str, tuple[str, Recorder]]) -> None:
    kwargs: dict[str, Any] = dict(model=model, max_tokens=200, tools=[WEATHER, TIME],
                                  tool_choice={"type": "auto"},
                                  messages=[{"role": "user", "content": "weather and time?"}])
    if streamed:
        with client.messages.stream(**kwargs) as stream:
            deltas = [e for e in stream if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
            final = stream.get_final_message()
        assert deltas, "tool arguments arrive as input_json_delta events"
    else:
        final = client.messages.create(**kwargs)
    calls = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert all(b.id for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use"
    if TOOLS[model] == "oai":  # the translated request carried the tools
        sent = fakes["oai"][1].last().body
        assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
        assert sent["tool_choice"] == "auto"


def test_request_mapping_to_openai(client: anthropic.Anthropic, fakes: dict[str, tuple[str, Recorder]]) -> None:
    client.messages.create(
        model="gpt", max_tokens=77, system=[{"type": "text", "text": "Be terse."}], stop_sequences=["END"],
        metadata={"user_id": "u-1"}, tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        tools=[WEATHER], extra_body={"temperature": 0.3},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": ""},
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]},
                {"type": "text", "text": "and now?"}]},
        ])
    sent = fakes["oai"][1].last().body
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": "checking", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
        {"role": "user", "content": "and now?"},
    ]
    assert sent["max_tokens"] == 77 and sent["stop"] == ["END"] and sent["user"] == "u-1"
    assert sent["temperature"] == 0.3 and sent["parallel_tool_calls"] is False
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_anthropic_upstream_passes_through(client: anthropic.Anthropic, fakes: dict[str, tuple[str, Recorder]]) -> None:
    history = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1=="},
            {"type": "tool_use", "id": "toolu_weather_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_weather_1", "content": "21C",
                                      "cache_control": {"type": "ephemeral"}}]},
    ]
    body = dict(max_tokens=3000, messages=history, thinking={"type": "enabled", "budget_tokens": 1024},
                metadata={"user_id": "u-2"}, stop_sequences=["STOP"], extra_body={"top_k": 5})
    message = client.messages.create(model="claude", **body)  # type: ignore[arg-type]
    assert message.model == "claude" and message.id == "msg_fake1"  # the upstream's own message, relayed
    sent = fakes["ant"][1].last().body
    assert sent["model"] == "claude-sonnet-5"
    assert sent["messages"] == history and sent["thinking"] == body["thinking"] and sent["top_k"] == 5
    assert sent["metadata"] == {"user_id": "u-2"} and sent["stop_sequences"] == ["STOP"]


def test_anthropic_passthrough_stream_keeps_thinking(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="claude-thinking", max_tokens=3000,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "think"}]) as stream:
        deltas = {e.delta.type for e in stream if e.type == "content_block_delta"}
        final = stream.get_final_message()
    assert {"thinking_delta", "signature_delta", "input_json_delta"} <= deltas
    assert [b.type for b in final.content] == ["thinking", "redacted_thinking", "text", "tool_use"]
    assert final.content[0].signature == "sig-1==" and final.model == "claude-thinking"


def test_reasoning_of_other_vendors_streams_as_thinking(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="gemini-think", max_tokens=3000,
                                thinking={"type": "enabled", "budget_tokens": 2000},
                                messages=[{"role": "user", "content": "think"}]) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert deltas[0] == "thinking_delta" and "text_delta" in deltas
    assert [b.type for b in final.content] == ["thinking", "text"]


def test_fallback_from_anthropic_to_translated(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="claude-broken", max_tokens=50, extra_body={"fallbacks": ["gpt"]},
                                     messages=[{"role": "user", "content": "hi"}])
    assert message.model == "gpt" and message.content[0].text == "echo: hi"


def test_count_tokens(client: anthropic.Anthropic, fakes: dict[str, tuple[str, Recorder]]) -> None:
    messages: Any = [{"role": "user", "content": "hello " * 40}]
    before = len(fakes["oai"][1].requests)
    estimate = client.messages.count_tokens(model="gpt", messages=messages, system="Be terse.", tools=[WEATHER])
    assert 60 < estimate.input_tokens < 150
    assert len(fakes["oai"][1].requests) == before, "no upstream call for a non-Anthropic model"
    counted = client.messages.count_tokens(model="claude", messages=messages, system="Be terse.")
    assert counted.input_tokens == 41  # the Anthropic fake's own count
    assert fakes["ant"][1].last().path == "/v1/messages/count_tokens"
    assert fakes["ant"][1].last().body["model"] == "claude-sonnet-5"


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_auth_either_header_and_anthropic_error_shape(proxy: RunningProxy, header: str) -> None:
    payload = {"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    good = {"x-api-key": GATEWAY_KEY} if header == "x-api-key" else {"authorization": f"Bearer {GATEWAY_KEY}"}
    assert httpx.post(proxy.v1 + "/messages", json=payload, headers=good).status_code == 200
    bad = {header: "wrong" if header == "x-api-key" else "Bearer wrong"}
    response = httpx.post(proxy.v1 + "/messages", json=payload, headers=bad)
    assert response.status_code == 401
    assert response.json() == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "Incorrect API key provided."}}


@pytest.mark.parametrize(("model", "payload", "error_class", "error_type"), [
    ("nope", None, anthropic.NotFoundError, "not_found_error"),
    ("gpt", {"messages": "nope"}, anthropic.BadRequestError, "invalid_request_error"),
    ("gpt", {"tool_choice": {"type": "sometimes"}}, anthropic.BadRequestError, "invalid_request_error"),
    ("gpt-limited", None, anthropic.RateLimitError, "rate_limit_error"),
])
def test_errors_in_anthropic_shape(client: anthropic.Anthropic, model: str, payload: Any, error_class: type,
                                   error_type: str) -> None:
    with pytest.raises(error_class) as caught:
        client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                               extra_body=payload)
    body = caught.value.body  # type: ignore[attr-defined]
    assert body["type"] == "error" and body["error"]["type"] == error_type and body["error"]["message"]


@pytest.mark.parametrize("model", ["gpt-midstream", "claude-midstream"])
def test_error_after_first_byte_is_an_error_event(client: anthropic.Anthropic, model: str) -> None:
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model=model, max_tokens=50,
                                    messages=[{"role": "user", "content": "one two three"}]) as stream:
            texts.extend(stream.text_stream)
    assert "".join(texts).startswith("echo:")
    assert caught.value.body["type"] == "error"  # type: ignore[index]


def test_too_large_body_in_anthropic_shape(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/messages", headers={"x-api-key": GATEWAY_KEY},
                          content=orjson.dumps({"model": "gpt", "messages": [{"role": "user", "content": "x" * 11_000_000}]}))
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large" and response.json()["type"] == "error"


def test_server_tools_dropped_and_named_when_translated(client: anthropic.Anthropic,
                                                       fakes: dict[str, tuple[str, Recorder]]) -> None:
    tools: Any = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}, WEATHER]
    raw = client.messages.with_raw_response.create(model="gpt", max_tokens=20, tools=tools,
                                                   messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-omni-dropped-params"] == "tools.web_search"
    assert [t["function"]["name"] for t in fakes["oai"][1].last().body["tools"]] == ["get_weather"]
    raw = client.messages.with_raw_response.create(model="claude", max_tokens=20, tools=tools,
                                                   messages=[{"role": "user", "content": "hi"}])
    assert "x-omni-dropped-params" not in raw.headers
    assert fakes["ant"][1].last().body["tools"] == tools


@pytest.mark.parametrize("model", ["gemini-tools", "claude-tools"])
def test_claude_code_shaped_request(client: anthropic.Anthropic, model: str) -> None:
    """What Claude Code sends: the beta endpoint (?beta=true), cached system and tool blocks, metadata, a stream."""
    cached = {"type": "ephemeral"}
    with client.beta.messages.stream(
        model=model, max_tokens=32000, betas=["claude-code-20250219"], extra_body={"temperature": 1},
        system=[{"type": "text", "text": "You are a coding agent.", "cache_control": cached}],
        tools=[{**WEATHER, "cache_control": cached}, TIME], metadata={"user_id": "user_abc_account__session_1"},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>context</system-reminder>"},
            {"type": "text", "text": "weather and time?", "cache_control": cached}]}],
    ) as stream:
        final = stream.get_final_message()
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize(("method", "path", "status", "kind"), [
    ("GET", "/v1/messages", 405, "invalid_request_error"),
    ("POST", "/v1/messages/batches", 404, "not_found_error"),
])
def test_wrong_method_or_route_in_anthropic_shape(proxy: RunningProxy, method: str, path: str, status: int,
                                                  kind: str) -> None:
    response = httpx.request(method, proxy.url + path, headers={"x-api-key": GATEWAY_KEY})
    assert response.status_code == status
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind
