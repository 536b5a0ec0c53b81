"""End to end: the real `omni-llm serve`, the official openai client, the real cohere SDK, a fake Cohere v2 upstream."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes import cohere as fake_cohere
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, collect_tool_calls, run_proxy, sse_events

UPSTREAM_KEY = "co-upstream-secret-0123456789"
PNG = "data:image/png;base64,iVBORw0KGgo="
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


def config(upstream: str) -> str:
    return f"""
server:
  api_keys: []
providers:
  co: {{type: cohere, api_key: "{UPSTREAM_KEY}", base_url: "{upstream}", max_retries: 1}}
models:
  command: {{provider: co, model: command-a-03-2025, vision: true}}  # the fake takes images
  co-tools: {{provider: co, model: tools}}
  co-think: {{provider: co, model: think}}
  co-length: {{provider: co, model: length}}
  co-limited: {{provider: co, model: fail-429}}
  co-bad: {{provider: co, model: fail-400}}
  co-unauth: {{provider: co, model: fail-401}}
  co-broken: {{provider: co, model: fail-500}}
  co-garbage: {{provider: co, model: garbage}}
  co-midstream: {{provider: co, model: midstream-error}}
  co-drop: {{provider: co, model: drop}}
  co-embed: {{provider: co, model: embed-v4.0, mode: embedding}}
