"""End to end: `omni-llm serve` with a `bedrock` provider (real boto3) against the fake Bedrock runtime.

The openai client and raw SSE reads talk to the gateway; boto3 signs, encodes and
parses the fake's Converse JSON and binary event-stream frames itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from starlette.responses import Response
from starlette.routing import Route

from proxy.config import Deployment, ProviderConfig
from tests.fakes import bedrock as fake_bedrock
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, collect_tool_calls, run_proxy, sse_events
from translators.bedrock import BedrockProvider

SESSION_TOKEN = "session-token-secret-0123456789"
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}

MODELS = {
    "claude": "us.anthropic.claude-sonnet-4-5-v1:0", "tools": "tools", "thinker": "us.anthropic.claude-reasoning-v1:0",
    "truncated": "max-tokens", "filtered": "guardrail", "bad-request": "fail-400", "denied": "fail-403",
    "limited": "fail-429", "broken": "fail-500", "slowpoke": "fail-408", "leaky": "leak-403",
    "throttled-mid": "midstream-throttlingException", "model-error-mid": "midstream-modelStreamErrorException",
    "endless": "endless", "broken-retried": "fail-500",
}
ONE_ATTEMPT = {"bad-request", "denied", "limited", "broken", "slowpoke", "leaky"}  # keeps error tests fast


def config(upstream: str) -> str:
    models = "\n".join(
        f'  {name}: {{provider: {"aws-once" if name in ONE_ATTEMPT else "aws"}, model: "{model}"}}'
        for name, model in MODELS.items()
    )
    return f"""
server:
  api_keys: []
providers:
  aws:
    type: bedrock
    region: eu-west-3
    aws_access_key_id: AKIDEXAMPLE
    aws_secret_access_key: secret-key-0123456789
    aws_session_token: "{SESSION_TOKEN}"
    base_url: "{upstream}"
    max_retries: 1
    timeout_s: 20
    headers: {{x-tenant: omni-test-tenant}}
  aws-once:
    type: bedrock
    region: us-east-1
    aws_access_key_id: AKIDEXAMPLE
    aws_secret_access_key: secret-key-0123456789
    aws_session_token: "{SESSION_TOKEN}"
    base_url: "{upstream}"
    max_retries: 0
models:
{models}
  titan: {{provider: aws, model: "amazon.titan-embed-text-v2:0", mode: embedding}}
  cohere-embed: {{provider: aws, model: cohere.embed-english-v3, mode: embedding}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    app = fake_bedrock.make_app(recorder)
    app.router.routes.append(Route("/pixel.png", lambda _: Response(PIXEL, media_type="image/png")))
    with serve_app(app) as url:
        yield url, recorder


@pytest.fixture(scope="module")
def proxy(upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    with run_proxy(config(upstream[0]), env={"OMNI_LLM_ALLOW_PRIVATE_IMAGE_URLS": "1"}) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)



def stream_raw(proxy: RunningProxy, body: dict[str, Any]) -> list[bytes]:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={"stream": True, **body}) as response:
        assert response.status_code == 200
        return sse_events(response)


def test_chat_signed_with_encoded_model_id(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}],
        max_tokens=20, seed=3,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 3)
    assert completion.usage.prompt_tokens_details.cached_tokens == 2
    assert raw.headers["x-omni-provider"] == "aws"
    assert raw.headers["x-omni-dropped-params"] == "seed"
    sent = upstream[1].last()
    assert sent.path == "/model/us.anthropic.claude-sonnet-4-5-v1%3A0/converse"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-3/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.headers["x-amz-security-token"] == SESSION_TOKEN
    assert sent.headers["x-tenant"] == "omni-test-tenant"
    assert "x-tenant" in sent.headers["authorization"]  # extra headers are signed
    assert sent.body == {"system": [{"text": "Be terse."}], "messages": [{"role": "user", "content": [{"text": "hello"}]}],
                         "inferenceConfig": {"maxTokens": 20}}


