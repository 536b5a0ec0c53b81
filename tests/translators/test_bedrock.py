"""Pure tests of the Bedrock mapping: requests, responses, stream events, errors, embeddings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore import exceptions as boto_errors

from proxy.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from translators.bedrock import (
    BedrockStreamState,
    from_bedrock_embeddings,
    from_bedrock_event,
    from_bedrock_response,
    from_bedrock_stop_reason,
    map_bedrock_error,
    to_bedrock_embedding_bodies,
    to_bedrock_request,
)
from translators.bedrock.request import bedrock_family

PNG = ("image/png", b"\x89PNG-fake")
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
HISTORY = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": [{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": "u1"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call.2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
    {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "25C"}]},
    {"role": "user", "content": "and now?"},
]


def request(**fields: Any) -> dict[str, Any]:
    return to_bedrock_request({"messages": HISTORY, **fields}, "anthropic.claude-x", {}, {"u1": PNG})


def test_history_with_tools_maps_to_blocks_and_merges_tool_results() -> None:
    params = request(tools=[WEATHER], tool_choice="auto", temperature=0.2, top_p=0.9, stop="END", max_tokens=50)
    assert params["modelId"] == "anthropic.claude-x"
    assert params["system"] == [{"text": "Be terse."}]
    user, assistant, results = params["messages"]
    assert user == {"role": "user", "content": [
        {"text": "What?"}, {"image": {"format": "png", "source": {"bytes": b"\x89PNG-fake"}}}]}
    assert assistant["content"][1] == {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "Rome"}}}
    # consecutive tool results and the next user text become one user turn
    assert results == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "call_1", "content": [{"text": "21C"}]}},
        {"toolResult": {"toolUseId": "call_2", "content": [{"text": "25C"}]}},
        {"text": "and now?"},
    ]}
    assert params["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    assert params["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "get_weather", "description": "Weather now", "inputSchema": {"json": WEATHER["function"]["parameters"]}}}],
        "toolChoice": {"auto": {}}}


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
        (None, {"auto": {}}),
    ],
)
def test_tool_choice(tool_choice: Any, expected: dict[str, Any]) -> None:
    assert request(tools=[WEATHER], tool_choice=tool_choice)["toolConfig"]["toolChoice"] == expected


@pytest.mark.parametrize("fields", [{}, {"tools": [WEATHER], "tool_choice": "none"}])
def test_tool_history_without_tools_is_replayed_as_text(fields: dict[str, Any]) -> None:
    params = request(**fields)
    assert "toolConfig" not in params
    blocks = [b for m in params["messages"] for b in m["content"]]
    assert not any("toolUse" in b or "toolResult" in b for b in blocks)
    assert {"text": '[called tool get_weather with {"city": "Paris"}]'} in blocks
    assert {"text": "[tool result: 21C]"} in blocks


def test_response_format_json_schema_is_a_closed_schema_string() -> None:
    schema = {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}, "$defs": {"N": {"type": "integer", "minimum": 1}}}
    params = request(response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    json_schema = params["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert params["outputConfig"]["textFormat"]["type"] == "json_schema"
    assert json_schema["name"] == "answer"
    assert json.loads(json_schema["schema"]) == {
        "type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
    assert "outputConfig" not in request(response_format={"type": "text"})
    as_object = request(response_format={"type": "json_object"})["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert json.loads(as_object["schema"]) == {"type": "object"}


@pytest.mark.parametrize(
    ("model", "fields", "extra", "max_tokens"),
    [
        ("us.anthropic.claude-sonnet-4-5-v1:0", {"reasoning_effort": "low"},
         {"thinking": {"type": "enabled", "budget_tokens": 2048}}, 2048 + 4096),
        ("anthropic.claude-x", {"reasoning_effort": "high", "max_tokens": 30000, "top_k": 5},
         {"thinking": {"type": "enabled", "budget_tokens": 24576}, "top_k": 5}, 30000),
        ("amazon.nova-2-lite-v1:0", {"reasoning_effort": "xhigh"},
         {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "high"}}, None),
        ("openai.gpt-oss-120b-1:0", {"reasoning_effort": "medium"}, {"reasoning_effort": "medium"}, None),
        ("meta.llama3-70b-instruct-v1:0", {"reasoning_effort": "low", "top_k": 3}, {"top_k": 3}, None),
        ("anthropic.claude-x", {"reasoning_effort": "none"}, None, None),
    ],
)
def test_additional_model_request_fields(model: str, fields: dict[str, Any], extra: Any, max_tokens: Any) -> None:
    params = to_bedrock_request({"messages": [{"role": "user", "content": "x"}], **fields}, model, {}, {})
    assert params.get("additionalModelRequestFields") == extra
    assert params.get("inferenceConfig", {}).get("maxTokens") == max_tokens


def test_deployment_max_tokens_and_thinking_blocks_replay() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "ok", "thinking_blocks": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "redacted_thinking", "data": "AAE="}]},
        {"role": "user", "content": "y"},
    ]
    params = to_bedrock_request({"messages": messages}, "anthropic.claude-x", {"max_tokens": 777}, {})
    assert params["inferenceConfig"] == {"maxTokens": 777}
    assert params["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
        {"reasoningContent": {"redactedContent": b"\x00\x01"}},
        {"text": "ok"},
    ]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u1"}}]}], "messages"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "messages"),
        ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}], "messages"),
    ],
)
def test_invalid_requests(messages: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_bedrock_request({"messages": messages, "tools": [WEATHER]}, "m", {}, {"u1": ("image/bmp", b"")})
    assert info.value.param == param


@pytest.mark.parametrize(
    ("model_id", "family"),
    [("us.anthropic.claude-3-haiku:0", "anthropic"), ("global.anthropic.claude-x", "anthropic"),
     ("arn:aws:bedrock:us-east-1:1:inference-profile/eu.amazon.nova-pro-v1:0", "amazon"),
     ("mistral.mistral-large-2407-v1:0", "mistral"), ("cohere.embed-v4:0", "cohere")],
)
def test_bedrock_family(model_id: str, family: str) -> None:
    assert bedrock_family(model_id) == family


def test_response_with_text_tools_reasoning_and_usage() -> None:
    response = {
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "Thinking.", "signature": "sig-1"}}},
            {"text": "Checking."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 3, "totalTokens": 18, "cacheReadInputTokens": 4,
                  "cacheWriteInputTokens": 1},
        "metrics": {"latencyMs": 42}, "ResponseMetadata": {"RequestId": "abc"},
    }
    result = from_bedrock_response(response)
    assert result["id"] == "chatcmpl-abc"
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["reasoning_content"] == "Thinking."
    assert choice["message"]["thinking_blocks"] == [{"type": "thinking", "thinking": "Thinking.", "signature": "sig-1"}]
    assert choice["message"]["tool_calls"] == [{"id": "tooluse_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert result["usage"] == {"prompt_tokens": 15, "completion_tokens": 3, "total_tokens": 18,
                               "prompt_tokens_details": {"cached_tokens": 4}}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
     ("model_context_window_exceeded", "length"), ("something_new", "stop")],
)
def test_stop_reasons(reason: str, expected: str) -> None:
    assert from_bedrock_stop_reason(reason) == expected


def test_unknown_stop_reason_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert from_bedrock_stop_reason("brand_new", has_tool_calls=True) == "tool_calls"
    assert "brand_new" in caplog.text


STREAM = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Hmm."}}}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"text": "Hel"}}},
    {"contentBlockStop": {"contentBlockIndex": 1}},
    {"contentBlockStart": {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t1", "name": "a"}}}},
    {"contentBlockStart": {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "t2", "name": "b"}}}},
    {"contentBlockDelta": {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{\"y\":"}}}},
    {"contentBlockDelta": {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"x\": 1}"}}}},
    {"contentBlockDelta": {"contentBlockIndex": 3, "delta": {"toolUse": {"input": " 2}"}}}},
    {"messageStop": {"stopReason": "tool_use"}},
    {"metadata": {"usage": {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}, "metrics": {"latencyMs": 1}}},
]


def test_stream_events_to_chunks() -> None:
    state = BedrockStreamState()
    chunks = [c for c in (from_bedrock_event(e, state) for e in STREAM) if c is not None]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"reasoning_content": "Hmm."}
    assert deltas[1] == {"content": "Hel"}
    assert deltas[2]["tool_calls"] == [{"index": 0, "id": "t1", "type": "function", "function": {"name": "a", "arguments": ""}}]
    assert deltas[3]["tool_calls"][0]["index"] == 1
    assert [d["tool_calls"][0] for d in deltas[4:7]] == [
        {"index": 1, "function": {"arguments": "{\"y\":"}}, {"index": 0, "function": {"arguments": "{\"x\": 1}"}},
        {"index": 1, "function": {"arguments": " 2}"}}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1] == {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                                                   "prompt_tokens_details": {"cached_tokens": 0}}}
    assert state.finished


def test_stream_exception_event_raises() -> None:
    with pytest.raises(UpstreamError, match="modelStreamErrorException"):
        from_bedrock_event({"modelStreamErrorException": {"message": "boom"}}, BedrockStreamState())


def client_error(code: str, status: int | None, headers: dict[str, str] | None = None) -> boto_errors.ClientError:
    metadata: dict[str, Any] = {"HTTPHeaders": headers or {}}
    if status is not None:
        metadata["HTTPStatusCode"] = status
    return boto_errors.ClientError({"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": metadata},
                                   "Converse")


@pytest.mark.parametrize(
    ("exc", "status", "retry_after"),
    [
        (client_error("ValidationException", 400), 400, None),
        (client_error("AccessDeniedException", 403), 502, None),
        (client_error("UnrecognizedClientException", 403), 502, None),
        (client_error("ThrottlingException", 429, {"x-amz-retry-after": "1500"}), 429, 1.5),
        (client_error("ThrottlingException", 429, {"retry-after": "3"}), 429, 3.0),
        (client_error("ModelTimeoutException", 408), 504, None),
        (client_error("ServiceUnavailableException", 503), 502, None),
        (client_error("InternalServerException", 500), 502, None),
        (client_error("ModelNotReadyException", 429), 502, None),
        (client_error("ResourceNotFoundException", 404), 404, None),
        (boto_errors.EventStreamError({"Error": {"Code": "throttlingException", "Message": "m"}}, "ConverseStream"), 429, None),
        (boto_errors.EventStreamError({"Error": {"Code": "modelStreamErrorException", "Message": "m"}}, "ConverseStream"),
         502, None),
        (client_error("SomethingNewException", 418), 418, None),
        (client_error("SomethingNewException", None), 502, None),
        (boto_errors.ReadTimeoutError(endpoint_url="http://x"), 504, None),
        (boto_errors.ConnectTimeoutError(endpoint_url="http://x"), 504, None),
        (boto_errors.EndpointConnectionError(endpoint_url="http://x"), 502, None),
        (boto_errors.NoCredentialsError(), 503, None),
    ],
)
def test_map_bedrock_error(exc: BaseException, status: int, retry_after: float | None) -> None:
    error = map_bedrock_error(exc)
    assert error is not None and error.status == status
    assert error.retry_after == retry_after
    if status == 502 and isinstance(exc, boto_errors.ClientError) and "Access" in str(exc):
        assert not error.retryable  # wrong credentials: retrying cannot help


def test_map_bedrock_error_classes_and_unknowns() -> None:
    assert isinstance(map_bedrock_error(client_error("ThrottlingException", 429)), RateLimited)
    assert isinstance(map_bedrock_error(client_error("ModelTimeoutException", 408)), UpstreamTimeout)
    assert map_bedrock_error(ValueError("not boto")) is None


@pytest.mark.parametrize(
    ("model", "fields", "bodies"),
    [
        ("amazon.titan-embed-text-v2:0", {"input": ["a", "b"], "dimensions": 256},
         [{"inputText": "a", "dimensions": 256, "normalize": True}, {"inputText": "b", "dimensions": 256, "normalize": True}]),
        ("amazon.titan-embed-text-v1", {"input": "a"}, [{"inputText": "a"}]),
        ("cohere.embed-english-v3", {"input": ["a", "b"]},
         [{"texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"]}]),
        ("cohere.embed-v4:0", {"input": "q", "input_type": "search_query", "dimensions": 512},
         [{"texts": ["q"], "input_type": "search_query", "embedding_types": ["float"], "output_dimension": 512}]),
    ],
)
def test_embedding_bodies(model: str, fields: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    assert to_bedrock_embedding_bodies(fields, model) == bodies


def test_cohere_embeddings_are_batched_by_96() -> None:
    bodies = to_bedrock_embedding_bodies({"input": [str(i) for i in range(200)]}, "cohere.embed-english-v3")
    assert [len(b["texts"]) for b in bodies] == [96, 96, 8]


@pytest.mark.parametrize(
    ("model", "fields"),
    [("meta.llama3", {"input": "a"}), ("amazon.titan-embed-text-v1", {"input": "a", "dimensions": 8}),
     ("cohere.embed-english-v3", {"input": [[1, 2]]})],
)
def test_embedding_requests_rejected(model: str, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        to_bedrock_embedding_bodies(fields, model)


def test_embedding_responses_with_usage() -> None:
    titan = ({"embedding": [0.1, 0.2], "inputTextTokenCount": 4}, {})
    cohere = ({"embeddings": {"float": [[1.0], [2.0]]}}, {"x-amzn-bedrock-input-token-count": "6"})
    result = from_bedrock_embeddings([titan, cohere])
    assert [d["embedding"] for d in result["data"]] == [[0.1, 0.2], [1.0], [2.0]]
    assert [d["index"] for d in result["data"]] == [0, 1, 2]
    assert result["usage"] == {"prompt_tokens": 10, "total_tokens": 10}
