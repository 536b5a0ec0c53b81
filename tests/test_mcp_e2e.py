"""End to end (CONTRACT §11): `omni-llm serve` runs the MCP tool loop for OpenAI, Anthropic and Bedrock models.

Real MCP servers (tests/mcp_servers/tools_server.py) run as processes, over
stdio (started by the gateway) and over streamable HTTP behind a bearer
token; the model is each vendor's fake upstream replaying a script of turns
(tool calls over several rounds, in parallel, a client tool, never stopping).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes import anthropic as fake_anthropic
from tests.fakes import bedrock as fake_bedrock
from tests.fakes import openai as fake_openai
from tests.fakes.server import Recorder, serve_app
from tests.mcp_servers import TOOLS_SERVER, http_server
from tests.proxy_server import RunningProxy, run_proxy

GATEWAY_KEY = "gw-key-0123456789"
MCP_TOKEN = "mcp-bearer-token-0123456789"
MODELS = ("gpt", "claude", "nova")
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def config(openai_url: str, anthropic_url: str, bedrock_url: str, mcp_url: str, data: str = "/nonexistent") -> str:
    stdio = f'transport: stdio, command: "{sys.executable}", args: ["{TOOLS_SERVER}"]'
    return f"""
server:
  api_keys: ["{GATEWAY_KEY}"]
router: {{cooldown_failures: 1000}}  # `broken` stays in rotation: every round tries it first
providers:
  oai: {{type: openai, api_key: sk-upstream-0123456789, base_url: "{openai_url}/v1", max_retries: 0}}
  ant: {{type: anthropic, api_key: sk-ant-upstream-0123456789, base_url: "{anthropic_url}", max_retries: 0}}
  aws: {{type: bedrock, region: us-east-1, aws_access_key_id: AKIDEXAMPLE,
         aws_secret_access_key: secret-key-0123456789, base_url: "{bedrock_url}", max_retries: 0}}
models:
  gpt: {{provider: oai, model: scripted}}
  claude: {{provider: ant, model: scripted}}
  nova: {{provider: aws, model: scripted}}
  broken: {{provider: oai, model: fail-500}}
mcp_servers:
  local: {{{stdio}, timeout_s: 1.5, max_result_bytes: 100}}
  narrow: {{{stdio}, allowed_tools: [echo]}}
  remote: {{transport: streamable_http, url: "{mcp_url}", headers: {{Authorization: "Bearer ${{MCP_TOKEN}}"}}}}
  locked: {{transport: streamable_http, url: "{mcp_url}", max_retries: 0}}
  nowhere: {{transport: stdio, command: /nonexistent/mcp-server, max_retries: 0}}
rag:
  store: {{type: sqlite, path: "{data}/rag.db"}}
  allowed_paths: ["{data}"]
