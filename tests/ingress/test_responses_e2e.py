"""End to end: the openai SDK's `client.responses` against `omni-llm serve` on /v1/responses, routed to the
OpenAI, Bedrock, Gemini and Anthropic fakes."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes.server import Recorder
from tests.ingress.conftest import GATEWAY_KEY
from tests.proxy_server import RunningProxy

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}
CHAT = {"gpt": "oai", "bedrock": "aws", "gemini": "gem", "claude": "ant"}
TOOLS = {"gpt-tools": "oai", "bedrock-tools": "aws", "gemini-tools": "gem", "claude-tools": "ant"}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
          "additionalProperties": False}
LONG = " ".join(f"word{i}" for i in range(60))


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key=GATEWAY_KEY, max_retries=0)


@pytest.mark.parametrize("model", list(CHAT))
def test_text_every_provider(client: openai.OpenAI, model: str) -> None:
    response = client.responses.create(model=model, input="hello there", instructions="Be terse.",
                                       max_output_tokens=100)
    assert response.object == "response" and response.model == model and response.status == "completed"
    assert response.output_text == "echo: hello there"
    assert response.output[0].type == "message" and response.output[0].content[0].type == "output_text"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.instructions == "Be terse." and response.max_output_tokens == 100 and response.store is False


@pytest.mark.parametrize("model", list(CHAT))
def test_stream_every_provider_is_whole(client: openai.OpenAI, model: str) -> None:
    with client.responses.stream(model=model, input=LONG) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == f"echo: {LONG}" == final.output_text
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == f"echo: {LONG}"
    assert final.status == "completed" and final.usage is not None and final.usage.output_tokens > 0
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


@pytest.mark.parametrize("model", list(TOOLS))
@pytest.mark.parametrize("streamed", [False, True])
def test_tools_every_provider(client: openai.OpenAI, model: str, streamed: bool,
                              fakes: dict[str, tuple[str, Recorder]]) -> None:
    kwargs: dict[str, Any] = dict(model=model, input="weather and time?", tools=[WEATHER, TIME], tool_choice="auto")
    if streamed:
        with client.responses.stream(**kwargs) as stream:
            events = list(stream)
            response = stream.get_final_response()
        assert any(e.type == "response.function_call_arguments.delta" for e in events)
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert [orjson.loads(e.arguments) for e in done] == [{"city": "Paris"}, {"tz": "CET"}]
    else:
        response = client.responses.create(**kwargs)
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                     ("get_time", {"tz": "CET"})]
    assert all(c.call_id and c.id for c in calls) and len({c.call_id for c in calls}) == 2
    if TOOLS[model] == "oai":
        sent = fakes["oai"][1].last().body
        assert sent["tools"][0] == {"type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER["parameters"],
            "strict": True}}
        assert sent["tool_choice"] == "auto"


def test_history_items_map_to_chat(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]) -> None:
    history: Any = [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": '{"tz":"CET"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "21C"},
        {"type": "function_call_output", "call_id": "call_b", "output": "noon"},
        {"role": "user", "content": "so?"},
    ]
    response = client.responses.create(model="gpt", input=history, tools=[WEATHER, TIME],
                                       reasoning={"effort": "low"}, max_output_tokens=50, temperature=0.2)
    assert response.output_text == "echo: so?"
    sent = fakes["oai"][1].last().body
    assert sent["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {
            "url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "21C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
        {"role": "user", "content": "so?"},
    ]
    assert sent["reasoning_effort"] == "low" and sent["max_completion_tokens"] == 50 and sent["temperature"] == 0.2


def test_history_items_are_valid_for_anthropic(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]) -> None:
    """The Anthropic fake enforces alternation and tool-id pairing, so a wrongly grouped history is a 400."""
    history: Any = [
        {"role": "user", "content": "weather and time?"},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "21C"},
        {"type": "function_call_output", "call_id": "call_b", "output": "noon"},
    ]
    response = client.responses.create(model="claude", input=history, tools=[WEATHER, TIME])
    assert response.status == "completed"
    sent = fakes["ant"][1].last().body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent["messages"][2]["content"]] == ["tool_result", "tool_result"]


@pytest.mark.parametrize(("model", "key", "expected"), [
    ("gpt", "oai", lambda body: body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": SCHEMA, "strict": True}}),
    ("claude", "ant", lambda body: body["output_config"]["format"]["type"] == "json_schema"),
    ("gemini", "gem", lambda body: "answer" in orjson.dumps(body["generationConfig"]).decode()),
    ("bedrock", "aws", lambda body: "answer" in orjson.dumps(body["outputConfig"]["textFormat"]).decode()),
])
def test_json_schema_text_format(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]], model: str, key: str,
                                 expected: Any) -> None:
    response = client.responses.create(model=model, input="how much?", text={"format": {
        "type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}})
    assert response.text.format.type == "json_schema"
    assert expected(fakes[key][1].last().body)


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"store": True}, "store"),
])
def test_stateless_refusals(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt", input="hi", **extra)
    assert "stateless" in caught.value.message and caught.value.body["param"] == param  # type: ignore[index]


@pytest.mark.parametrize(("payload", "status"), [
    ({"model": "gpt", "input": "hi", "tools": [{"type": "web_search"}]}, 400),
    ({"model": "gpt", "input": [{"type": "item_reference", "id": "msg_1"}]}, 400),
    ({"model": "gpt", "input": 7}, 400),
    ({"model": "nope", "input": "hi"}, 404),
])
def test_bad_requests_in_openai_shape(proxy: RunningProxy, payload: Any, status: int) -> None:
    response = httpx.post(proxy.v1 + "/responses", json=payload, headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_error_after_first_byte(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-midstream", input="one two three", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: one"
    assert events[-1].response.status == "failed" and events[-2].message


def test_reasoning_streams_as_reasoning_item(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gemini-think", input="think", reasoning={"effort": "low"}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.reasoning_text.delta" in kinds
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text and final.output_text
