"""Pure tests of the Anthropic mapping, fed bodies and event sequences shaped like Anthropic's docs.

Event sequences follow https://docs.anthropic.com/en/api/messages-streaming .
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from proxy.config import ProviderConfig
from proxy.errors import InvalidRequest, ProxyError, RateLimited, UpstreamError, UpstreamTimeout
from proxy.router import prepare_request
from translators.anthropic import (
    AnthropicProvider,
    AnthropicStreamState,
    from_anthropic_event,
    from_anthropic_response,
    from_anthropic_stop_reason,
    from_anthropic_usage,
    map_anthropic_error,
    to_anthropic_request,
)
from translators.anthropic.request import JSON_OBJECT_INSTRUCTION

USER = {"role": "user", "content": "hi"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def body(**request: Any) -> dict[str, Any]:
    request.setdefault("messages", [USER])
    return to_anthropic_request(request, "claude-sonnet-5", request.pop("_default", None))


# --- requests ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_fields", "expected"), [
    ({}, {"max_tokens": 4096}),
    ({"_default": 1000}, {"max_tokens": 1000}),
    ({"_default": 1000, "max_tokens": 50}, {"max_tokens": 50}),
    ({"max_tokens": 50, "max_completion_tokens": 60}, {"max_tokens": 60}),
    ({"stop": "END"}, {"stop_sequences": ["END"]}),
    ({"stop": ["A", "B"]}, {"stop_sequences": ["A", "B"]}),
    ({"temperature": 0.2, "top_p": 0.9, "top_k": 5}, {"temperature": 0.2, "top_p": 0.9, "top_k": 5}),
    ({"user": "u1"}, {"metadata": {"user_id": "u1"}}),
    ({"reasoning_effort": "low"}, {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 4096 + 2048}),
    ({"reasoning_effort": "high", "max_tokens": 10000}, {"thinking": {"type": "enabled", "budget_tokens": 5000}}),
    ({"reasoning_effort": "low", "max_tokens": 3000}, {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
    ({"reasoning_effort": "none"}, {"thinking": None}),
    ({"tools": [WEATHER]}, {"tools": [{"name": "get_weather", "description": "Weather by city",
                                       "input_schema": WEATHER["function"]["parameters"]}], "tool_choice": None}),
    ({"tools": [WEATHER], "tool_choice": "auto"}, {"tool_choice": {"type": "auto"}}),
    ({"tools": [WEATHER], "tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
    ({"tools": [WEATHER], "tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {"tool_choice": {"type": "tool", "name": "get_weather"}}),
    ({"tools": [WEATHER], "parallel_tool_calls": False},
     {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
     {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}}),
    ({"tool_choice": "auto"}, {"tool_choice": None, "tools": None}),
    ({"response_format": {"type": "text"}}, {"output_config": None}),
])
def test_request_fields(request_fields: dict[str, Any], expected: dict[str, Any]) -> None:
    sent = body(**request_fields)
    for key, value in expected.items():
        assert sent.get(key) == value, key
    assert "stream" not in sent and "n" not in sent


def test_unsupported_params_are_dropped_or_rejected() -> None:
    provider = AnthropicProvider(ProviderConfig("claude", "anthropic", {"api_key": "k"}))
    request = {"model": "m", "messages": [USER], "seed": 7, "n": 1, "temperature": 0.1, "top_k": 3,
               "reasoning_effort": "low", "parallel_tool_calls": False, "fallbacks": ["x"]}
    kept, dropped = prepare_request(request, provider, False, "claude")
    assert dropped == ["seed", "n"]
    assert set(kept) == {"model", "messages", "temperature", "top_k", "reasoning_effort", "parallel_tool_calls"}
    with pytest.raises(InvalidRequest) as info:
        prepare_request(request, provider, True, "claude")
    assert info.value.param == "seed"


def test_system_developer_alternation_and_tool_results() -> None:
    sent = body(messages=[
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call.2|x", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call.2|x", "content": [{"type": "text", "text": "12:00"}]},
        {"role": "user", "content": "thanks"},
    ])
    assert sent["system"] == "Be terse.\n\nUse metric."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2_x", "name": "get_time", "input": {}},
    ]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp": 21}'},
        {"type": "tool_result", "tool_use_id": "call_2_x", "content": [{"type": "text", "text": "12:00"}]},
        {"type": "text", "text": "thanks"},
    ]


def test_images_data_url_and_https() -> None:
    sent = body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgpmYWtl"}},
    ]}])
    assert sent["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgpmYWtl"}},
    ]


def test_thinking_blocks_are_replayed_verbatim_and_first() -> None:
    blocks = [{"type": "thinking", "thinking": "Let me think.", "signature": "sig-1=="},
              {"type": "redacted_thinking", "data": "REDACTED=="}]
    sent = body(messages=[USER, {"role": "assistant", "content": None, "thinking_blocks": blocks,
                                 "reasoning_content": "Let me think.", "tool_calls": [
                                     {"id": "toolu_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": "{}"}}]},
                          {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}])
    assert sent["messages"][1]["content"][:2] == blocks
    assert sent["messages"][1]["content"][2]["type"] == "tool_use"


def test_json_schema_is_adapted_for_output_config() -> None:
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 2},
        "nick": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}}},
        "required": ["name"], "$defs": {"Tag": {"type": "object", "properties": {"v": {"type": "integer"}}}}}
    sent = body(response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": schema}})
    out = sent["output_config"]["format"]
    assert out["type"] == "json_schema"
    adapted = out["schema"]
    assert adapted["additionalProperties"] is False and adapted["$defs"]["Tag"]["additionalProperties"] is False
    assert "minLength" not in adapted["properties"]["name"]  # moved into the description
    assert adapted["properties"]["nick"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert adapted["properties"]["tags"]["items"] == {"$ref": "#/$defs/Tag"}


def test_json_object_becomes_a_system_instruction() -> None:
    sent = body(messages=[{"role": "system", "content": "Be terse."}, USER], response_format={"type": "json_object"})
    assert "output_config" not in sent
    assert sent["system"] == "Be terse.\n\n" + JSON_OBJECT_INSTRUCTION


@pytest.mark.parametrize(("request_fields", "param"), [
    ({"messages": [{"role": "function", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]},
     "messages"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}, "messages"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"description": "no type"}}}},
     "response_format"),
    ({"reasoning_effort": "maximum"}, "reasoning_effort"),
    ({"reasoning_effort": "low", "max_tokens": 1000}, "max_tokens"),
])
def test_invalid_requests(request_fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        body(**request_fields)
    assert info.value.param == param


# --- responses ---------------------------------------------------------------------------------

def test_response_with_thinking_text_and_tool_use() -> None:
    completion = from_anthropic_response({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5",
        "content": [{"type": "thinking", "thinking": "Hmm.", "signature": "sig=="},
                    {"type": "redacted_thinking", "data": "R=="},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 6, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}})
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"] == [{"id": "toolu_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert message["reasoning_content"] == "Hmm."
    assert message["thinking_blocks"] == [{"type": "thinking", "thinking": "Hmm.", "signature": "sig=="},
                                          {"type": "redacted_thinking", "data": "R=="}]
    assert completion["usage"]["total_tokens"] == 18


def test_tool_only_response_has_null_content() -> None:
    completion = from_anthropic_response({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                                          "stop_reason": "tool_use", "usage": {}})
    assert completion["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
def test_stop_reasons(reason: str, finish: str) -> None:
    assert from_anthropic_stop_reason(reason) == finish


def test_unknown_stop_reason_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert from_anthropic_stop_reason("brand_new") == "stop"
    assert "brand_new" in caplog.text


@pytest.mark.parametrize(("usage", "expected"), [
    ({"input_tokens": 12, "output_tokens": 6},
     {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18,
      "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 0}}),
    ({"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 5,
      "output_tokens_details": {"thinking_tokens": 4}},
     {"prompt_tokens": 17, "completion_tokens": 7, "total_tokens": 24,
      "prompt_tokens_details": {"cached_tokens": 5, "cache_creation_tokens": 2},
      "completion_tokens_details": {"reasoning_tokens": 4}}),
    ({"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": None, "cache_read_input_tokens": None},
     {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
      "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 0}}),
])
def test_usage(usage: dict[str, Any], expected: dict[str, Any]) -> None:
    assert from_anthropic_usage(usage) == expected


# --- streams -----------------------------------------------------------------------------------

def ev(kind: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, **data}


def start(usage: dict[str, Any]) -> dict[str, Any]:
    return ev("message_start", message={"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                        "content": [], "stop_reason": None, "usage": usage})


def delta(index: int, **d: Any) -> dict[str, Any]:
    return ev("content_block_delta", index=index, delta=d)


TEXT_STREAM = [
    start({"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 4}),
    ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ev("ping"),
    delta(0, type="text_delta", text="Hel"),
    delta(0, type="text_delta", text="lo"),
    ev("content_block_stop", index=0),
    ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
       usage={"output_tokens": 6, "input_tokens": 0, "cache_read_input_tokens": None}),
    ev("message_stop"),
]

THINKING_TEXT_TOOLS_STREAM = [
    start({"input_tokens": 20, "output_tokens": 1}),
    ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, type="thinking_delta", thinking="Let me "),
    delta(0, type="thinking_delta", thinking="think."),
    delta(0, type="signature_delta", signature="sig=="),
    ev("content_block_stop", index=0),
    ev("content_block_start", index=1, content_block={"type": "redacted_thinking", "data": "R=="}),
    ev("content_block_stop", index=1),
    ev("content_block_start", index=2, content_block={"type": "text", "text": ""}),
    delta(2, type="text_delta", text="Checking."),
    ev("content_block_stop", index=2),
    ev("content_block_start", index=3,
       content_block={"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
    ev("content_block_start", index=4,
       content_block={"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}),
    delta(4, type="input_json_delta", partial_json='{"tz": '),
    delta(3, type="input_json_delta", partial_json=""),
    delta(3, type="input_json_delta", partial_json='{"city": '),
    delta(4, type="input_json_delta", partial_json='"CET"}'),
    delta(3, type="input_json_delta", partial_json='"Paris"}'),
    ev("content_block_stop", index=4),
    ev("content_block_stop", index=3),
    ev("message_delta", delta={"stop_reason": "tool_use"},
       usage={"output_tokens": 40, "output_tokens_details": {"thinking_tokens": 9}}),
    ev("message_stop"),
]


def run(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    state = AnthropicStreamState()
    return [c for c in (from_anthropic_event(e, state) for e in events) if c is not None]


def deltas(chunks: list[dict[str, Any]], key: str) -> list[Any]:
    return [c["choices"][0]["delta"][key] for c in chunks if c.get("choices") and key in c["choices"][0]["delta"]]


def test_text_stream() -> None:
    chunks = run(TEXT_STREAM)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(deltas(chunks, "content")) == "Hello"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    # usage merged per field from message_start and message_delta; a later 0 or null erases nothing
    assert chunks[-1]["usage"] == {"prompt_tokens": 16, "completion_tokens": 6, "total_tokens": 22,
                                   "prompt_tokens_details": {"cached_tokens": 4, "cache_creation_tokens": 0}}


def test_thinking_text_and_interleaved_parallel_tool_calls() -> None:
    chunks = run(THINKING_TEXT_TOOLS_STREAM)
    assert "".join(deltas(chunks, "reasoning_content")) == "Let me think."
    assert deltas(chunks, "thinking_blocks") == [
        [{"type": "thinking", "thinking": "Let me think.", "signature": "sig=="}],
        [{"type": "redacted_thinking", "data": "R=="}]]
    assert "".join(deltas(chunks, "content")) == "Checking."
    calls = [call for group in deltas(chunks, "tool_calls") for call in group]
    firsts = [c for c in calls if "id" in c]
    assert firsts == [
        {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]
    later = [c for c in calls if "id" not in c]
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in later)
    args = {i: "".join(c["function"]["arguments"] for c in later if c["index"] == i) for i in (0, 1)}
    assert args == {0: '{"city": "Paris"}', 1: '{"tz": "CET"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert [c for c in chunks if c["choices"][0]["finish_reason"]] == [chunks[-1]]
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 9}
    assert chunks[-1]["usage"]["prompt_tokens"] == 20


def test_blocks_we_do_not_relay_are_logged_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    chunks = run([start({"input_tokens": 1}),
                  ev("content_block_start", index=0, content_block={"type": "server_tool_use", "id": "srvtoolu_1",
                                                                    "name": "web_search", "input": {}}),
                  delta(0, type="input_json_delta", partial_json='{"query": "x"}'),
                  ev("content_block_stop", index=0)])
    assert len(chunks) == 1 and "server_tool_use" in caplog.text


@pytest.mark.parametrize(("error", "expected", "status"), [
    ({"type": "overloaded_error", "message": "Overloaded"}, UpstreamError, 502),
    ({"type": "api_error", "message": "Internal"}, UpstreamError, 502),
    ({"type": "rate_limit_error", "message": "slow down"}, RateLimited, 429),
    ({"type": "invalid_request_error", "message": "bad"}, InvalidRequest, 400),
    ({"type": "something_new", "message": "?"}, UpstreamError, 502),
])
def test_error_mid_stream_raises(error: dict[str, Any], expected: type[ProxyError], status: int) -> None:
    state = AnthropicStreamState()
    for event in TEXT_STREAM[:4]:
        from_anthropic_event(event, state)
    with pytest.raises(expected) as info:
        from_anthropic_event(ev("error", error=error), state)
    assert info.value.status == status and error["message"] in info.value.message


# --- errors ------------------------------------------------------------------------------------

REQUEST = httpx2.Request("POST", "http://127.0.0.1/v1/messages")


def status_error(cls: type[anthropic.APIStatusError], status: int, etype: str, headers: dict[str, str] | None = None,
                 ) -> anthropic.APIStatusError:
    body = {"type": "error", "error": {"type": etype, "message": f"anthropic says {status}"}}
    response = httpx2.Response(status, headers=headers, json=body, request=REQUEST)
    return cls(f"Error code: {status} - {body}", response=response, body=body)


@pytest.mark.parametrize(("exc", "expected", "status"), [
    (status_error(anthropic.BadRequestError, 400, "invalid_request_error"), InvalidRequest, 400),
    (status_error(anthropic.NotFoundError, 404, "not_found_error"), InvalidRequest, 404),
    (status_error(anthropic.AuthenticationError, 401, "authentication_error"), UpstreamError, 502),
    (status_error(anthropic.PermissionDeniedError, 403, "permission_error"), UpstreamError, 502),
    (status_error(anthropic.RateLimitError, 429, "rate_limit_error", {"retry-after": "7"}), RateLimited, 429),
    (status_error(anthropic.InternalServerError, 500, "api_error"), UpstreamError, 502),
    (status_error(anthropic.OverloadedError, 529, "overloaded_error"), UpstreamError, 502),
    (status_error(anthropic.GatewayTimeoutError, 504, "timeout_error"), UpstreamTimeout, 504),
    (status_error(anthropic.APIStatusError, 200, "overloaded_error"), UpstreamError, 502),  # event: error
    (anthropic.APITimeoutError(REQUEST), UpstreamTimeout, 504),
    (anthropic.APIConnectionError(request=REQUEST), UpstreamError, 502),
    (httpx2.ReadTimeout("slow", request=REQUEST), UpstreamTimeout, 504),
    (httpx2.RemoteProtocolError("peer closed", request=REQUEST), UpstreamError, 502),
])
def test_error_table(exc: BaseException, expected: type[ProxyError], status: int) -> None:
    mapped = map_anthropic_error(exc)
    assert type(mapped) is expected and mapped.status == status
    if isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 400:
        assert f"anthropic says {exc.status_code}" in mapped.message  # Anthropic's message, not the SDK's wrapper
    if status == 429:
        assert mapped.retry_after == 7


def test_unknown_exception_is_not_mapped() -> None:
    assert map_anthropic_error(RuntimeError("x")) is None