"""


@pytest.fixture(scope="module")
def recorders() -> Iterator[dict[str, Recorder]]:
    found = {"gpt": Recorder(), "claude": Recorder(), "nova": Recorder()}
    with serve_app(fake_openai.make_app(found["gpt"])) as oai, \
            serve_app(fake_anthropic.make_app(found["claude"])) as ant, \
            serve_app(fake_bedrock.make_app(found["nova"])) as aws, http_server(MCP_TOKEN) as mcp:
        found["urls"] = (oai, ant, aws, mcp)  # type: ignore[assignment]
        yield found


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mcp-rag")
    (folder / "launch.txt").write_text("Launch procedure. The launch code word is PELICAN-42, said twice.\n")
    return folder


@pytest.fixture(scope="module")
def proxy(recorders: dict[str, Any], data: Path) -> Iterator[RunningProxy]:
    with run_proxy(config(*recorders["urls"], data=str(data)), env={"MCP_TOKEN": MCP_TOKEN}) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key=GATEWAY_KEY, max_retries=0)


def turn(text: str | None = None, *calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"text": text, "tool_calls": [{"id": i, "name": n, "arguments": a} for i, n, a in calls]}


def script(recorders: dict[str, Any], model: str, *turns: dict[str, Any]) -> Recorder:
    recorder: Recorder = recorders[model]
    recorder.script = list(turns)
    recorder.requests.clear()
    return recorder


def ask(client: openai.OpenAI, model: str, mcp: dict[str, Any], **kwargs: Any) -> Any:
    messages = kwargs.pop("messages", [{"role": "user", "content": "What is 2+3? Then echo hi."}])
    return client.chat.completions.create(model=model, messages=messages, extra_body={"mcp": mcp}, **kwargs)


def stream_raw(proxy: RunningProxy, body: dict[str, Any]) -> tuple[int, list[Any]]:
    """Raw SSE of a streamed request: (status, decoded events; `[DONE]` kept as the string)."""
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={**body, "stream": True}, timeout=30,
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as response:
        raw = b"".join(response.iter_raw())
    if response.status_code != 200:
        return response.status_code, [orjson.loads(raw)]
    events = [e[len(b"data: "):] for e in raw.split(b"\n\n") if e]
    return 200, [e.decode() if e == b"[DONE]" else orjson.loads(e) for e in events]


THREE_ROUNDS = (
    turn("Let me compute.", ("call_1", "local__add", {"a": 2, "b": 3}), ("call_2", "remote__echo", {"text": "hi"})),
    turn(None, ("call_3", "local__fail", {"reason": "disk full"})),
    turn("2+3 is 5 and the echo said hi."),
)


def tool_messages(body: dict[str, Any], model: str) -> list[str]:
    """The tool results a vendor request carried back to the model, as text."""
    if model == "gpt":
        return [m["content"] for m in body["messages"] if m["role"] == "tool"]
    if model == "claude":
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        return [str(b["content"]) for b in blocks if b["type"] == "tool_result"]
    blocks = [b for m in body["messages"] for b in m["content"]]
    return [str(b["toolResult"]["content"]) for b in blocks if "toolResult" in b]


@pytest.mark.parametrize("model", MODELS)
def test_loop_runs_rounds_in_parallel_feeds_errors_back_and_traces(client: openai.OpenAI, recorders: Any,
                                                                   model: str) -> None:
    recorder = script(recorders, model, *THREE_ROUNDS)
    answer = ask(client, model, {"servers": ["local", "remote"]})
    assert answer.choices[0].message.content == "Let me compute.\n\n2+3 is 5 and the echo said hi."
    assert answer.choices[0].finish_reason == "stop"
    assert not answer.choices[0].message.tool_calls
    trace = answer.model_extra["tool_trace"]
    assert [(t["server"], t["name"], t["arguments"], t["result"], t["is_error"]) for t in trace] == [
        ("local", "add", {"a": 2, "b": 3}, "5.0", False),
        ("remote", "echo", {"text": "hi"}, "hi", False),
        ("local", "fail", {"reason": "disk full"}, trace[2]["result"], True),
    ]
    assert "disk full" in trace[2]["result"]
    assert all(isinstance(t["duration_ms"], float | int) and t["duration_ms"] >= 0 for t in trace)
    assert len(recorder.requests) == 3
    second, third = recorder.requests[1].body, recorder.requests[2].body
    assert tool_messages(second, model) == ["5.0", "hi"] if model == "gpt" else "5.0" in str(second)
    assert any("disk full" in text for text in tool_messages(third, model))
    assert answer.usage.total_tokens == 3 * (12 if model == "gpt" else 13 if model == "nova" else 24)


@pytest.mark.parametrize("model", MODELS)
def test_stream_is_one_message_with_trace_chunks(proxy: RunningProxy, recorders: Any, model: str) -> None:
    script(recorders, model, *THREE_ROUNDS)
    status, events = stream_raw(proxy, {"model": model, "messages": [{"role": "user", "content": "go"}],
                                        "mcp": {"servers": ["local", "remote"]},
                                        "stream_options": {"include_usage": True}})
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    with_choices = [c for c in chunks if c["choices"]]
    side = [c for c in chunks if not c["choices"] and "tool_trace" in c]
    assert len({c["id"] for c in chunks}) == 1
    assert with_choices[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum("role" in c["choices"][0]["delta"] for c in with_choices) == 1
    assert not any(c["choices"][0]["delta"].get("tool_calls") for c in with_choices)
    finishes = [c["choices"][0]["finish_reason"] for c in with_choices if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"] and with_choices[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices)
    assert text == "Let me compute.\n\n2+3 is 5 and the echo said hi."
    names = [entry["name"] for c in side for entry in c["tool_trace"]]
    assert sorted(names[:2]) == ["add", "echo"] and names[2] == "fail"
    assert all(len(c["tool_trace"]) == 1 for c in side)
    usage = [c for c in chunks if c.get("usage")]
    assert len(usage) == 1 and usage[0] is chunks[-1]
    assert usage[0]["usage"]["total_tokens"] == 3 * (12 if model == "gpt" else 13 if model == "nova" else 24)


def test_stream_with_the_openai_sdk(client: openai.OpenAI, recorders: Any) -> None:
    script(recorders, "gpt", *THREE_ROUNDS)
    stream = ask(client, "gpt", {"servers": ["local", "remote"]}, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me compute.\n\n2+3 is 5 and the echo said hi."
    traces = [t for c in chunks if not c.choices for t in c.model_extra.get("tool_trace", [])]
    assert len(traces) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_forced_tool_choice_applies_to_the_first_round_only(proxy: RunningProxy, client: openai.OpenAI,
                                                           recorders: Any, stream: bool) -> None:
    recorder = script(recorders, "gpt", turn(None, ("c1", "local__echo", {"text": "x"})), turn("done"))
    body = {"model": "gpt", "messages": [{"role": "user", "content": "echo x"}], "mcp": {"servers": ["local"]},
            "tool_choice": {"type": "function", "function": {"name": "local__echo"}}}
    if stream:
        assert stream_raw(proxy, body)[0] == 200
    else:
        ask(client, "gpt", body["mcp"], messages=body["messages"], tool_choice=body["tool_choice"])
    assert [r.body.get("tool_choice") for r in recorder.requests] == [body["tool_choice"], "auto"]


@pytest.mark.parametrize("model", MODELS)
def test_client_tool_call_ends_the_loop_after_running_the_mcp_calls(client: openai.OpenAI, recorders: Any,
                                                                    model: str) -> None:
    recorder = script(recorders, model, turn("Checking.", ("c1", "local__add", {"a": 1, "b": 1}),
                                             ("c2", "get_weather", {"city": "Paris"})))
    answer = ask(client, model, {"servers": ["local"]}, tools=[WEATHER])
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, orjson.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert [t["name"] for t in answer.model_extra["tool_trace"]] == ["add"]
    assert len(recorder.requests) == 1


def test_stream_client_tool_call_is_relayed_with_its_own_index(proxy: RunningProxy, recorders: Any) -> None:
    script(recorders, "gpt", turn(None, ("c1", "local__add", {"a": 1, "b": 1}), ("c2", "get_weather", {"city": "Oslo"})))
    status, events = stream_raw(proxy, {"model": "gpt", "messages": [{"role": "user", "content": "go"}],
                                        "tools": [WEATHER], "mcp": {"servers": ["local"]}})
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert {d["index"] for d in deltas} == {0}
    assert deltas[0]["function"]["name"] == "get_weather"
    assert orjson.loads("".join(d["function"].get("arguments") or "" for d in deltas)) == {"city": "Oslo"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert [t["name"] for e in events[:-1] if not e["choices"] for t in e.get("tool_trace", [])] == ["add"]


@pytest.mark.parametrize("stream", [False, True])
def test_max_iterations_stops_a_model_that_never_stops(proxy: RunningProxy, recorders: Any, stream: bool) -> None:
    recorder = script(recorders, "gpt", turn("again", ("c1", "local__echo", {"text": "loop"})))
    body = {"model": "gpt", "messages": [{"role": "user", "content": "go"}],
            "mcp": {"servers": ["local"], "max_iterations": 2}}
    if stream:
        status, events = stream_raw(proxy, body)
        assert status == 200 and events[-1] == "[DONE]"
        chunks = [e for e in events[:-1] if e["choices"]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        finish = chunks[-1]["choices"][0]["finish_reason"]
        traces = [t for e in events[:-1] if not e["choices"] for t in e["tool_trace"]]
    else:
        response = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=30,
                              headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        answer = response.json()
        text, finish = answer["choices"][0]["message"]["content"], answer["choices"][0]["finish_reason"]
        traces = answer["tool_trace"]
        assert not answer["choices"][0]["message"].get("tool_calls")
    assert finish == "length"
    assert text == "again\n\nagain\n\nagain"
    assert len(traces) == 2 and len(recorder.requests) == 3


def test_auto_invoke_false_returns_mcp_calls_unexecuted(client: openai.OpenAI, recorders: Any) -> None:
    recorder = script(recorders, "gpt", turn(None, ("c1", "local__add", {"a": 1, "b": 2})))
    answer = ask(client, "gpt", {"servers": ["local"], "auto_invoke": False})
    assert answer.choices[0].finish_reason == "tool_calls"
    assert answer.choices[0].message.tool_calls[0].function.name == "local__add"
    assert len(recorder.requests) == 1
    offered = [t["function"]["name"] for t in recorder.requests[0].body["tools"]]
    assert "local__add" in offered and "local__dotted_name" in offered


def test_tools_filter_and_allowed_tools_ceiling(client: openai.OpenAI, recorders: Any) -> None:
    recorder = script(recorders, "gpt", turn("ok"))
    ask(client, "gpt", {"servers": ["local", "narrow"], "tools": ["add", "echo", "crash"]}, tools=[WEATHER])
    offered = [t["function"]["name"] for t in recorder.requests[0].body["tools"]]
    assert offered == ["get_weather", "local__echo", "local__add", "local__crash", "narrow__echo"]


@pytest.mark.parametrize("stream", [False, True])
def test_hanging_tool_times_out_and_huge_result_is_truncated(proxy: RunningProxy, recorders: Any,
                                                             stream: bool) -> None:
    recorder = script(recorders, "gpt", turn(None, ("c1", "local__sleep", {"seconds": 30}),
                                             ("c2", "local__big", {"size": 500})), turn("recovered"))
    body = {"model": "gpt", "messages": [{"role": "user", "content": "go"}], "mcp": {"servers": ["local"]}}
    if stream:
        events = stream_raw(proxy, body)[1]
        trace = [t for e in events[:-1] if not e["choices"] for t in e["tool_trace"]]
    else:
        trace = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=30,
                           headers={"authorization": f"Bearer {GATEWAY_KEY}"}).json()["tool_trace"]
    by_name = {t["name"]: t for t in trace}
    assert by_name["sleep"]["is_error"] and "timed out after 1.5 s" in by_name["sleep"]["result"]
    assert 1400 <= by_name["sleep"]["duration_ms"] < 10_000
    assert by_name["big"]["result"] == "x" * 100 + "\n[truncated 400 bytes]" and not by_name["big"]["is_error"]
    sent = tool_messages(recorder.requests[1].body, "gpt")
    assert any("timed out" in s for s in sent) and "x" * 100 + "\n[truncated 400 bytes]" in sent


@pytest.mark.parametrize("stream", [False, True])
def test_each_round_goes_through_the_router_with_fallbacks(proxy: RunningProxy, recorders: Any, stream: bool) -> None:
    recorder = script(recorders, "gpt", turn(None, ("c1", "local__add", {"a": 1, "b": 2})), turn("three"))
    body = {"model": "broken", "fallbacks": ["gpt"], "messages": [{"role": "user", "content": "go"}],
            "mcp": {"servers": ["local"]}}
    if stream:
        events = stream_raw(proxy, body)[1]
        assert events[-1] == "[DONE]" and events[0]["model"] == "gpt"
    else:
        answer = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=30,
                            headers={"authorization": f"Bearer {GATEWAY_KEY}"}).json()
        assert answer["choices"][0]["message"]["content"] == "three" and answer["model"] == "gpt"
    models = [r.body["model"] for r in recorder.requests]
    assert models == ["fail-500", "scripted", "fail-500", "scripted"]


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_server_is_400_and_unreachable_server_is_502_before_the_first_byte(
        proxy: RunningProxy, recorders: Any, stream: bool) -> None:
    script(recorders, "gpt", turn("never asked"))
    base = {"model": "gpt", "messages": [{"role": "user", "content": "go"}], "stream": stream}
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    unknown = httpx.post(proxy.v1 + "/chat/completions", json={**base, "mcp": {"servers": ["local", "nope"]}},
                         headers=headers, timeout=30)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "mcp.servers" and "'nope'" in unknown.json()["error"]["message"]
    for server in ("locked", "nowhere"):
        down = httpx.post(proxy.v1 + "/chat/completions", json={**base, "mcp": {"servers": [server]}},
                          headers=headers, timeout=30)
        assert down.status_code == 502, down.text
        assert down.headers["content-type"].startswith("application/json")
        assert down.json()["error"]["code"] == "mcp_server_unavailable"
        assert server in down.json()["error"]["message"] and MCP_TOKEN not in down.text
    assert recorders["gpt"].requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_composes_with_structured_output(proxy: RunningProxy, recorders: Any, stream: bool) -> None:
    """structured_output sits inside the loop: tool rounds pass, the final answer is validated."""
    script(recorders, "gpt", turn(None, ("c1", "local__add", {"a": 2, "b": 3})), turn('{"sum": 5}'))
    body = {"model": "gpt", "messages": [{"role": "user", "content": "add"}], "mcp": {"servers": ["local"]},
            "structured_output": {"format": {"sum": "number"}}}
    if stream:
        status, events = stream_raw(proxy, body)
        assert status == 200 and events[-1] == "[DONE]"
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
        assert orjson.loads(text) == {"sum": 5}
        assert [t["result"] for e in events[:-1] if not e["choices"] for t in e["tool_trace"]] == ["5.0"]
    else:
        answer = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=30,
                            headers={"authorization": f"Bearer {GATEWAY_KEY}"}).json()
        assert answer["choices"][0]["message"]["parsed"] == {"sum": 5}
        assert [t["result"] for t in answer["tool_trace"]] == ["5.0"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_later_round_failing_is_an_error_in_band_once_streaming(proxy: RunningProxy, recorders: Any,
                                                                  stream: bool) -> None:
    script(recorders, "gpt", turn("Looking.", ("c1", "local__echo", {"text": "x"})), {"status": 400})
    body = {"model": "gpt", "messages": [{"role": "user", "content": "go"}], "mcp": {"servers": ["local"]}}
    if not stream:
        response = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=30,
                              headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert response.status_code == 400 and "scripted failure 400" in response.json()["error"]["message"]
        return
    status, events = stream_raw(proxy, body)
    assert status == 200 and "[DONE]" not in events
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")) == "Looking."
    assert [t["name"] for e in events if e.get("choices") == [] for t in e.get("tool_trace", [])] == ["echo"]
    assert "scripted failure 400" in events[-1]["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_rag_context_reaches_every_round_of_the_tool_loop(proxy: RunningProxy, recorders: Any, data: Path,
                                                         stream: bool) -> None:
    recorder = script(recorders, "gpt", turn(None, ("call_1", "local__echo", {"text": "checking"})),
                      turn("The code word is PELICAN-42 [1]."))
    body = {"model": "gpt", "messages": [{"role": "user", "content": "What is the launch code word?"}],
            "mcp": {"servers": ["local"]}, "rag": {"sources": [str(data / "launch.txt")], "top_k": 1}}
    if stream:
        status, events = stream_raw(proxy, body)
        assert status == 200 and events[-1] == "[DONE]"
        chunks = events[:-1]
        context = chunks[0]["rag_context"]
        assert all("rag_context" not in c for c in chunks[1:])
        trace = [entry for c in chunks if not c["choices"] for entry in c.get("tool_trace", [])]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    else:
        response = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=30,
                              headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        assert response.status_code == 200, response.text
        answer = response.json()
        context, trace = answer["rag_context"], answer["tool_trace"]
        text = answer["choices"][0]["message"]["content"]
    assert len(context) == 1 and "PELICAN-42" in context[0]["content"]
    assert [(t["name"], t["result"]) for t in trace] == [("echo", "checking")]
    assert text == "The code word is PELICAN-42 [1]."
    assert len(recorder.requests) == 2  # the retrieved context went to the model in both rounds, once each
    for sent in (r.body for r in recorder.requests):
        assert "rag" not in sent and "mcp" not in sent
        systems = [m["content"] for m in sent["messages"] if m["role"] == "system"]
        assert len(systems) == 1 and "[1]" in systems[0] and "PELICAN-42" in systems[0]