def test_stream_with_usage_and_invariants(proxy: RunningProxy, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 13
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 2
    events = stream_raw(proxy, {"model": "claude", "messages": [{"role": "user", "content": "a b"}]})
    assert events[-1] == b"[DONE]"
    parsed = [orjson.loads(e) for e in events[:-1]]
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"] and "usage" not in c for c in parsed)
    assert [c["choices"][0]["finish_reason"] for c in parsed].count("stop") == 1
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


def test_tools_non_stream(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    completion = client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], tool_choice="required")
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content == "Checking."
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("tooluse_weather_1", "get_weather", {"city": "Paris"}), ("tooluse_time_2", "get_time", {"tz": "CET"})]
    assert upstream[1].last().body["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "get_weather", "inputSchema": {"json": WEATHER["function"]["parameters"]}}}], "toolChoice": {"any": {}}}


def test_streamed_parallel_tool_calls(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "x"}], stream=True, tools=[WEATHER]))
    calls = collect_tool_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert [(calls[i]["id"], json.loads(calls[i]["args"])) for i in (0, 1)] == [
        ("tooluse_weather_1", {"city": "Paris"}), ("tooluse_time_2", {"tz": "CET"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_history_images_and_json_schema(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PIXEL).decode()
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": data_url}},
                                     {"type": "image_url", "image_url": {"url": upstream[0] + "/pixel.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "3C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "25C"},
    ]
    schema = {"type": "object", "properties": {"warmest": {"type": "string"}}, "required": ["warmest"]}
    client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER], response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    body = upstream[1].last().body
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(PIXEL).decode()}}}
    assert body["messages"][0]["content"] == [{"text": "look"}, image, image]
    assert body["messages"][2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "call_a", "content": [{"text": "3C"}]}},
        {"toolResult": {"toolUseId": "call_b", "content": [{"text": "25C"}]}}]}
    json_schema = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert json.loads(json_schema["schema"]) == {**schema, "additionalProperties": False}
    client.chat.completions.create(model="claude", messages=messages)  # history with tool blocks, no tools
    assert "toolConfig" not in upstream[1].last().body
    assert "toolUse" not in json.dumps(upstream[1].last().body)


def test_reasoning_content(proxy: RunningProxy, client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    message = client.chat.completions.create(
        model="thinker", messages=[{"role": "user", "content": "hm"}], reasoning_effort="low").choices[0].message
    assert message.content == "echo: hm"
    assert message.reasoning_content == "Let me think."  # type: ignore[attr-defined]
    assert message.thinking_blocks == [  # type: ignore[attr-defined]
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"}]
    assert upstream[1].last().body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    events = stream_raw(proxy, {"model": "thinker", "messages": [{"role": "user", "content": "hm"}]})
    deltas = [orjson.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0] == {"role": "assistant", "reasoning_content": "Let me think."}


@pytest.mark.parametrize(("model", "finish"), [("truncated", "length"), ("filtered", "content_filter")])
def test_finish_reasons(client: openai.OpenAI, model: str, finish: str) -> None:
    messages = [{"role": "user", "content": "x"}]
    assert client.chat.completions.create(model=model, messages=messages).choices[0].finish_reason == finish
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))
    assert chunks[-1].choices[0].finish_reason == finish