"""


@pytest.fixture(scope="module")
def cohere_upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_cohere.make_app(recorder)) as url:
        yield url, recorder


@pytest.fixture(scope="module")
def proxy(cohere_upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    # CO_API_URL must not matter: the provider always passes base_url.
    with run_proxy(config(cohere_upstream[0]), env={"CO_API_URL": "http://127.0.0.1:9"}) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


def sent(upstream: tuple[str, Recorder]) -> dict[str, Any]:
    return upstream[1].last().body  # type: ignore[no-any-return]



def test_chat_maps_params_and_usage(client: openai.OpenAI, cohere_upstream: tuple[str, Recorder]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="command", messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}],
        top_p=0.9, stop="END", seed=7, max_completion_tokens=50, temperature=0.2, n=1,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        extra_body={"top_k": 5},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 2)  # billed units
    assert completion.usage.prompt_tokens_details.cached_tokens == 1
    assert raw.headers["x-omni-provider"] == "co" and raw.headers["x-omni-dropped-params"] == "n"
    request = cohere_upstream[1].last()
    assert request.path == "/v2/chat" and request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert request.body == {
        "model": "command-a-03-2025", "stream": False,
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}],
        "p": 0.9, "k": 5, "stop_sequences": ["END"], "seed": 7, "max_tokens": 50, "temperature": 0.2,
        "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
    }


def test_images_pass_through(client: openai.OpenAI, cohere_upstream: tuple[str, Recorder]) -> None:
    content = [{"type": "text", "text": "what is this"},
               {"type": "image_url", "image_url": {"url": PNG}},
               {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]
    completion = client.chat.completions.create(model="command", messages=[{"role": "user", "content": content}])
    assert completion.choices[0].message.content == "echo: what is this"
    assert sent(cohere_upstream)["messages"][0]["content"][1:] == [
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]


def test_stream_text_with_usage_and_invariants(proxy: RunningProxy, cohere_upstream: tuple[str, Recorder]) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
        "model": "command", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "one two three"}],
    }) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: one two three"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finished == [chunks[-2]] and finished[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7
    assert len({c["id"] for c in chunks}) == 1 and {c["model"] for c in chunks} == {"command"}
    assert sent(cohere_upstream)["stream"] is True


@pytest.mark.parametrize(("model", "finish"), [("co-length", "length"), ("co-think", "stop")])
def test_finish_reasons_and_thinking(client: openai.OpenAI, model: str, finish: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    completion = client.chat.completions.create(model=model, messages=messages)
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
    assert completion.choices[0].finish_reason == finish == chunks[-1].choices[0].finish_reason
    streamed = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    expected = "Let me think." if model == "co-think" else ""
    assert (completion.choices[0].message.model_extra or {}).get("reasoning_content", "") == expected == streamed


def test_tool_calls_with_plan(client: openai.OpenAI, cohere_upstream: tuple[str, Recorder]) -> None:
    completion = client.chat.completions.create(
        model="co-tools", messages=[{"role": "user", "content": "weather and time?"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content is None
    assert [c.id for c in message.tool_calls] == ["get_weather_0abc", "get_time_1def"]
    assert [orjson.loads(c.function.arguments) for c in message.tool_calls] == [{"city": "Paris"}, {"tz": "CET"}]
    assert message.model_extra["reasoning_content"] == fake_cohere.TOOL_PLAN
    body = sent(cohere_upstream)
    assert body["tool_choice"] == "REQUIRED" and [t["function"]["name"] for t in body["tools"]] == ["get_time"]


def test_streamed_parallel_tool_calls(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="co-tools", messages=[{"role": "user", "content": "x"}], stream=True, tools=TOOLS))
    plan = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    calls = collect_tool_calls(chunks)
    assert plan == fake_cohere.TOOL_PLAN
    assert sorted(calls) == [0, 1]
    assert [(calls[i]["id"], calls[i]["name"]) for i in (0, 1)] == [("get_weather_0abc", "get_weather"),
                                                                    ("get_time_1def", "get_time")]
    assert [orjson.loads(calls[i]["args"]) for i in (0, 1)] == [{"city": "Paris"}, {"tz": "CET"}]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_plan_and_results_round_trip(client: openai.OpenAI, cohere_upstream: tuple[str, Recorder]) -> None:
    first = client.chat.completions.create(
        model="co-tools", messages=[{"role": "user", "content": "weather and time?"}], tools=TOOLS)
    assistant = first.choices[0].message.model_dump(exclude_none=True)
    history = [{"role": "user", "content": "weather and time?"}, assistant,
               {"role": "tool", "tool_call_id": "get_weather_0abc", "content": '{"temp": 21}'},
               {"role": "tool", "tool_call_id": "get_time_1def", "content": "12:00"},
               {"role": "user", "content": "thanks"}]
    second = client.chat.completions.create(model="command", messages=history, tools=TOOLS)
    assert second.choices[0].message.content == "echo: thanks"
    replayed = sent(cohere_upstream)["messages"]
    assert replayed[1] == {"role": "assistant", "tool_plan": fake_cohere.TOOL_PLAN,
                           "tool_calls": fake_cohere.TOOL_CALLS}
    assert replayed[2:4] == [
        {"role": "tool", "tool_call_id": "get_weather_0abc", "content": [{"type": "document", "document": {"data": {"temp": 21}}}]},
        {"role": "tool", "tool_call_id": "get_time_1def", "content": [{"type": "document", "document": {"data": {"result": "12:00"}}}]},
    ]


def test_embeddings_float_and_base64(client: openai.OpenAI, cohere_upstream: tuple[str, Recorder]) -> None:
    result = client.embeddings.create(model="co-embed", input=["a", "b"])  # the SDK asks for base64 and decodes
    assert [d.embedding for d in result.data] == [[0.5, -0.25, 0.125], [1.5, -0.25, 0.125]]
    assert result.model == "co-embed" and result.usage.prompt_tokens == 3
    request = cohere_upstream[1].last()
    assert request.path == "/v2/embed"
    assert request.body == {"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_document",
                            "embedding_types": ["float"]}
    as_float = client.embeddings.create(model="co-embed", input="q", encoding_format="float", dimensions=4,
                                        extra_body={"input_type": "search_query"})
    assert as_float.data[0].embedding == [0.5, -0.25, 0.125, 0.5]
    assert sent(cohere_upstream)["input_type"] == "search_query" and sent(cohere_upstream)["output_dimension"] == 4


def test_embeddings_raw_base64(proxy: RunningProxy) -> None:
    packed = httpx.post(proxy.v1 + "/embeddings", json={"model": "co-embed", "input": "x", "encoding_format": "base64"})
    vector = struct.unpack("<3f", base64.b64decode(packed.json()["data"][0]["embedding"]))
    assert vector == (0.5, -0.25, 0.125)


@pytest.mark.parametrize(("model", "status", "etype", "message"), [
    ("co-limited", 429, "rate_limit_error", "rate limited"),
    ("co-bad", 400, "invalid_request_error", "scripted failure 400"),
    ("co-unauth", 502, "upstream_error", "scripted failure 401"),
    ("co-broken", 502, "upstream_error", "scripted failure 500"),
    ("co-garbage", 502, "upstream_error", "malformed"),
])
def test_upstream_errors(proxy: RunningProxy, model: str, status: int, etype: str, message: str) -> None:
    for stream in (False, True):
        response = httpx.post(proxy.v1 + "/chat/completions", headers={"x-request-id": f"err-{model}-{stream}"}, json={
            "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["type"] == etype and message in error["message"]
        if status == 429:
            assert response.headers["retry-after"] == "0"
        assert UPSTREAM_KEY not in response.text
    proxy.access_entry(f"err-{model}-True")  # the last request's log line is written (after its answer)
    assert UPSTREAM_KEY not in proxy.logs()


def test_retries_are_the_routers_only(proxy: RunningProxy, cohere_upstream: tuple[str, Recorder]) -> None:
    before = len(cohere_upstream[1].requests)
    httpx.post(proxy.v1 + "/chat/completions", json={"model": "co-broken", "messages": [{"role": "user", "content": "x"}]})
    assert len(cohere_upstream[1].requests) - before == 2  # max_retries: 1, the SDK adds none


@pytest.mark.parametrize("model", ["co-midstream", "co-drop"])
def test_error_after_first_byte(proxy: RunningProxy, client: openai.OpenAI, model: str) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": model, "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert b"[DONE]" not in events
    assert orjson.loads(events[0])["choices"][0]["delta"]["content"] == "echo:"
    error = orjson.loads(events[-1])["error"]
    assert error["type"] == "upstream_error"
    if model == "co-midstream":
        assert "scripted mid-stream failure" in error["message"]
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a b c"}], stream=True))
