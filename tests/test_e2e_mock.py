"""End to end: the `demo` mock through the real `omni-llm serve`, with the official openai SDK and raw HTTP.

Every client path a newcomer tries offline: structured output (json_schema,
`chat.completions.parse`, json_object), tool calls (required, named, by mention,
none, the result quoted back), streamed tool-call fragments, n, max_tokens,
stop, reasoning_effort, token-id embeddings, dropped params.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import openai
import orjson
import pytest
from pydantic import BaseModel

from tests.proxy_server import RunningProxy, collect_tool_calls, run_proxy, sse_events

CONFIG = """
providers:
  demo: {type: mock}
  slow: {type: mock, chunk_delay_ms: 1}
models:
  demo: {provider: demo, model: mock-1}
  demo-slow: {provider: slow, model: mock-1}
  demo-embedding: {provider: demo, model: mock-embed-1, mode: embedding}
"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 18, "maximum": 99},
    "kind": {"type": "string", "enum": ["person", "company"]}, "tags": {"type": "array", "items": {"type": "string"}},
    "email": {"type": "string", "format": "email"}},
    "required": ["name", "age", "kind", "tags", "email"], "additionalProperties": False}


class City(BaseModel):
    name: str
    population: int
    country: Literal["FR", "DE", "IT"]


class Trip(BaseModel):
    title: str
    stops: list[City]
    budget_eur: float | None


@pytest.fixture(scope="module")
def proxy() -> Iterator[RunningProxy]:
    with run_proxy(CONFIG) as running:
        yield running


@pytest.fixture(scope="module")
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def _schema_format(schema: dict[str, Any]) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": schema}}


@pytest.mark.parametrize("model", ["demo", "demo-slow"])
def test_json_schema_non_stream_and_stream(client: openai.OpenAI, model: str) -> None:
    text = "Describe Ada Lovelace"
    completion = client.chat.completions.create(model=model, messages=_user(text),
                                                response_format=_schema_format(PERSON))
    value = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(value, PERSON, format_checker=jsonschema.FormatChecker())
    assert value["name"] == text and value["kind"] == "person"
    assert completion.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=_user(text), response_format=_schema_format(PERSON), stream=True) if c.choices)
    assert json.loads(streamed) == value


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(model="demo", messages=_user("Plan a trip to Paris"), response_format=Trip)
    trip = completion.choices[0].message.parsed
    assert isinstance(trip, Trip)
    assert trip.title == "Plan a trip to Paris" and trip.stops[0].country == "FR" and trip.budget_eur is not None


def test_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo", messages=_user("hi"),
                                                response_format={"type": "json_object"})
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "hi"}


