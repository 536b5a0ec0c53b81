"""Pure tests of the mock: schema instances (validated by jsonschema), the answer plan, chunks, embeddings."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from proxy.config import Deployment, ProviderConfig
from proxy.errors import InvalidRequest
from proxy.router import prepare_request
from proxy.streaming import StreamRelay
from translators.mock import MockProvider, instance_of, plan_mock_answer
from translators.mock.provider import to_mock_embedding_inputs

TEXT = "Tell me about Paris"


class Address(BaseModel):
    city: str
    zip_code: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    kind: Literal["person", "company"]
    address: Address | None
    friends: list[Person]  # recursive through $defs
    score: float = Field(gt=0, lt=1)


class Items(BaseModel):
    items: list[Address]


SCHEMAS: list[tuple[str, Any]] = [
    ("string", {"type": "string"}),
    ("string max", {"type": "string", "maxLength": 5}),
    ("string min", {"type": "string", "minLength": 60}),
    ("pattern", {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"}),
    ("pattern alternation", {"type": "string", "pattern": r"^(red|green)\s[a-f0-9]{2,}$"}),
    ("pattern negated class", {"type": "string", "pattern": r"^[^a-z]+$"}),
    ("formats", {"type": "object", "properties": {f: {"type": "string", "format": f} for f in
                 ("date", "date-time", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname")}}),
    ("integer bounds", {"type": "integer", "minimum": 1, "maximum": 5}),
    ("integer exclusive", {"type": "integer", "exclusiveMinimum": 100}),
    ("integer multipleOf", {"type": "integer", "minimum": 7, "maximum": 30, "multipleOf": 5}),
    ("number exclusive both", {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001}),
    ("number multipleOf float", {"type": "number", "minimum": 0.3, "maximum": 0.9, "multipleOf": 0.25}),
    ("number below", {"type": "number", "maximum": -10}),
    ("draft4 exclusive bool", {"type": "integer", "minimum": 10, "exclusiveMinimum": True, "maximum": 11}),
    ("boolean", {"type": "boolean"}),
    ("null", {"type": "null"}),
    ("type list", {"type": ["null", "integer"], "minimum": 3}),
    ("enum", {"enum": ["low", "mid", "high"]}),
    ("const", {"const": {"fixed": [1, 2]}}),
    ("no type, object keywords", {"properties": {"a": {"type": "integer"}}, "required": ["a", "b"]}),
    ("required without properties", {"type": "object", "required": ["x"], "additionalProperties": {"type": "integer"}}),
    ("minProperties", {"type": "object", "minProperties": 3, "additionalProperties": {"type": "boolean"}}),
    ("array bounds", {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 4}),
    ("array unique enum", {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 3, "uniqueItems": True}),
    ("array unique strings", {"type": "array", "items": {"type": "string"}, "minItems": 2, "uniqueItems": True}),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}], "items": False}),
    ("contains", {"type": "array", "items": {"type": ["string", "integer"]}, "contains": {"type": "integer"}}),
    ("anyOf nullable", {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 3}]}),
    ("oneOf", {"oneOf": [{"type": "integer", "minimum": 10}, {"type": "string", "format": "email"}]}),
    ("allOf merge", {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                               {"properties": {"b": {"type": "integer", "maximum": 0}}, "required": ["b"]}]}),
    ("allOf numbers", {"allOf": [{"type": "number", "minimum": 5}, {"type": "integer", "maximum": 6}]}),
    ("ref siblings", {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 4}),
    ("definitions draft7", {"definitions": {"n": {"type": "integer", "minimum": 3}},
                            "type": "object", "properties": {"n": {"$ref": "#/definitions/n"}}}),
    ("recursive tree", {"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["value", "children"], "additionalProperties": False}}, "$ref": "#/$defs/node"}),
    ("recursive via anyOf", {"$defs": {"list": {"type": "object", "properties": {
        "head": {"type": "integer"}, "tail": {"anyOf": [{"$ref": "#/$defs/list"}, {"type": "null"}]}},
        "required": ["head", "tail"]}}, "$ref": "#/$defs/list"}),
    ("items wrapper", {"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": ["integer", "null"]}},
        "required": ["name", "age"], "additionalProperties": False}}},
        "required": ["items"], "additionalProperties": False}),
    ("pydantic Person (strict)", to_strict_json_schema(Person)),
    ("pydantic Items (strict)", to_strict_json_schema(Items)),
    ("true schema", True),
    ("empty schema", {}),
]


@pytest.mark.parametrize(("name", "schema"), SCHEMAS, ids=[s[0] for s in SCHEMAS])
def test_instance_is_valid_for_schema(name: str, schema: Any) -> None:
    value = instance_of(schema, TEXT)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    if name == "draft4 exclusive bool":
        validator = jsonschema.Draft4Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert not errors, f"{name}: {value!r} -> {errors}"
    assert json.loads(json.dumps(value)) == value  # plain JSON
    assert instance_of(schema, TEXT) == value  # deterministic


def test_instance_carries_text_everywhere_it_may() -> None:
    value = instance_of(to_strict_json_schema(Person), TEXT)
    assert value["name"] == TEXT
    assert value["address"] is not None and value["address"]["city"] == TEXT  # Optional shows its value
    assert value["address"]["zip_code"] == "00000"  # the pattern wins over the text
    assert set(value) == {"name", "age", "kind", "address", "friends", "score"}
    assert value["kind"] == "person" and 0 <= value["age"] <= 130
    # the root is Person, and so is its $defs entry: one level through the ref, then required keys only
    friend = value["friends"][0]
    assert len(value["friends"]) == 1 and friend["friends"][0]["friends"] == []  # recursion ends
    assert friend["friends"][0]["address"] is None
    assert instance_of({"type": "string", "maxLength": 4}, TEXT) == "Tell"
    assert instance_of({"type": "object", "properties": {"q": {"type": "string"}}}, "") == {"q": "hello"}


def _request(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": TEXT}], **fields}


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "clock__get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
NO_PARAMS = {"type": "function", "function": {"name": "ping"}}


def _ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **fields}


# (case, request, expected tool names called, expected text start or None)
TOOL_CASES: list[tuple[str, dict[str, Any], list[str], str | None]] = [
    ("required -> first tool", _request(tools=[WEATHER, TIME], tool_choice="required"), ["get_weather"], None),
    ("required, one named -> that one", _ask("use get_time", tools=[WEATHER, TIME], tool_choice="required"),
     ["clock__get_time"], None),
    ("named", _request(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "clock__get_time"}}),
     ["clock__get_time"], None),
    ("auto, not named -> text", _request(tools=[WEATHER, TIME]), [], "You said: "),
    ("auto, named", _ask("please use get_weather for Paris", tools=[WEATHER, TIME], tool_choice="auto"),
     ["get_weather"], None),
    ("auto, MCP short name", _ask("what is get_time in UTC?", tools=[WEATHER, TIME]), ["clock__get_time"], None),
    ("auto, two named -> parallel", _ask("use get_weather and clock__get_time", tools=[WEATHER, TIME]),
     ["get_weather", "clock__get_time"], None),
    ("auto, two named, parallel off", _ask("use get_weather and get_time", tools=[WEATHER, TIME],
                                          parallel_tool_calls=False), ["get_weather"], None),
    ("name inside a word is no mention", _ask("use get_weathers", tools=[WEATHER]), [], "You said: "),
    ("none", _ask("use get_weather", tools=[WEATHER], tool_choice="none"), [], "You said: "),
    ("no parameters", _ask("ping", tools=[NO_PARAMS]), ["ping"], None),
    ("allowed_tools required", _request(tools=[WEATHER, TIME], tool_choice={
        "type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {
            "name": "clock__get_time"}}]}}), ["clock__get_time"], None),
    ("after tool result -> text quoting it", {"model": "m", "tools": [WEATHER], "tool_choice": "required", "messages": [
        {"role": "user", "content": "use get_weather"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18 degrees and sunny"}]}, [],
     "Tool results: get_weather returned: 18 degrees and sunny"),
]


@pytest.mark.parametrize(("case", "request_body", "names", "text"), TOOL_CASES, ids=[c[0] for c in TOOL_CASES])
def test_tool_choice(case: str, request_body: dict[str, Any], names: list[str], text: str | None) -> None:
    answer = plan_mock_answer(request_body, None)
    assert [c.name for c in answer.tool_calls] == names
    tools = {t["function"]["name"]: t["function"] for t in request_body.get("tools", [])}
    for call in answer.tool_calls:
        arguments = json.loads(call.arguments)
        jsonschema.validate(arguments, tools[call.name].get("parameters") or {"type": "object"})
        assert call.id.startswith("call_")
    assert len({c.id for c in answer.tool_calls}) == len(answer.tool_calls)
    if names:
        assert answer.finish == "tool_calls" and answer.content is None
    else:
        assert answer.finish == "stop" and answer.content is not None and answer.content.startswith(text or "")


def test_tool_arguments_carry_the_user_message() -> None:
    answer = plan_mock_answer(_ask("use get_weather in Paris", tools=[WEATHER]), None)
    assert json.loads(answer.tool_calls[0].arguments) == {"city": "use get_weather in Paris", "unit": "celsius"}


def test_unknown_named_tool_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        plan_mock_answer(_request(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), None)
    assert info.value.param == "tool_choice"


def test_two_tool_results_are_both_quoted() -> None:
    messages = [
        {"role": "user", "content": "use get_weather and get_time"},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "clock__get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "noon"}]},
    ]
    answer = plan_mock_answer({"model": "m", "messages": messages, "tools": [WEATHER, TIME]}, None)
    assert answer.content == "Tool results: get_weather returned: sunny; clock__get_time returned: noon"


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "strict": True, "schema": schema}}


def test_json_schema_answer_validates() -> None:
    schema = to_strict_json_schema(Person)
    answer = plan_mock_answer(_request(response_format=_schema_format(schema)), None)
    jsonschema.validate(json.loads(answer.content or ""), schema)
    assert answer.finish == "stop"


def test_json_schema_after_tool_result_carries_the_quote() -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    messages = [{"role": "user", "content": "use ping"},
                {"role": "assistant", "tool_calls": [{"id": "p", "type": "function",
                                                      "function": {"name": "ping", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "p", "content": "pong"}]
    answer = plan_mock_answer({"model": "m", "messages": messages, "response_format": _schema_format(schema)}, None)
    assert json.loads(answer.content or "") == {"summary": "Tool results: ping returned: pong"}


@pytest.mark.parametrize(("system", "expected"), [
    (None, {"answer": TEXT}),
    ('Answer as JSON matching this schema: {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}},'
     ' "required": ["n"]} and nothing else.', {"n": 3}),
    ("Reply in JSON {not json} please", {"answer": TEXT}),
])
def test_json_object(system: str | None, expected: dict[str, Any]) -> None:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": TEXT}]
    answer = plan_mock_answer({"model": "m", "messages": messages, "response_format": {"type": "json_object"}}, None)
    assert json.loads(answer.content or "") == expected


@pytest.mark.parametrize(("fields", "content", "finish"), [
    ({}, f"You said: {TEXT}", "stop"),
    ({"max_tokens": 3}, "You said: Tell", "length"),
    ({"max_completion_tokens": 2, "max_tokens": 50}, "You said:", "length"),
    ({"max_tokens": 6}, f"You said: {TEXT}", "stop"),
    ({"stop": "Paris"}, "You said: Tell me about ", "stop"),
    ({"stop": ["zzz", "about", " me"]}, "You said: Tell", "stop"),
    ({"stop": "You"}, "", "stop"),
    ({"response_format": {"type": "text"}}, f"You said: {TEXT}", "stop"),
])
def test_text_limits(fields: dict[str, Any], content: str, finish: str) -> None:
    answer = plan_mock_answer(_request(**fields), None)
    assert (answer.content, answer.finish) == (content, finish)
    assert answer.usage["completion_tokens"] == len(answer.words)


def test_fixed_response_and_usage() -> None:
    answer = plan_mock_answer(_request(), "Fixed answer here")
    assert answer.content == "Fixed answer here"
    assert answer.usage == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    # a canned answer wins over JSON (to test invalid output), not over tool calls
    schema = _schema_format({"type": "object"})
    assert plan_mock_answer(_request(response_format=schema, max_tokens=9), "not json").content == "not json"
    assert plan_mock_answer(_request(tools=[WEATHER], tool_choice="required"), "x").tool_calls


def test_max_tokens_cuts_tool_arguments() -> None:
    answer = plan_mock_answer(_request(tools=[WEATHER], tool_choice="required", max_tokens=2), None)
    assert answer.finish == "length" and len(answer.tool_calls[0].fragments) == 2


def test_reasoning_effort() -> None:
    answer = plan_mock_answer(_request(reasoning_effort="medium"), None)
    assert answer.reasoning and TEXT in " ".join(answer.reasoning)
    assert answer.usage["completion_tokens_details"] == {"reasoning_tokens": len(answer.reasoning)}
    assert answer.usage["completion_tokens"] == len(answer.words) + len(answer.reasoning)
    assert not plan_mock_answer(_request(reasoning_effort="none"), None).reasoning
    assert not plan_mock_answer(_request(), None).reasoning


def test_deterministic() -> None:
    request = _ask("use get_weather", tools=[WEATHER, TIME], reasoning_effort="low")
    assert plan_mock_answer(request, None) == plan_mock_answer(json.loads(json.dumps(request)), None)


# -- the provider: responses and chunks --------------------------------------------------------
DEPLOYMENT = Deployment(name="demo", provider="demo", model="mock-1")


def _provider() -> MockProvider:
    return MockProvider(ProviderConfig(name="demo", type="mock", settings={}))


def _stream(request: dict[str, Any]) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [chunk async for chunk in _provider().stream(request, DEPLOYMENT)]
    return asyncio.run(collect())


def _relay(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the client receives: through the gateway's relay (invariants enforced there)."""
    relay = StreamRelay("chatcmpl-x", "demo", include_usage=True)
    frames = b"".join(f for c in chunks if (f := relay.frame(json.loads(json.dumps(c)))))
    frames += relay.usage_frame() or b""
    assert relay.finished
    return [json.loads(line[6:]) for line in frames.decode().split("\n\n") if line]


