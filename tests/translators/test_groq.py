"""Groq: pure mapping tests, then the provider driven through the real groq SDK against the fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from proxy.config import Deployment, ProviderConfig
from proxy.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from tests.fakes import groq as fake_groq
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import free_port
from translators.groq import GroqProvider, GroqStreamState, from_groq_event, from_groq_response, to_groq_request


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_groq.make_app(recorder)) as url:
        yield url, recorder


def provider_for(base_url: str, **settings: Any) -> GroqProvider:
    return GroqProvider(ProviderConfig("gq", "groq", {"api_key": "gsk-test", "base_url": base_url, **settings}))


def deployment(model: str, mode: str = "chat") -> Deployment:
    return Deployment(name="public", provider="gq", model=model, mode=mode)


USER = [{"role": "user", "content": "hello there"}]


def test_request_keeps_body_sets_model_and_drops_stream_options() -> None:
    request = {"model": "public", "messages": USER, "seed": 3, "stream_options": {"include_usage": True}, "n": 1}
    body = to_groq_request(request, "llama-3.3-70b-versatile", stream=True)
    assert body == {"model": "llama-3.3-70b-versatile", "messages": USER, "seed": 3, "stream": True}


def test_request_rejects_more_than_one_choice() -> None:
    with pytest.raises(InvalidRequest) as info:
        to_groq_request({"messages": USER, "n": 2}, "m", stream=False)
    assert info.value.param == "n"


def test_response_renames_reasoning_and_drops_x_groq() -> None:
    result = from_groq_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi",
                                                                      "reasoning": "hmm"}}], "x_groq": {"id": "r"}})
    assert result == {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "reasoning_content": "hmm"}}]}


@pytest.mark.parametrize(
    ("chunk", "relayed", "usage"),
    [
        ({"choices": [{"index": 0, "delta": {"content": "a"}}], "x_groq": {"id": "req"}},
         {"choices": [{"index": 0, "delta": {"content": "a"}}]}, None),
        ({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "x_groq": {"usage": {"total_tokens": 5}}},
         {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, {"total_tokens": 5}),
        ({"choices": [], "usage": {"total_tokens": 7}}, None, {"total_tokens": 7}),
        ({"choices": [{"index": 0, "delta": {"reasoning": "r"}}]}, {"choices": [{"index": 0, "delta": {"reasoning_content": "r"}}]}, None),
    ],
)
def test_stream_events(chunk: dict[str, Any], relayed: dict[str, Any] | None, usage: dict[str, Any] | None) -> None:
    state = GroqStreamState()
    assert from_groq_event(chunk, state) == relayed
    assert state.usage == usage


def test_stream_event_with_x_groq_error_raises() -> None:
    with pytest.raises(UpstreamError, match="scripted"):
        from_groq_event({"choices": [], "x_groq": {"error": "scripted"}}, GroqStreamState())


async def test_chat_through_sdk(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    result = await provider.chat({"messages": USER, "temperature": 0.1}, deployment("qwen-reason"))
    message = result["choices"][0]["message"]
    assert message["content"] == "echo: hello there" and message["reasoning_content"] == "thinking it over"
    sent = upstream[1].last()
    assert sent.path == "/openai/v1/chat/completions" and sent.headers["authorization"] == "Bearer gsk-test"
    assert sent.body["temperature"] == 0.1 and sent.body["stream"] is False
    await provider.aclose()


async def test_stream_moves_x_groq_usage_to_final_chunk(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    chunks = [c async for c in provider.stream({"messages": USER, "stream_options": {"include_usage": True}},
                                               deployment("llama"))]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "echo: hello there"
    assert chunks[-1] == {"choices": [], "usage": fake_groq.USAGE}
    assert all("x_groq" not in c for c in chunks)
    assert "stream_options" not in upstream[1].last().body
    await provider.aclose()


async def test_stream_tool_calls_keep_ids(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    chunks = [c async for c in provider.stream({"messages": USER}, deployment("tools"))]
    calls = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls] == [
        (0, "call_gq01", "get_weather"), (1, "call_gq02", "get_time")]
    await provider.aclose()


async def test_embeddings_through_sdk(upstream: tuple[str, Recorder]) -> None:
    provider = provider_for(upstream[0])
    result = await provider.embed({"input": ["a", "b"], "encoding_format": "base64"}, deployment("embed-x", "embedding"))
    assert [d["embedding"] for d in result["data"]] == [[0.25, -0.5], [1.25, -0.5]]
    assert "encoding_format" not in upstream[1].last().body
    await provider.aclose()


@pytest.mark.parametrize(
    ("model", "error_type", "status"),
    [("fail-429", RateLimited, 429), ("fail-400", InvalidRequest, 400), ("fail-401", UpstreamError, 502),
     ("fail-503", UpstreamError, 502), ("fail-404", InvalidRequest, 404)],
)
async def test_status_errors_map_by_table(upstream: tuple[str, Recorder], model: str, error_type: type, status: int) -> None:
    provider = provider_for(upstream[0])
    with pytest.raises(Exception) as info:
        await provider.chat({"messages": USER}, deployment(model))
    error = provider.map_error(info.value)
    assert type(error) is error_type and error.status == status
    if status == 429:
        assert error.retry_after == 0
    if status == 400:
        assert error.message == "scripted failure 400"
    await provider.aclose()


async def test_connection_refused_maps_to_502() -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Exception) as info:
        await provider.chat({"messages": USER}, deployment("llama"))
    assert type(provider.map_error(info.value)) is UpstreamError
    await provider.aclose()


def test_timeout_maps_to_504() -> None:
    import groq
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1/openai/v1/chat/completions")
    provider = provider_for("http://127.0.0.1:1")
    assert type(provider.map_error(groq.APITimeoutError(request))) is UpstreamTimeout
    assert type(provider.map_error(httpx.ReadTimeout("slow", request=request))) is UpstreamTimeout