@pytest.mark.parametrize(("text", "tool_choice", "expected"), [
    ("what now?", "required", ["get_weather"]),
    ("what now?", {"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
    ("use get_weather for Paris", "auto", ["get_weather"]),
    ("call get_weather and get_time", None, ["get_weather", "get_time"]),
    ("use get_weather for Paris", "none", []),
    ("what is the weather?", "auto", []),
])
def test_tool_choice(client: openai.OpenAI, text: str, tool_choice: Any, expected: list[str]) -> None:
    extra = {} if tool_choice is None else {"tool_choice": tool_choice}
    completion = client.chat.completions.create(model="demo", messages=_user(text), tools=[WEATHER, CLOCK], **extra)
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == expected  # type: ignore[union-attr]
    if expected:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        for call in calls:
            params = {"get_weather": WEATHER, "get_time": CLOCK}[call.function.name]["function"]["parameters"]  # type: ignore[union-attr]
            jsonschema.validate(json.loads(call.function.arguments), params)  # type: ignore[union-attr]
    else:
        assert choice.finish_reason == "stop" and choice.message.content == f"You said: {text}"


def test_tool_loop_quotes_the_result(client: openai.OpenAI) -> None:
    messages: list[Any] = _user("use get_weather in Paris")
    first = client.chat.completions.create(model="demo", messages=messages, tools=[WEATHER])
    call = (first.choices[0].message.tool_calls or [])[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "sunny"}'}]
    second = client.chat.completions.create(model="demo", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == 'Tool results: get_weather returned: {"temperature": 18, "sky": "sunny"}'


def test_streamed_tool_calls_reassemble(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="demo-slow", messages=_user("use get_weather and get_time"),
                                                 tools=[WEATHER, CLOCK], stream=True,
                                                 stream_options={"include_usage": True}))
    calls = collect_tool_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert [calls[0]["name"], calls[1]["name"]] == ["get_weather", "get_time"]
    assert calls[0]["id"] != calls[1]["id"]
    jsonschema.validate(json.loads(calls[0]["args"]), WEATHER["function"]["parameters"])
    jsonschema.validate(json.loads(calls[1]["args"]), CLOCK["function"]["parameters"])
    fragments = sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert fragments > 4  # the arguments arrive in pieces, not in one delta
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_raw_stream_tool_call_shape(proxy: RunningProxy) -> None:
    body = {"model": "demo", "stream": True, "messages": _user("x"), "tools": [CLOCK], "tool_choice": "required"}
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json=body, timeout=10) as response:
        events = sse_events(response)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    first = deltas[0]["tool_calls"][0]
    assert deltas[0]["role"] == "assistant"
    assert first == {"index": 0, "id": first["id"], "type": "function", "function": {"name": "get_time", "arguments": ""}}
    later = [d["tool_calls"][0] for d in deltas[1:] if d.get("tool_calls")]
    assert later and all(set(t) == {"index", "function"} for t in later)
    assert json.loads("".join(t["function"]["arguments"] for t in later)) == {"tz": "x"}
    assert all(c["choices"] for c in chunks)  # no usage chunk without include_usage
    assert len({c["id"] for c in chunks}) == 1


def test_n_choices(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo", messages=_user("hello"), n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content == "You said: hello" and c.finish_reason == "stop" for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens == 9
    chunks = list(client.chat.completions.create(model="demo", messages=_user("hello"), n=3, stream=True))
    texts: dict[int, str] = {}
    finishes: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert texts == {0: "You said: hello", 1: "You said: hello", 2: "You said: hello"}
    assert finishes == {0: ["stop"], 1: ["stop"], 2: ["stop"]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fields", "content", "finish"), [
    ({"max_tokens": 3}, "You said: one", "length"),
    ({"max_completion_tokens": 2}, "You said:", "length"),
    ({"stop": ["three"]}, "You said: one two ", "stop"),
])
def test_max_tokens_and_stop(client: openai.OpenAI, stream: bool, fields: dict[str, Any], content: str, finish: str) -> None:
    messages = _user("one two three four")
    if not stream:
        choice = client.chat.completions.create(model="demo", messages=messages, **fields).choices[0]
        assert (choice.message.content, choice.finish_reason) == (content, finish)
        return
    chunks = list(client.chat.completions.create(model="demo", messages=messages, stream=True, **fields))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == [finish]


def test_reasoning_effort(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo", messages=_user("why is the sky blue?"),
                                                reasoning_effort="low")
    message = completion.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning_content")
    assert reasoning and "why is the sky blue?" in reasoning and message.content == "You said: why is the sky blue?"
    details = completion.usage.completion_tokens_details  # type: ignore[union-attr]
    assert details is not None and details.reasoning_tokens == len(reasoning.split(" "))
    chunks = list(client.chat.completions.create(model="demo", messages=_user("why is the sky blue?"),
                                                 reasoning_effort="low", stream=True))
    streamed = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    assert streamed == reasoning


def test_usage_only_when_asked(client: openai.OpenAI) -> None:
    plain = list(client.chat.completions.create(model="demo", messages=_user("a b"), stream=True))
    assert all(c.choices for c in plain) and all(c.usage is None for c in plain)
    asked = list(client.chat.completions.create(model="demo", messages=_user("a b"), stream=True,
                                                stream_options={"include_usage": True}))
    assert asked[-1].choices == [] and asked[-1].usage is not None
    assert (asked[-1].usage.prompt_tokens, asked[-1].usage.completion_tokens) == (2, 4)


@pytest.mark.parametrize(("inputs", "count"), [([15339, 1917], 1), ([[15339, 1917], [1917]], 2), (["a", "b c"], 2)])
def test_token_id_embeddings(client: openai.OpenAI, inputs: Any, count: int) -> None:
    result = client.embeddings.create(model="demo-embedding", input=inputs)
    assert len(result.data) == count and [d.index for d in result.data] == list(range(count))


def test_dropped_params_are_named(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=_user("hi"), logprobs=True, temperature=0.3, extra_body={"top_k": 3})
    assert raw.headers["x-omni-dropped-params"] == "logprobs,top_k"
    assert raw.parse().choices[0].message.content == "You said: hi"
    kept = client.chat.completions.with_raw_response.create(model="demo", messages=_user("hi"), n=2, seed=1)
    assert "x-omni-dropped-params" not in kept.headers


def test_strict_server_rejects_what_the_mock_cannot_honour() -> None:
    with run_proxy(CONFIG + "server: {drop_unsupported_params: false}\n") as running:
        strict = openai.OpenAI(base_url=running.v1, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            strict.chat.completions.create(model="demo", messages=_user("hi"), logprobs=True)
        assert info.value.body["param"] == "logprobs"  # type: ignore[index]


class Contact(BaseModel):
    name: str
    age: int
    kind: Literal["person", "company"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(proxy: RunningProxy, method: str) -> None:
    """The issue's first try: LangChain's `with_structured_output` on the demo model."""
    langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai (dev extra) not installed")
    llm = langchain_openai.ChatOpenAI(model="demo", base_url=proxy.v1, api_key="unused", max_retries=0)
    contact = llm.with_structured_output(Contact, method=method).invoke("Ada Lovelace")
    assert contact == Contact(name="Ada Lovelace", age=42, kind="person")


def test_langchain_tool_loop_and_streamed_tool_calls(proxy: RunningProxy) -> None:
    langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai (dev extra) not installed")
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    llm = langchain_openai.ChatOpenAI(model="demo", base_url=proxy.v1, api_key="unused", max_retries=0)
    bound = llm.bind_tools([get_weather])
    question = HumanMessage("use get_weather for Paris")
    reply = bound.invoke([question])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "use get_weather for Paris"})]
    result = get_weather.invoke(reply.tool_calls[0])
    final = bound.invoke([question, reply, result])
    assert final.content == "Tool results: get_weather returned: sunny in use get_weather for Paris"
    chunks = list(bound.stream([question]))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("get_weather", {"city": "use get_weather for Paris"})]
