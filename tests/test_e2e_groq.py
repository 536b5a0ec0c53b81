"""End to end: the real `omni-llm serve` with a `groq` provider, the openai client and raw SSE, the fake Groq."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from tests.fakes import groq as fake_groq
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, collect_tool_calls, run_proxy

UPSTREAM_KEY = "gsk-upstream-secret-0123456789"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_groq.make_app(recorder)) as url:
        yield url, recorder


@pytest.fixture(scope="module")
def proxy(upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    config = f"""
server: {{api_keys: []}}
providers:
  groq: {{type: groq, api_key: "{UPSTREAM_KEY}", base_url: "{upstream[0]}", max_retries: 0}}
models:
  llama: {{provider: groq, model: llama-3.3-70b-versatile}}
  tools: {{provider: groq, model: tools}}
  limited: {{provider: groq, model: fail-429}}
  bad-request: {{provider: groq, model: fail-400}}
  denied: {{provider: groq, model: fail-401}}
  broken: {{provider: groq, model: fail-500}}
  stopped: {{provider: groq, model: stream-error}}
  embed: {{provider: groq, model: nomic-embed-text-v1_5, mode: embedding}}
"""
    with run_proxy(config) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


def test_chat_forwards_and_drops_unsupported(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], seed=4, logprobs=True, top_logprobs=2,
        reasoning_effort="low")
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi" and completion.model == "llama"
    assert completion.usage.total_tokens == 15
    assert set(raw.headers["x-omni-dropped-params"].split(",")) == {"logprobs", "top_logprobs"}
    sent = upstream[1].last()
    assert sent.path == "/openai/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.body["seed"] == 4 and sent.body["reasoning_effort"] == "low" and "logprobs" not in sent.body


def test_stream_parallel_tool_calls_keep_ids_and_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "x"}], tools=TOOLS, stream=True,
        stream_options={"include_usage": True}))
    calls = collect_tool_calls(chunks)
    assert [(calls[i]["id"], calls[i]["name"], orjson.loads(calls[i]["args"])) for i in sorted(calls)] == [
        ("call_gq01", "get_weather", {"city": "Paris"}), ("call_gq02", "get_time", {"tz": "CET"})]
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.total_tokens == 15


def test_stream_raw_sse_without_usage(proxy: RunningProxy) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "llama", "stream": True, "messages": [{"role": "user", "content": "a b"}]}) as response:
        raw = b"".join(response.iter_raw())
    events = [e[len(b"data: "):] for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] and "usage" not in c and "x_groq" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: a b"


def test_more_than_one_choice_is_400(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions",
                          json={"model": "llama", "n": 2, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


@pytest.mark.parametrize(
    ("model", "status", "etype"),
    [("limited", 429, "rate_limit_error"), ("bad-request", 400, "invalid_request_error"),
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


def test_x_groq_error_after_first_byte_is_an_error_event(proxy: RunningProxy) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
            "model": "stopped", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_raw())
    events = [orjson.loads(e[len(b"data: "):]) for e in raw.split(b"\n\n") if e]
    assert b"[DONE]" not in raw
    assert "scripted stop" in events[-1]["error"]["message"]


def test_embeddings(client: openai.OpenAI, upstream: tuple[str, Recorder]) -> None:
    result = client.embeddings.create(model="embed", input=["a", "b"])  # base64 by default, encoded by the gateway
    assert [d.embedding for d in result.data] == [[0.25, -0.5], [1.25, -0.5]]
    assert upstream[1].last().path == "/openai/v1/embeddings"
    assert result.usage.total_tokens == 2
