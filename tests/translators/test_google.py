"""Pure mapping tests for the Google translator, fed bodies shaped like Google's REST docs."""

from __future__ import annotations

import base64
import logging

import httpx2
import orjson
import pytest
from google.genai import errors

from proxy.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from translators.google import (
    GoogleStreamState,
    finish_google_stream,
    from_google_embeddings,
    from_google_event,
    from_google_response,
    from_google_usage,
    map_google_error,
    to_google_contents,
    to_google_embed_request,
    to_google_request,
)
from translators.google.request import SIGNATURE_SEPARATOR, to_google_config, to_google_tool_config
from translators.google.response import from_google_finish_reason

PNG = base64.b64encode(b"\x89PNGfake").decode()
SIG = "c2lnbmF0dXJlLW9mLWEtdGhvdWdodC+/Pz8="  # standard base64 with '+' and '/'


def test_roles_system_and_parts() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "gs://bucket/a.jpg"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        ]},
        {"role": "assistant", "content": "Quoi?"},
    ]
    system, contents = to_google_contents(messages, {"https://example.com/x.png": ("image/webp", b"WEBP")})
    assert system == {"parts": [{"text": "You are terse."}, {"text": "Answer in French."}]}
    assert [c["role"] for c in contents] == ["user", "model"]
    assert contents[0]["parts"] == [
        {"text": "What?"},
        {"inlineData": {"mimeType": "image/png", "data": b"\x89PNGfake"}},
        {"fileData": {"fileUri": "gs://bucket/a.jpg", "mimeType": "image/jpeg"}},
        {"inlineData": {"mimeType": "image/webp", "data": b"WEBP"}},
    ]
    assert contents[1]["parts"] == [{"text": "Quoi?"}]


@pytest.mark.parametrize("part", [
    {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
    {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
    {"type": "image_url", "image_url": {"url": "ftp://host/x.png"}},
])
def test_unsupported_parts_are_400(part: dict) -> None:
    with pytest.raises(InvalidRequest):
        to_google_contents([{"role": "user", "content": [part]}], {})


def test_tool_round_trip_names_signatures_and_grouping() -> None:
    signed_id = "call_abc" + SIGNATURE_SEPARATOR + "c2lnbmF0dXJlLW9mLWEtdGhvdWdodC-_Pz8"
    messages = [
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": signed_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""},
             "extra_content": {"google": {"thought_signature": SIG}}},
            {"id": "call_3", "type": "function", "function": {"name": "noop", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": signed_id, "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
        {"role": "tool", "tool_call_id": "call_3", "content": "[1, 2]"},
        {"role": "user", "content": "thanks"},
    ]
    _, contents = to_google_contents(messages, {})
    assert [c["role"] for c in contents] == ["user", "model", "user", "user"]
    raw_sig = base64.b64decode(SIG)
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": raw_sig},
        {"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": raw_sig},
        {"functionCall": {"name": "noop", "args": {}}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
        {"functionResponse": {"name": "noop", "response": {"output": [1, 2]}}},
    ]
    assert contents[3]["parts"] == [{"text": "thanks"}]


def test_tool_result_for_unknown_call_is_400() -> None:
    with pytest.raises(InvalidRequest, match="unknown tool_call_id"):
        to_google_contents([{"role": "tool", "tool_call_id": "nope", "content": "x"}], {})


def test_tools_schema_and_tool_choice() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"where": {"$ref": "#/$defs/Place"}}, "$defs": {"Place": {"type": "string"}}}
    request = {"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function", "function": {"name": "f"}},
               "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": schema}}]}
    _, config = to_google_request(request, {})
    assert config["tools"] == [{"functionDeclarations": [{"name": "f", "description": "d", "parametersJsonSchema": {
        "type": "object", "properties": {"where": {"type": "string"}}}}]}]
    assert config["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}
    assert config["automaticFunctionCalling"] == {"disable": True}


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")])
def test_tool_choice_modes(choice: str, mode: str) -> None:
    assert to_google_tool_config(choice) == {"functionCallingConfig": {"mode": mode}}


def test_generation_config_and_response_format() -> None:
    config = to_google_config({
        "temperature": 0.2, "top_p": 0.9, "top_k": 5, "max_tokens": 50, "stop": "END", "seed": 7, "n": 2,
        "presence_penalty": 0.1, "frequency_penalty": 0.3, "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                                   "schema": {"type": "object", "strict": True}}},
    })
    assert config == {
        "temperature": 0.2, "topP": 0.9, "topK": 5, "maxOutputTokens": 50, "stopSequences": ["END"], "seed": 7,
        "candidateCount": 2, "presencePenalty": 0.1, "frequencyPenalty": 0.3,
        "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
        "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True},
        "automaticFunctionCalling": {"disable": True},
    }
    assert to_google_config({"response_format": {"type": "json_object"}, "max_completion_tokens": 9,
                             "reasoning_effort": "none"}) == {
        "responseMimeType": "application/json", "maxOutputTokens": 9,
        "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}, "automaticFunctionCalling": {"disable": True},
    }


def test_response_text_thoughts_calls_and_usage() -> None:
    response = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Hmm.", "thought": True},
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 6,
                          "cachedContentTokenCount": 3, "totalTokenCount": 20},
        "modelVersion": "gemini-2.5-flash", "responseId": "resp-1",
    }
    out = from_google_response(response, "gemini-x")
    message = out["choices"][0]["message"]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] == "Checking." and message["reasoning_content"] == "Hmm."
    first, second = message["tool_calls"]
    assert first["id"].startswith("call_") and SIGNATURE_SEPARATOR in first["id"]
    assert first["extra_content"] == {"google": {"thought_signature": SIG}}
    assert orjson.loads(first["function"]["arguments"]) == {"city": "Paris"}
    assert SIGNATURE_SEPARATOR not in second["id"] and "extra_content" not in second
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20,
                            "prompt_tokens_details": {"cached_tokens": 3},
                            "completion_tokens_details": {"reasoning_tokens": 6}}
    # the call goes back with its signature on the next turn
    _, contents = to_google_contents([{"role": "assistant", "tool_calls": [first]}], {})
    assert contents[0]["parts"][0]["thoughtSignature"] == base64.b64decode(SIG)


