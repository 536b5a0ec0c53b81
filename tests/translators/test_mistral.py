"""Mistral: pure mapping tests, then the provider driven through the real mistralai SDK against the fake."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.config import Deployment, ProviderConfig
from proxy.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from tests.fakes import mistral as fake_mistral
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import free_port
from translators.mistral import (
    MistralProvider,
    MistralStreamState,
    from_mistral_event,
    from_mistral_finish_reason,
    from_mistral_response,
    to_mistral_embedding_request,
    to_mistral_request,
    to_mistral_tool_call_id,
)

USER = [{"role": "user", "content": "hello there"}]
HISTORY = [
    {"role": "developer", "content": "Be terse."},
    {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc123xyz", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "Ab3De6Gh9", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_abc123xyz", "content": "21C"},
    {"role": "tool", "tool_call_id": "Ab3De6Gh9", "content": [{"type": "text", "text": "noon"}]},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_mistral.make_app(recorder)) as url:
        yield url, recorder


def provider_for(base_url: str) -> MistralProvider:
    return MistralProvider(ProviderConfig("mi", "mistral", {"api_key": "mi-key", "base_url": base_url}))


def deployment(model: str, mode: str = "chat") -> Deployment:
    return Deployment(name="public", provider="mi", model=model, mode=mode)


@pytest.mark.parametrize("original", ["call_abc123xyz", "toolu_01A09q90qw90lq917835lq9", "x", ""])
def test_tool_call_ids_become_nine_alphanumerics_deterministically(original: str) -> None:
    rewritten = to_mistral_tool_call_id(original)
    assert re.fullmatch(r"[A-Za-z0-9]{9}", rewritten)
    assert rewritten == to_mistral_tool_call_id(original)


def test_valid_ids_pass_and_distinct_ids_stay_distinct() -> None:
    assert to_mistral_tool_call_id("Ab3De6Gh9") == "Ab3De6Gh9"
    assert to_mistral_tool_call_id("call_1") != to_mistral_tool_call_id("call_2")


def test_request_mapping() -> None:
    request = {"messages": HISTORY, "seed": 7, "max_completion_tokens": 40, "max_tokens": 10, "temperature": 0.2,
               "stop": ["END"], "tool_choice": "required", "parallel_tool_calls": False,
               "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": True,
                                                                          "schema": {"type": "object"}}}}
    kwargs, renamed = to_mistral_request(request, "mistral-large-latest", stream=False)
    new_id = to_mistral_tool_call_id("call_abc123xyz")
    assert renamed == {new_id: "call_abc123xyz"}
    assert kwargs["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": new_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "Ab3De6Gh9", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": new_id, "content": "21C", "name": "get_weather"},
        {"role": "tool", "tool_call_id": "Ab3De6Gh9", "content": "noon", "name": "get_time"},
    ]
    assert kwargs["random_seed"] == 7 and "seed" not in kwargs
    assert kwargs["max_tokens"] == 40 and kwargs["temperature"] == 0.2 and kwargs["stop"] == ["END"]
    assert kwargs["tool_choice"] == "any" and kwargs["parallel_tool_calls"] is False
    assert kwargs["response_format"] == {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"},
                                                                                "strict": True}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", "auto"), ("none", "none"), ("required", "any"),
     ({"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}})],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    kwargs, _ = to_mistral_request({"messages": USER, "tool_choice": choice}, "m", stream=False)
    assert kwargs["tool_choice"] == expected


@pytest.mark.parametrize(
    "request_body",
    [{"messages": USER, "n": 2}, {"messages": [{"role": "function", "content": "x"}]},
     {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}],
)
def test_requests_mistral_cannot_take_are_400(request_body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        to_mistral_request(request_body, "m", stream=True)


@pytest.mark.parametrize(("reason", "expected"), [("stop", "stop"), ("length", "length"), ("model_length", "length"),
                                                  ("tool_calls", "tool_calls"), ("brand_new", "stop"), (None, None)])
def test_finish_reasons(reason: str | None, expected: str | None) -> None:
    assert from_mistral_finish_reason(reason) == expected


def test_finish_reason_error_raises() -> None:
    with pytest.raises(UpstreamError):
        from_mistral_finish_reason("error")


def test_response_maps_ids_back_and_reasoning() -> None:
    new_id = to_mistral_tool_call_id("call_abc123xyz")
    response = {"id": "c1", "created": 1, "model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                                                   "total_tokens": 5, "prompt_tokens_details": {"cached_tokens": 1}},
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}],
                    "tool_calls": [{"id": new_id, "function": {"name": "f", "arguments": {"a": 1}}},
                                   {"id": "Zz9Yy8Xx7", "function": {"name": "g", "arguments": "{}"}}]}}]}
    result = from_mistral_response(response, {new_id: "call_abc123xyz"})
    message = result["choices"][0]["message"]
    assert message["content"] is None and message["reasoning_content"] == "hm"
    assert [(c["id"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("call_abc123xyz", '{"a":1}'), ("Zz9Yy8Xx7", "{}")]
    assert result["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                               "prompt_tokens_details": {"cached_tokens": 1}}


def test_stream_events_give_stable_tool_indices_and_final_usage() -> None:
    state = MistralStreamState()
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"id": "Aa1Bb2Cc3", "index": 0,
                                                              "function": {"name": "f", "arguments": "{}"}}]},
                      "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"id": "Dd4Ee5Ff6", "index": 0,
                                                              "function": {"name": "g", "arguments": '{"x":1}'}}]},
                      "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 4, "completion_tokens": 6}},
    ]
    chunks = [c for e in events for c in from_mistral_event(e, state)]
    assert chunks[0] == {"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}]}
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:3]]
    assert calls == [
        {"index": 0, "id": "Aa1Bb2Cc3", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"index": 1, "id": "Dd4Ee5Ff6", "type": "function", "function": {"name": "g", "arguments": '{"x":1}'}},
    ]
    assert chunks[2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[3] == {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}


def test_embedding_request() -> None:
    assert to_mistral_embedding_request({"input": ["a"], "dimensions": 256}, "codestral-embed") == {
        "model": "codestral-embed", "inputs": ["a"], "output_dimension": 256}
    with pytest.raises(InvalidRequest):
        to_mistral_embedding_request({"input": [[1, 2, 3]]}, "mistral-embed")


async def test_history_replay_through_sdk(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    result = await provider.chat({"messages": HISTORY, "seed": 3}, deployment("replay"))
    # the fake answers with the id it received for the first tool result: the client sees its own id back
    assert result["choices"][0]["message"]["tool_calls"][0]["id"] == "call_abc123xyz"
    sent = upstream[1].last()
    assert sent.headers["authorization"] == "Bearer mi-key" and sent.body["random_seed"] == 3
    assert sent.body["messages"][3]["tool_call_id"] == to_mistral_tool_call_id("call_abc123xyz")
    await provider.aclose()


async def test_stream_through_sdk(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    chunks = [c async for c in provider.stream({"messages": USER}, deployment("think"))]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "echo: hello there"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "pondering"
    assert chunks[-1] == {"choices": [], "usage": fake_mistral.USAGE}
    assert upstream[1].last().body["stream"] is True
    await provider.aclose()


async def test_embeddings_through_sdk(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    result = await provider.embed({"input": "a", "output_dimension": 2}, deployment("codestral-embed", "embedding"))
    assert result["data"] == [{"object": "embedding", "index": 0, "embedding": [0.5, 0.125]}]
    assert result["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert upstream[1].last().body == {"model": "codestral-embed", "input": "a", "output_dimension": 2}
    await provider.aclose()


@pytest.mark.parametrize(
    ("model", "error_type", "status", "message"),
    [("fail-429", RateLimited, 429, "Requests rate limit exceeded"),
     ("fail-400", InvalidRequest, 400, "scripted failure 400"),
     ("fail-422", InvalidRequest, 422, "scripted validation failure"),
     ("fail-401", UpstreamError, 502, None), ("fail-403", UpstreamError, 502, None),
     ("fail-500", UpstreamError, 502, "scripted failure 500"), ("fail-504", UpstreamTimeout, 504, None),
     ("no-id", UpstreamError, 502, None)],
)
async def test_errors_map_by_table(upstream: tuple[str, Recorder], model: str, error_type: type, status: int,
                                   message: str | None) -> None:
    provider = provider_for(upstream[0])
    with pytest.raises(Exception) as info:
        await provider.embed({"input": "x"}, deployment(model, "embedding"))
    error = provider.map_error(info.value)
    assert type(error) is error_type and error.status == status
    if message:
        assert error.message == message
    if status == 429:
        assert error.retry_after == 0
    await provider.aclose()


async def test_midstream_error_object_maps_to_502(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    received = []
    with pytest.raises(Exception) as info:
        async for chunk in provider.stream({"messages": [{"role": "user", "content": "a b c"}]}, deployment("midstream-error")):
            received.append(chunk)
    assert len(received) == 3
    error = provider.map_error(info.value)
    assert type(error) is UpstreamError and "scripted mid-stream failure" in error.message
    await provider.aclose()


async def test_connection_refused_maps_to_502() -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Exception) as info:
        await provider.chat({"messages": USER}, deployment("m"))
    assert type(provider.map_error(info.value)) is UpstreamError
    await provider.aclose()


async def test_timeout_maps_to_504(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    slow = Deployment(name="public", provider="mi", model="slow-300", timeout_s=0.05)
    with pytest.raises(Exception) as info:
        await provider.chat({"messages": USER}, slow)
    assert type(provider.map_error(info.value)) is UpstreamTimeout
    await provider.aclose()


def test_tool_call_without_id_gets_a_fresh_one() -> None:
    response = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"content": "", "tool_calls": [
        {"id": "null", "function": {"name": "f", "arguments": "{}"}},
        {"id": "null", "function": {"name": "g", "arguments": "{}"}}]}}]}
    ids = [c["id"] for c in from_mistral_response(response, {})["choices"][0]["message"]["tool_calls"]]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2
