"""The ingress mapping functions and stream states, fed plain data (table-driven)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.errors import InvalidRequest, RateLimited, UpstreamError, anthropic_error_body, error_body_for
from proxy.ingress import anthropic_messages as am
from proxy.ingress import completions as cp
from proxy.ingress import responses as rs
from proxy.ingress.relay import relay_mapped
from proxy.streaming import StreamRelay


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def tool(index: int, call_id: str | None = None, name: str | None = None, args: str = "") -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


# -- Messages ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "expected"), [
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
     {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    ({"model": "m", "system": "S", "messages": [], "stop_sequences": ["X"], "metadata": {"user_id": "u"},
      "top_k": 3, "stream": True},
     {"model": "m", "messages": [{"role": "system", "content": "S"}], "stop": ["X"], "user": "u", "top_k": 3,
      "stream": True}),
    ({"model": "m", "messages": [], "tool_choice": {"type": "any"}, "thinking": {"type": "enabled", "budget_tokens": 9000},
      "tools": [{"name": "f", "input_schema": {"type": "object"}}]},
     {"model": "m", "messages": [], "tool_choice": "required", "reasoning_effort": "high",
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
    ({"model": "m", "messages": [], "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
     {"model": "m", "messages": [], "response_format": {"type": "json_schema", "json_schema": {
         "name": "output", "schema": {"type": "object"}}}}),
    ({"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "redacted_thinking", "data": "d"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                                      "content": "boom"}]}], "fallbacks": ["other"]},
     {"model": "m", "fallbacks": ["other"], "messages": [
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
          "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"},
                              {"type": "redacted_thinking", "data": "d"}]},
         {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}]}),
])
def test_messages_to_openai_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert am.to_openai_request(body) == expected


def test_messages_server_tools_and_unmapped_fields_left_out_and_named() -> None:
    body = {"model": "m", "messages": [], "context_management": {}, "service_tier": "auto",
            "tools": [{"type": "web_search_20250305", "name": "web_search"},
                      {"name": "f", "input_schema": {"type": "object"}}]}
    assert [t["function"]["name"] for t in am.to_openai_request(body)["tools"]] == ["f"]
    assert "context_management" not in am.to_openai_request(body)
    assert am.dropped_fields(body) == ["context_management", "service_tier", "tools.web_search"]


def test_responses_unmapped_fields_named() -> None:
    body = {"model": "m", "input": "x", "truncation": "auto", "include": [], "store": False, "text": {}}
    assert rs.dropped_fields(body) == ["truncation", "include"]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": [], "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [], "tools": [{"description": "no name"}]}, "tools"),
    ({"model": "m", "messages": [], "tool_choice": {"type": "maybe"}}, "tool_choice"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content"),
])
def test_messages_request_errors(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        am.to_openai_request(body)
    assert caught.value.param == param


@pytest.mark.parametrize(("message", "finish", "content", "stop"), [
    ({"content": "hi"}, "stop", [{"type": "text", "text": "hi"}], "end_turn"),
    ({"content": "cut"}, "length", [{"type": "text", "text": "cut"}], "max_tokens"),
    ({"content": None, "reasoning_content": "hmm", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}, "tool_calls",
     [{"type": "thinking", "thinking": "hmm", "signature": ""},
      {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}], "tool_use"),
    ({"content": "no", "refusal": None}, "content_filter", [{"type": "text", "text": "no"}], "refusal"),
])
def test_messages_from_openai_response(message: dict[str, Any], finish: str, content: list[Any], stop: str) -> None:
    completion = {"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                  "usage": {"prompt_tokens": 20, "completion_tokens": 4,
                            "prompt_tokens_details": {"cached_tokens": 5, "cache_creation_tokens": 2}}}
    out = am.from_openai_response(completion, "pub", "msg_1")
    assert out["content"] == content and out["stop_reason"] == stop and out["model"] == "pub"
    assert out["usage"] == {"input_tokens": 13, "output_tokens": 4, "cache_read_input_tokens": 5,
                            "cache_creation_input_tokens": 2}


def messages_events(chunks: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    state = am.MessagesStreamState("msg_1", "pub")
    events = am.start_events(state)
    for c in chunks:
        events += am.from_openai_chunk(c, state)
    return events + am.end_events(state, usage)


def test_messages_stream_text_then_interleaved_tools() -> None:
    events = messages_events([
        chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "think"}), chunk({"content": "Hi"}),
        tool(0, "c0", "f", '{"a"'), tool(1, "c1", "g", "{"), tool(0, args=": 1}"), tool(1, args="}"),
        chunk({}, "tool_calls")], {"prompt_tokens": 9, "completion_tokens": 3})
    compact = [(name, data.get("index"), (data.get("delta") or data.get("content_block") or {}).get("type"))
               for name, data in events]
    assert compact == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_start", 3, "tool_use"), ("content_block_delta", 3, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"), ("content_block_delta", 3, "input_json_delta"),
        ("content_block_stop", 2, None), ("content_block_stop", 3, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    args = {2: "", 3: ""}
    for name, data in events:
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            args[data["index"]] += data["delta"]["partial_json"]
    assert {k: json.loads(v) for k, v in args.items()} == {2: {"a": 1}, 3: {}}
    assert events[8][1]["content_block"] == {"type": "tool_use", "id": "c0", "name": "f", "input": {}}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-2][1]["usage"]["output_tokens"] == 3


def nameless(index: int, call_id: str | None = None, name: str | None = None, args: str = "") -> dict[str, Any]:
    """A tool-call delta as some OpenAI-compatible servers send it: the id first, the name later."""
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id:
        call["id"] = call_id
    if name:
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


def test_messages_stream_holds_a_tool_call_until_it_has_a_name() -> None:
    events = messages_events([nameless(0, "c0", args='{"a"'), nameless(0, name="f", args=": 1"), nameless(0, args="}"),
                              nameless(1, "c1", args="{}"), chunk({}, "tool_calls")])
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [{"type": "tool_use", "id": "c0", "name": "f", "input": {}},
                      {"type": "tool_use", "id": "c1", "name": "", "input": {}}]  # never named: not lost
    args: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_delta":
            args[data["index"]] = args.get(data["index"], "") + data["delta"]["partial_json"]
    assert args == {0: '{"a": 1}', 1: "{}"}


def test_responses_stream_holds_a_tool_call_until_it_has_a_name() -> None:
    events = responses_events([nameless(0, "c0", args='{"a"'), nameless(0, name="f", args=": 1}"),
                               chunk({}, "tool_calls")])
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [(i["name"], i["call_id"]) for i in added] == [("f", "c0")]
    assert events[-1]["response"]["output"][0]["arguments"] == '{"a": 1}'


def test_messages_encoding_has_event_lines() -> None:
    assert am.encode_events([("ping", {"type": "ping"})]) == b'event: ping\ndata: {"type":"ping"}\n\n'


@pytest.mark.parametrize(("error", "kind"), [
    (InvalidRequest("x"), "invalid_request_error"), (InvalidRequest("x", status=404), "not_found_error"),
    (RateLimited("x"), "rate_limit_error"), (UpstreamError("x"), "api_error"),
    (InvalidRequest("x", status=413), "request_too_large"), (InvalidRequest("x", status=403), "permission_error"),
])
def test_anthropic_error_shape(error: Any, kind: str) -> None:
    assert anthropic_error_body(error) == {"type": "error", "error": {"type": kind, "message": "x"}}
    assert error_body_for("/v1/messages", error)["type"] == "error"
    assert error_body_for("/v1/messages/count_tokens", error)["type"] == "error"
    assert set(error_body_for("/v1/chat/completions", error)["error"]) == {"message", "type", "param", "code"}


def test_count_tokens_estimate_grows_with_input() -> None:
    small = am.estimate_input_tokens({"messages": [{"role": "user", "content": "hi"}]})
    large = am.estimate_input_tokens({"messages": [{"role": "user", "content": "hi " * 400}], "system": "s",
                                      "tools": [{"name": "f", "input_schema": {"type": "object"}}]})
    image = am.estimate_input_tokens({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 9000}}]}]})
    assert 1 <= small < 10 < 300 < large < 400 and 1600 <= image < 1700


# -- Responses -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "expected"), [
    ({"model": "m", "input": "hi"}, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ({"model": "m", "input": "hi", "instructions": "S", "max_output_tokens": 9, "reasoning": {"effort": "low"},
      "text": {"format": {"type": "json_object"}}, "tool_choice": {"type": "function", "name": "f"},
      "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]},
     {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
      "max_completion_tokens": 9, "reasoning_effort": "low", "response_format": {"type": "json_object"},
      "tool_choice": {"type": "function", "function": {"name": "f"}},
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
    ({"model": "m", "store": False, "input": [
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": [{"type": "input_text", "text": "ok"}]},
        {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"}]},
     {"model": "m", "messages": [
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "ok"}]},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
])
def test_responses_to_openai_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert rs.to_openai_request(body) == expected


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "input": "x", "previous_response_id": "r"}, "previous_response_id"),
    ({"model": "m", "input": "x", "store": True}, "store"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"input": "x"}, "model"),
    ({"model": "m", "input": [{"type": "input_file"}]}, "input[0].type"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.schema"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "mcp"}}, "tool_choice"),
])
def test_responses_request_errors(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        rs.to_openai_request(body)
    assert caught.value.param == param


def responses_events(chunks: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    state = rs.ResponsesStreamState(rs.skeleton({"model": "m"}, "resp_1", "pub", 0))
    events = rs.start_events(state)
    for c in chunks:
        events += rs.from_openai_chunk(c, state)
    return events + rs.end_events(state, usage)


def test_responses_stream_interleaved_tools() -> None:
    events = responses_events([chunk({"content": "Hi"}), tool(0, "c0", "f", '{"a"'), tool(1, "c1", "g", "{"),
                               tool(0, args=": 1}"), tool(1, args="}"), chunk({}, "tool_calls")],
                              {"prompt_tokens": 3, "completion_tokens": 2})
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.output_item.added", "response.function_call_arguments.delta",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    assert [(i["type"], i.get("arguments")) for i in final["output"]] == [
        ("message", None), ("function_call", '{"a": 1}'), ("function_call", "{}")]
    assert final["usage"]["total_tokens"] == 5 and final["status"] == "completed"


def test_responses_stream_length_is_incomplete() -> None:
    events = responses_events([chunk({"content": "cut"}, "length")])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


# -- Completions -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "prompts", "dropped", "max_tokens"), [
    ({"model": "m", "prompt": "a"}, ["a"], [], 16),
    ({"model": "m", "prompt": ["a", "b"], "max_tokens": 5, "suffix": "z", "logprobs": 2}, ["a", "b"],
     ["suffix", "logprobs"], 5),
])
def test_completions_to_chat_requests(body: dict[str, Any], prompts: list[str], dropped: list[str],
                                      max_tokens: int) -> None:
    got_prompts, requests, got_dropped = cp.to_chat_requests(body)
    assert got_prompts == prompts and got_dropped == dropped
    assert [r["messages"] for r in requests] == [[{"role": "user", "content": p}] for p in prompts]
    assert {r["max_tokens"] for r in requests} == {max_tokens}
    assert not any(key in r for r in requests for key in ("suffix", "logprobs", "prompt"))


@pytest.mark.parametrize("prompt", [[1, 2], [[1], [2]], [], None, 5])
def test_completions_refuse_prompt(prompt: Any) -> None:
    with pytest.raises(InvalidRequest):
        cp.to_chat_requests({"model": "m", "prompt": prompt})


def test_completions_encoder_echoes_once_per_choice() -> None:
    encoder = cp.CompletionsEncoder("cmpl-1", "pub", 0, ["P0", "P1"], 1, True, False, lambda e: {})
    frames = [encoder.chunk({"choices": [{"index": i, "delta": {"content": t}, "finish_reason": None}]})
              for i, t in ((0, "a"), (0, "b"), (1, "c"))]
    texts = [json.loads(f[6:])["choices"][0]["text"] for f in frames]
    assert texts == ["P0a", "b", "P1c"]
    assert encoder.end({"total_tokens": 1}) == b"data: [DONE]\n\n"


# -- the shared relay --------------------------------------------------------------------------------

class Recording:
    def start(self) -> bytes:
        return b"<start>"

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return chunk["choices"][0]["delta"].get("content", "").encode()

    def end(self, usage: dict[str, Any] | None) -> bytes:
        return b"<end %d>" % (usage or {}).get("total_tokens", 0)

    def error(self, error: Any) -> bytes:
        return b"<error %s>" % error.message.encode()


async def items(values: list[Any], closed: list[bool]) -> AsyncIterator[Any]:
    try:
        for value in values:
            if isinstance(value, Exception):
                raise value
            yield value
    finally:
        closed.append(True)


@pytest.mark.parametrize(("rest", "expected"), [
    ([[chunk({"content": "b"}), chunk({}, "stop")], {"choices": [], "usage": {"total_tokens": 7}}],
     b"<start>ab<end 7>"),
    ([chunk({"content": "b"}), UpstreamError("boom")], b"<start>ab<error boom>"),
    ([chunk({"content": "b"})], b"<start>ab<error upstream stream ended before the answer was complete>"),
])
async def test_relay_mapped(rest: list[Any], expected: bytes) -> None:
    closed: list[bool] = []
    done: list[Any] = []
    frames = relay_mapped(StreamRelay("id", "pub", False), [chunk({"content": "a"})], items(rest, closed),
                          Recording(), lambda exc: exc if isinstance(exc, UpstreamError) else UpstreamError("?"),
                          lambda state, error: done.append(error))
    assert b"".join([frame async for frame in frames]) == expected
    assert closed == [True] and len(done) == 1


def test_import_app_loads_no_ingress_module() -> None:
    code = ("import sys, proxy.app; proxy.app.create_app(); "
            "print([m for m in sys.modules if m.startswith(('proxy.ingress', 'openai', 'anthropic'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