STREAM_CASES = [
    ("text", _request()),
    ("reasoning", _request(reasoning_effort="high")),
    ("tools parallel", _ask("use get_weather and get_time", tools=[WEATHER, TIME])),
    ("json schema", _request(response_format=_schema_format(to_strict_json_schema(Items)))),
    ("n=3", _request(n=3, max_tokens=4)),
    ("n=2 tools", _request(n=2, tools=[WEATHER], tool_choice="required")),
    ("empty after stop", _request(stop="You")),
]


@pytest.mark.parametrize(("case", "request_body"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES])
def test_stream_matches_non_stream(case: str, request_body: dict[str, Any]) -> None:
    completion = asyncio.run(_provider().chat(request_body, DEPLOYMENT))
    chunks = _relay(_stream(request_body))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == completion["usage"]
    body = chunks[:-1]
    n = len(completion["choices"])
    assert n == request_body.get("n", 1)
    for choice in completion["choices"]:
        index = choice["index"]
        mine = [c["choices"][0] for c in body if c["choices"][0]["index"] == index]
        assert all(len(c["choices"]) == 1 for c in body)
        assert mine[0]["delta"]["role"] == "assistant"
        assert [c["finish_reason"] for c in mine] == [None] * (len(mine) - 1) + [choice["finish_reason"]]
        content = "".join(c["delta"].get("content") or "" for c in mine)
        assert content == (choice["message"]["content"] or "")
        reasoning = "".join(c["delta"].get("reasoning_content") or "" for c in mine)
        assert reasoning == choice["message"].get("reasoning_content", "")
        calls: dict[int, dict[str, str]] = {}
        for c in mine:
            for call in c["delta"].get("tool_calls") or []:
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                if "id" in call:
                    assert not entry["id"] and call["function"]["arguments"] == "" and call["type"] == "function"
                    entry["id"], entry["name"] = call["id"], call["function"]["name"]
                else:
                    assert set(call) == {"index", "function"} and set(call["function"]) == {"arguments"}
                entry["arguments"] += call["function"]["arguments"]
        expected = [{"id": t["id"], "name": t["function"]["name"], "arguments": t["function"]["arguments"]}
                    for t in choice["message"].get("tool_calls") or []]
        assert [calls[i] for i in sorted(calls)] == expected
        assert list(sorted(calls)) == list(range(len(expected)))
        for call in expected:
            json.loads(call["arguments"])
    ids = [t["id"] for c in completion["choices"] for t in c["message"].get("tool_calls") or []]
    assert len(ids) == len(set(ids))  # choices are separate samples: their own call ids