def test_embeddings_titan_and_cohere(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    titan = client.embeddings.create(model="titan", input=["a", "bb"], dimensions=3)  # SDK asks base64
    assert [d.embedding for d in titan.data] == [pytest.approx([0.1, 0.5, 0.5]), pytest.approx([0.2, 0.5, 0.5])]
    assert titan.usage.prompt_tokens == 2 and titan.model == "titan"
    titan_calls = [r for r in upstream[1].requests if r.path.startswith("/model/amazon.titan-embed-text-v2%3A0/invoke")]
    assert {r.body["inputText"] for r in titan_calls[-2:]} == {"a", "bb"}
    assert titan_calls[-1].body["dimensions"] == 3 and titan_calls[-1].body["normalize"] is True
    cohere = client.embeddings.create(model="cohere-embed", input=["one two", "three"], encoding_format="float")
    assert [d.embedding for d in cohere.data] == [[0.7, -0.5, 0.25], [0.5, -0.5, 0.25]]
    assert cohere.usage.prompt_tokens == 3
    assert upstream[1].last().body == {"texts": ["one two", "three"], "input_type": "search_document",
                                       "embedding_types": ["float"]}


@pytest.mark.parametrize(
    ("model", "status", "etype"),
    [("bad-request", 400, "invalid_request_error"), ("denied", 502, "upstream_error"),
     ("limited", 429, "rate_limit_error"), ("broken", 502, "upstream_error"), ("slowpoke", 504, "timeout_error"),
     ("leaky", 502, "upstream_error")],
)
def test_upstream_errors(proxy: RunningProxy, model: str, status: int, etype: str) -> None:
    for stream in (False, True):
        response = httpx.post(proxy.v1 + "/chat/completions", headers={"x-request-id": f"err-{model}-{stream}"}, json={
            "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == etype
        assert SESSION_TOKEN not in response.text
        if model == "bad-request":
            assert error["message"] == "scripted failure 400"
        if status == 429:
            assert response.headers["retry-after"] == "0"
    proxy.access_entry(f"err-{model}-True")  # the last request's log line is written (after its answer)
    assert SESSION_TOKEN not in proxy.logs()


def test_sdk_retries_are_off(proxy: RunningProxy, upstream: tuple[str, Recorder]) -> None:
    before = len([r for r in upstream[1].requests if "fail-500" in r.path])
    httpx.post(proxy.v1 + "/chat/completions", json={"model": "broken-retried", "messages": [{"role": "user", "content": "x"}]})
    after = len([r for r in upstream[1].requests if "fail-500" in r.path])
    assert after - before == 2  # max_retries: 1 -> two router attempts, one HTTP request each


@pytest.mark.parametrize(("model", "etype"), [("throttled-mid", "rate_limit_error"), ("model-error-mid", "upstream_error")])
def test_exception_after_stream_started(proxy: RunningProxy, client: openai.OpenAI, model: str, etype: str) -> None:
    events = stream_raw(proxy, {"model": model, "messages": [{"role": "user", "content": "a b c d"}]})
    assert b"[DONE]" not in events
    assert [orjson.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["echo:", " a"]
    error = orjson.loads(events[-1])["error"]
    assert error["type"] == etype and "scripted mid-stream failure" in error["message"]
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a b"}], stream=True))


def test_client_disconnect_closes_upstream_stream(proxy: RunningProxy, upstream: tuple[str, Recorder]) -> None:
    recorder = upstream[1]
    before = recorder.closed_streams
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "endless", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as response:
        for line in response.iter_lines():
            if "tick2" in line:
                break
    deadline = time.monotonic() + 10
    while recorder.closed_streams == before and time.monotonic() < deadline:
        httpx.get(proxy.url + "/health")  # poll, giving the gateway time to notice and close the upstream
    assert recorder.closed_streams > before


async def test_provider_stream_runs_off_the_loop_and_closes(upstream: tuple[str, Recorder]) -> None:
    """A stream waiting on boto3 leaves the event loop free; closing the generator closes the HTTP stream."""
    url, recorder = upstream
    settings = {"region": "us-east-1", "aws_access_key_id": "AKID", "aws_secret_access_key": "secret", "base_url": url}
    provider = BedrockProvider(ProviderConfig("aws", "bedrock", settings, timeout_s=10))
    before = recorder.closed_streams
    stream = provider.stream({"messages": [{"role": "user", "content": "x"}]}, Deployment("e", "aws", "endless"))
    try:
        first = await anext(stream)
        assert first["choices"][0]["delta"] == {"content": "tick0 "}
        other = await provider.chat({"messages": [{"role": "user", "content": "meanwhile"}]}, Deployment("c", "aws", "m"))
        assert other["choices"][0]["message"]["content"] == "echo: meanwhile"
        await stream.aclose()
        deadline = time.monotonic() + 5
        while recorder.closed_streams == before and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # polling the fake's counter, not waiting a fixed time
        assert recorder.closed_streams > before
    finally:
        await provider.aclose()