def test_ids_unique_across_responses() -> None:
    response = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP"}]}
    ids = {from_google_response(response, "m")["choices"][0]["message"]["tool_calls"][0]["id"] for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize(("reason", "calls", "expected"), [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
    ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"), ("BLOCKLIST", False, "content_filter"),
    ("PROHIBITED_CONTENT", False, "content_filter"), ("SPII", False, "content_filter"),
])
def test_finish_reasons(reason: str, calls: bool, expected: str) -> None:
    assert from_google_finish_reason(reason, calls) == expected


def test_unknown_finish_reason_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="omni.translators"):
        assert from_google_finish_reason("MALFORMED_FUNCTION_CALL", False) == "stop"
    assert "MALFORMED_FUNCTION_CALL" in caplog.text


def test_blocked_prompt_is_content_filter() -> None:
    out = from_google_response({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}]


def test_usage_without_optional_counts() -> None:
    assert from_google_usage({"promptTokenCount": 4, "candidatesTokenCount": 2}) == {
        "prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert from_google_usage(None) is None


def test_stream_state_machine_parallel_calls_and_finish() -> None:
    events = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Think", "thought": True}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me check."}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": SIG}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "b", "args": {}}}, {"functionCall": {"name": "c", "args": {}}}]},
            "finishReason": "STOP", "index": 0}],
         "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12}},
    ]
    state = GoogleStreamState()
    chunks = [c for c in (from_google_event(e, state) for e in events) if c] + finish_google_stream(state)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"reasoning_content": "Think"} and deltas[1] == {"content": "Let me check."}
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert [c["function"]["name"] for c in calls] == ["a", "b", "c"]
    assert all(c["id"] and c["type"] == "function" for c in calls) and len({c["id"] for c in calls}) == 3
    assert calls[0]["extra_content"] == {"google": {"thought_signature": SIG}}
    finishing = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert finishing == [chunks[-2]] and chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1] == {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


def test_stream_without_finish_reports_none() -> None:
    state = GoogleStreamState()
    assert from_google_event({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}, state)
    assert finish_google_stream(state) == []


def test_stream_two_candidates_finish_in_one_chunk() -> None:
    state = GoogleStreamState()
    from_google_event({"candidates": [
        {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}]}, state)
    assert finish_google_stream(state) == [{"choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}, {"index": 1, "delta": {}, "finish_reason": "length"}]}]


def test_embeddings_mapping() -> None:
    texts, config = to_google_embed_request({"input": "hello", "dimensions": 3, "task_type": "retrieval_query"})
    assert texts == ["hello"] and config == {"outputDimensionality": 3, "taskType": "RETRIEVAL_QUERY"}
    with pytest.raises(InvalidRequest):
        to_google_embed_request({"input": [[1, 2, 3]]})
    out = from_google_embeddings({"embeddings": [{"values": [0.1, 0.2], "statistics": {"tokenCount": 3}}]}, "m")
    assert out["data"] == [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def _api_error(code: int, headers: dict[str, str] | None = None) -> errors.APIError:
    status = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}.get(code, "INTERNAL")
    body = {"error": {"code": code, "message": f"google says {code}", "status": status}}
    response = httpx2.Response(code, headers=headers or {}, json=body)
    cls = errors.ClientError if code < 500 else errors.ServerError
    return cls(code, body, response)


@pytest.mark.parametrize(("exc", "status", "cls"), [
    (_api_error(400), 400, InvalidRequest),
    (_api_error(404), 404, InvalidRequest),
    (_api_error(401), 502, UpstreamError),
    (_api_error(403), 502, UpstreamError),
    (_api_error(429, {"retry-after": "3"}), 429, RateLimited),
    (_api_error(500), 502, UpstreamError),
    (_api_error(503), 502, UpstreamError),
    (httpx2.ReadTimeout("slow"), 504, UpstreamTimeout),
    (httpx2.ConnectError("refused"), 502, UpstreamError),
])
def test_error_table(exc: BaseException, status: int, cls: type) -> None:
    mapped = map_google_error(exc)
    assert isinstance(mapped, cls) and mapped.status == status
    if isinstance(exc, errors.APIError) and exc.code in (400, 404):
        assert mapped.message == f"google says {exc.code}"
    if isinstance(mapped, RateLimited):
        assert mapped.retry_after == 3


def test_unknown_exception_is_not_mapped() -> None:
    assert map_google_error(KeyError("x")) is None
