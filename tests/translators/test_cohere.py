"""Pure mapping tests for the Cohere v2 translator, fed bodies and events shaped like Cohere's docs."""

from __future__ import annotations

from typing import Any

import cohere
import httpx
import pytest

from proxy.errors import InvalidRequest, ProxyError, RateLimited, UpstreamError, UpstreamTimeout
from translators.cohere import (
    CohereStreamState,
    from_cohere_embed_response,
    from_cohere_event,
    from_cohere_finish_reason,
    from_cohere_response,
    from_cohere_usage,
    map_cohere_error,
    to_cohere_embed_request,
    to_cohere_request,
)

USER = {"role": "user", "content": "hi"}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "w", "strict": True,
                                                  "parameters": {"type": "object"}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.mark.parametrize(("request_fields", "expected"), [
    ({"top_p": 0.9, "top_k": 5, "temperature": 0.2, "seed": 7}, {"p": 0.9, "k": 5, "temperature": 0.2, "seed": 7}),
    ({"frequency_penalty": 0.1, "presence_penalty": 0.2}, {"frequency_penalty": 0.1, "presence_penalty": 0.2}),
    ({"max_tokens": 50}, {"max_tokens": 50}),
    ({"max_completion_tokens": 60, "max_tokens": 50}, {"max_tokens": 60}),
    ({"stop": "END"}, {"stop_sequences": ["END"]}),
    ({"stop": ["A", "B"]}, {"stop_sequences": ["A", "B"]}),
    ({"response_format": {"type": "text"}}, {}),
    ({"response_format": {"type": "json_object"}}, {"response_format": {"type": "json_object"}}),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}},
     {"response_format": {"type": "json_object", "json_schema": {"type": "object"}}}),
    ({"tools": [TIME_TOOL], "tool_choice": "auto"},
     {"tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]}),
    ({"tools": [TIME_TOOL], "tool_choice": "required"}, {"tools": [TIME_TOOL], "tool_choice": "REQUIRED"}),
    ({"tools": [TIME_TOOL], "tool_choice": "none"}, {"tools": [TIME_TOOL], "tool_choice": "NONE"}),
    ({"tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     {"tools": [TIME_TOOL], "tool_choice": "REQUIRED", "strict_tools": True}),
    ({"tools": [WEATHER_TOOL]}, {"strict_tools": True, "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "w", "parameters": {"type": "object"}}}]}),
    ({"reasoning_effort": "low"}, {"thinking": {"type": "enabled", "token_budget": 2048}}),
    ({"reasoning_effort": "none"}, {"thinking": {"type": "disabled"}}),
])
def test_request_params(request_fields: dict[str, Any], expected: dict[str, Any]) -> None:
    kwargs = to_cohere_request({"messages": [USER], **request_fields}, "command-a")
    assert kwargs == {"model": "command-a", "messages": [{"role": "user", "content": "hi"}], **expected}


@pytest.mark.parametrize(("message", "expected"), [
    ({"role": "system", "content": "Be terse."}, {"role": "system", "content": "Be terse."}),
    ({"role": "developer", "content": [{"type": "text", "text": "Be terse."}]}, {"role": "system", "content": "Be terse."}),
    ({"role": "user", "content": [{"type": "text", "text": "What?"},
                                  {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                                  {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}]},
     {"role": "user", "content": [{"type": "text", "text": "What?"},
                                  {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                                  {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}]}),
    ({"role": "assistant", "content": "Hello"}, {"role": "assistant", "content": "Hello"}),
    ({"role": "assistant", "content": None, "reasoning_content": "I will call get_weather.",
      "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
     {"role": "assistant", "tool_plan": "I will call get_weather.",
      "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}),
    ({"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
     {"role": "tool", "tool_call_id": "c1", "content": [{"type": "document", "document": {"data": {"temp": 21}}}]}),
    ({"role": "tool", "tool_call_id": "c1", "content": "sunny"},
     {"role": "tool", "tool_call_id": "c1", "content": [{"type": "document", "document": {"data": {"result": "sunny"}}}]}),
    ({"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "[1, 2]"}]},
     {"role": "tool", "tool_call_id": "c1", "content": [{"type": "document", "document": {"data": {"result": [1, 2]}}}]}),
])
def test_messages(message: dict[str, Any], expected: dict[str, Any]) -> None:
    assert to_cohere_request({"messages": [message]}, "m")["messages"] == [expected]


@pytest.mark.parametrize(("request_fields", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]}, "messages"),
    ({"messages": [USER], "tools": [TIME_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"messages": [USER], "response_format": {"type": "xml"}}, "response_format"),
    ({"messages": [{"role": "narrator", "content": "x"}]}, "messages"),
])
def test_invalid_requests(request_fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_cohere_request(request_fields, "m")
    assert info.value.param == param


@pytest.mark.parametrize(("reason", "expected"), [
    ("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls"),
    ("SOMETHING_NEW", "stop"),
])
def test_finish_reasons(reason: str, expected: str) -> None:
    assert from_cohere_finish_reason(reason) == expected


@pytest.mark.parametrize(("reason", "status"), [("ERROR", 502), ("TIMEOUT", 504)])
def test_failed_finish_reasons_raise(reason: str, status: int) -> None:
    with pytest.raises(ProxyError, match="boom") as info:
        from_cohere_finish_reason(reason, "boom")
    assert info.value.status == status


@pytest.mark.parametrize(("usage", "expected"), [
    ({"billed_units": {"input_tokens": 5, "output_tokens": 2}, "tokens": {"input_tokens": 70, "output_tokens": 3}},
     {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
    ({"tokens": {"input_tokens": 70, "output_tokens": 3}}, {"prompt_tokens": 70, "completion_tokens": 3, "total_tokens": 73}),
    ({"billed_units": {"input_tokens": 5}, "tokens": {"input_tokens": 70, "output_tokens": 3}},
     {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}),
    ({"billed_units": {"input_tokens": 5.0, "output_tokens": 1.0}, "cached_tokens": 4.0},
     {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "prompt_tokens_details": {"cached_tokens": 4}}),
    (None, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
])
def test_usage(usage: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert from_cohere_usage(usage) == expected


USAGE = {"billed_units": {"input_tokens": 5, "output_tokens": 2}, "tokens": {"input_tokens": 70, "output_tokens": 2}}


def test_response_text_and_thinking() -> None:
    result = from_cohere_response({"id": "c1", "finish_reason": "COMPLETE", "usage": USAGE, "message": {
        "role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Hello"}]}}, "m")
    assert result["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello", "reasoning_content": "hmm"}}]
    assert result["object"] == "chat.completion" and result["usage"]["total_tokens"] == 7


def test_response_tool_calls_with_plan() -> None:
    calls = [{"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
             {"type": "function", "function": {"name": "get_time"}}]
    result = from_cohere_response({"id": "c1", "finish_reason": "TOOL_CALL", "message": {
        "role": "assistant", "tool_plan": "I will call two tools.", "tool_calls": calls}}, "m")
    message = result["choices"][0]["message"]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None and message["reasoning_content"] == "I will call two tools."
    assert message["tool_calls"][0] == calls[0]
    assert message["tool_calls"][1]["id"].startswith("call_")
    assert message["tool_calls"][1]["function"] == {"name": "get_time", "arguments": "{}"}


def test_response_error_finish_raises() -> None:
    with pytest.raises(UpstreamError):
        from_cohere_response({"id": "c1", "finish_reason": "ERROR", "message": {"role": "assistant"}}, "m")


def _start(i: int, call_id: str, name: str) -> dict[str, Any]:
    return {"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": {
        "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}}}}


def _args(i: int, fragment: str) -> dict[str, Any]:
    return {"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": fragment}}}}}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# The documented tool-use stream: a plan, then two tool calls with argument fragments.
TOOL_STREAM: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({"type": "message-start", "id": "c1", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "",
                                                                 "tool_calls": [], "citations": []}}}, None),
    ({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will check "}}}, _chunk({"reasoning_content": "I will check "})),
    ({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "both."}}}, _chunk({"reasoning_content": "both."})),
    (_start(0, "get_weather_1", "get_weather"), _chunk({"tool_calls": [{"index": 0, "id": "get_weather_1", "type": "function",
                                                                        "function": {"name": "get_weather", "arguments": ""}}]})),
    (_args(0, '{"city": '), _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]})),
    (_args(0, '"Paris"}'), _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})),
    ({"type": "tool-call-end", "index": 0}, None),
    (_start(1, "get_time_2", "get_time"), _chunk({"tool_calls": [{"index": 1, "id": "get_time_2", "type": "function",
                                                                  "function": {"name": "get_time", "arguments": ""}}]})),
    (_args(1, '{"tz": "CET"}'), _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}]})),
    ({"type": "tool-call-end", "index": 1}, None),
    ({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": USAGE}},
     {**_chunk({}, "tool_calls"), "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
]

TEXT_STREAM: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({"type": "message-start", "id": "c2", "delta": {"message": {"role": "assistant"}}}, None),
    ({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}, None),
    ({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hel"}}}}, _chunk({"content": "Hel"})),
    ({"type": "citation-start", "index": 0, "delta": {"message": {"citations": {"start": 0, "end": 3, "text": "Hel"}}}}, None),
    ({"type": "citation-end", "index": 0}, None),
    ({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "lo"}}}}, _chunk({"content": "lo"})),
    ({"type": "content-end", "index": 0}, None),
    ({"type": "message-end", "delta": {"finish_reason": "MAX_TOKENS", "usage": {"tokens": {"input_tokens": 3, "output_tokens": 2}}}},
     {**_chunk({}, "length"), "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
]

THINKING_STREAM: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}}, None),
    ({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "hmm"}}}},
     _chunk({"reasoning_content": "hmm"})),
    ({"type": "some-future-event"}, None),
    ({"type": "message-end", "delta": {"finish_reason": "COMPLETE"}},
     {**_chunk({}, "stop"), "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}),
]


@pytest.mark.parametrize("sequence", [TOOL_STREAM, TEXT_STREAM, THINKING_STREAM], ids=["tools", "text", "thinking"])
def test_stream_sequences(sequence: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
    state = CohereStreamState()
    for event, expected in sequence:
        assert from_cohere_event(event, state) == expected, event["type"]
    assert state.finished


def test_stream_synthesizes_missing_tool_call_id() -> None:
    event = {"type": "tool-call-start", "index": 3, "delta": {"message": {"tool_calls": {"function": {"name": "f"}}}}}
    chunk = from_cohere_event(event, CohereStreamState())
    call = chunk["choices"][0]["delta"]["tool_calls"][0]  # type: ignore[index]
    assert call["index"] == 0 and call["id"].startswith("call_")


@pytest.mark.parametrize(("event", "error"), [
    ({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "model crashed"}}, UpstreamError),
    ({"type": "message-end", "delta": {"finish_reason": "TIMEOUT"}}, UpstreamTimeout),
    (_args(7, "{}"), UpstreamError),
])
def test_stream_failures_raise(event: dict[str, Any], error: type[ProxyError]) -> None:
    with pytest.raises(error):
        from_cohere_event(event, CohereStreamState())


@pytest.mark.parametrize(("request_fields", "expected"), [
    ({"input": "a"}, {"texts": ["a"], "input_type": "search_document"}),
    ({"input": ["a", "b"], "input_type": "search_query", "dimensions": 256},
     {"texts": ["a", "b"], "input_type": "search_query", "output_dimension": 256}),
])
def test_embed_request(request_fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert to_cohere_embed_request(request_fields, "embed-v4.0") == {
        "model": "embed-v4.0", "embedding_types": ["float"], **expected}


def test_embed_request_rejects_token_arrays() -> None:
    with pytest.raises(InvalidRequest):
        to_cohere_embed_request({"input": [[1, 2, 3]]}, "embed-v4.0")


def test_embed_response() -> None:
    result = from_cohere_embed_response({"id": "e1", "response_type": "embeddings_by_type", "texts": ["a", "b"],
                                         "embeddings": {"float": [[0.5, 1.0], [2.0, 3.0]]},
                                         "meta": {"billed_units": {"input_tokens": 4}}}, "embed-v4.0")
    assert result == {"object": "list", "model": "embed-v4.0", "usage": {"prompt_tokens": 4, "total_tokens": 4}, "data": [
        {"object": "embedding", "index": 0, "embedding": [0.5, 1.0]},
        {"object": "embedding", "index": 1, "embedding": [2.0, 3.0]}]}


BODY = {"id": "x", "message": "scripted"}


@pytest.mark.parametrize(("exc", "status", "message"), [
    (cohere.BadRequestError(body=BODY), 400, "scripted"),
    (cohere.UnprocessableEntityError(body=BODY), 422, "scripted"),
    (cohere.NotFoundError(body=BODY), 404, "scripted"),
    (cohere.UnauthorizedError(body=BODY), 502, "credentials"),
    (cohere.ForbiddenError(body=BODY), 502, "credentials"),
    (cohere.InvalidTokenError(body=BODY), 502, "credentials"),
    (cohere.TooManyRequestsError(body=BODY, headers={"Retry-After": "3"}), 429, "scripted"),
    (cohere.InternalServerError(body=BODY), 502, "scripted"),
    (cohere.ServiceUnavailableError(body="overloaded"), 502, "overloaded"),
    (cohere.GatewayTimeoutError(body=None), 504, "HTTP 504"),
    (cohere.core.api_error.ApiError(status_code=502, body=BODY), 502, "scripted"),
    (cohere.core.api_error.ApiError(status_code=200, body="<html>"), 502, "malformed"),
    (cohere.core.http_sse.SSEError("not an event stream"), 502, "malformed stream"),
    (httpx.ReadTimeout("slow"), 504, "timed out"),
    (httpx.ConnectError("refused"), 502, "connect"),
    (httpx.RemoteProtocolError("peer closed"), 502, "connection lost"),
])
def test_error_table(exc: BaseException, status: int, message: str) -> None:
    error = map_cohere_error(exc)
    assert error is not None and error.status == status and message in error.message


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "3"}, 3.0), ({"retry-after-ms": "1500"}, 1.5), ({}, None), (None, None)])
def test_rate_limit_retry_after(headers: dict[str, str] | None, seconds: float | None) -> None:
    error = map_cohere_error(cohere.TooManyRequestsError(body=BODY, headers=headers))
    assert isinstance(error, RateLimited) and error.retry_after == seconds


def test_unknown_exceptions_are_not_mapped() -> None:
    assert map_cohere_error(ValueError("x")) is None