def test_stream_waits_chunk_delay_between_words() -> None:
    provider = MockProvider(ProviderConfig(name="demo", type="mock", settings={"chunk_delay_ms": 20}))
    sleeps: list[float] = []

    async def run() -> None:
        original = asyncio.sleep

        async def record(delay: float) -> None:
            sleeps.append(delay)
            await original(0)
        asyncio.sleep = record  # type: ignore[assignment]
        try:
            [c async for c in provider.stream(_ask("one two three"), DEPLOYMENT)]
        finally:
            asyncio.sleep = original  # type: ignore[assignment]
    asyncio.run(run())
    assert sleeps == [0.02] * 4  # "You said: one two three": 5 words, a pause between each


@pytest.mark.parametrize(("inputs", "count", "tokens"), [
    ("hello world", 1, 2),
    (["a b", "c"], 2, 3),
    ([15339, 1917], 1, 2),  # one input given as token ids
    ([[15339, 1917], [1917]], 2, 3),
])
def test_embedding_inputs(inputs: Any, count: int, tokens: int) -> None:
    result = asyncio.run(_provider().embed({"input": inputs, "dimensions": 8}, DEPLOYMENT))
    assert len(result["data"]) == count and [d["index"] for d in result["data"]] == list(range(count))
    assert result["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert all(len(d["embedding"]) == 8 for d in result["data"])
    assert len(to_mock_embedding_inputs(inputs)) == count


def test_token_ids_embed_apart_from_their_text() -> None:
    ids = asyncio.run(_provider().embed({"input": [[1, 2], [1, 2], [2, 1]]}, DEPLOYMENT))["data"]
    assert ids[0]["embedding"] == ids[1]["embedding"] != ids[2]["embedding"]


@pytest.mark.parametrize(("extra", "dropped"), [
    ({"temperature": 0.2, "n": 2, "seed": 1, "stop": "x", "reasoning_effort": "low"}, []),
    ({"logprobs": True, "top_logprobs": 2, "top_k": 5}, ["logprobs", "top_logprobs", "top_k"]),
    ({"fallbacks": ["x"], "metadata": {"a": "b"}}, ["metadata"]),
])
def test_dropped_params(extra: dict[str, Any], dropped: list[str]) -> None:
    body, names = prepare_request(_request(**extra), _provider(), strict=False, name="demo")
    assert names == dropped
    assert not set(dropped) & set(body) and "fallbacks" not in body


def test_strict_mode_rejects_what_the_mock_cannot_honour() -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare_request(_request(logit_bias={"1": 2}), _provider(), strict=True, name="demo")
    assert info.value.param == "logit_bias"


def test_rerank_orders_by_shared_words() -> None:
    documents = ["the cat sat", {"text": "Paris is the capital of France"}, "capital cities of Europe", "nothing"]
    result = asyncio.run(_provider().rerank({"query": "capital of France", "documents": documents, "top_n": 3},
                                            DEPLOYMENT))
    assert [r["index"] for r in result["results"]] == [1, 2, 0]
    assert result["results"][0]["relevance_score"] == 1.0
    assert all(0 <= r["relevance_score"] <= 1 for r in result["results"])
