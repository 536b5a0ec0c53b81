"""`structured_output` pieces without a server: the field's settings, validation, the stream wrapper, the rewrite."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.errors import InvalidRequest, StructuredOutputInvalid
from proxy.structured.spec import parse_spec
from proxy.structured.step import build, to_structured_request
from proxy.structured.streaming import ArrayUnwrapper, structured_stream
from proxy.structured.validate import check_answer, json_path

FMT = {"name": "string", "age": "integer?"}


def test_defaults_and_aliases() -> None:
    spec = parse_spec({"format": FMT})
    assert spec is not None
    assert (spec.name, spec.method, spec.strict, spec.max_repairs, spec.wrapped) == (
        "output",
        "json_schema",
        True,
        1,
        False,
    )
    assert parse_spec({"format": FMT, "method": "pydantic"}).method == "json_schema"  # type: ignore[union-attr]
    typed = parse_spec({"format": FMT, "method": "typed_dict"})
    assert (
        typed is not None
        and typed.method == "json_schema"
        and typed.strict is False
        and typed.validator is None
    )
    assert parse_spec({"format": FMT, "method": "typed_dict", "strict": True}).strict is True  # type: ignore[union-attr]
    assert parse_spec({"format": FMT, "enabled": False}) is None
    assert parse_spec({"format": FMT, "enabled": True}) is not None


def test_compiled_once_per_distinct_value() -> None:
    assert parse_spec({"format": {"x": "string"}}) is parse_spec({"format": {"x": "string"}})
    a = parse_spec({"schema": {"type": "object", "properties": {"x": {"type": "string"}}}})
    b = parse_spec({"schema": {"properties": {"x": {"type": "string"}}, "type": "object"}})
    assert a is not b and a.validator is b.validator  # type: ignore[union-attr]  # one validator per schema


@pytest.mark.parametrize(
    "value, param",
    [
        ("json", "structured_output"),
        ({}, "structured_output"),
        ({"format": FMT, "schema": {"type": "object"}}, "structured_output"),
        ({"format": FMT, "enabled": "no"}, "structured_output.enabled"),
        ({"format": FMT, "colour": 1}, "structured_output.colour"),
        ({"format": FMT, "name": "has space"}, "structured_output.name"),
        ({"format": FMT, "name": ""}, "structured_output.name"),
        ({"format": FMT, "name": "x" * 65}, "structured_output.name"),
        ({"format": FMT, "method": "pydantic_v1"}, "structured_output.method"),
        ({"format": FMT, "strict": "yes"}, "structured_output.strict"),
        ({"format": FMT, "max_repairs": 4}, "structured_output.max_repairs"),
        ({"format": FMT, "max_repairs": -1}, "structured_output.max_repairs"),
        ({"format": FMT, "max_repairs": True}, "structured_output.max_repairs"),
        ({"format": FMT, "max_repairs": 1.5}, "structured_output.max_repairs"),
        ({"format": {"a": "int"}}, "structured_output.format.a"),
        ({"schema": "object"}, "structured_output.schema"),
        ({"schema": {"type": "objekt"}}, "structured_output.schema.type"),
        (
            {"schema": {"type": "object", "properties": {"a": {"minLength": "3"}}}},
            "structured_output.schema.properties.a.minLength",
        ),
        (
            {"schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}},
            "structured_output.schema",
        ),
    ],
)
def test_bad_settings_are_400s_naming_the_field(value: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_spec(value)
    assert caught.value.param == param


def test_json_schema_top_level_array_is_wrapped_with_its_defs() -> None:
    schema = {
        "$defs": {"p": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "type": "array",
        "items": {"$ref": "#/$defs/p"},
    }
    spec = parse_spec({"schema": schema})
    assert spec is not None and spec.wrapped and spec.schema["$defs"] == schema["$defs"]
    assert spec.schema["properties"]["items"] == {"type": "array", "items": {"$ref": "#/$defs/p"}}
    assert check_answer('{"items": [{"n": 1}]}', spec.validator, True) == ({"items": [{"n": 1}]}, [])
    assert check_answer('{"items": [{"n": "x"}]}', spec.validator, True)[1] == [
        '$[0].n: "x" is not of type "integer"'
    ]


def test_check_answer() -> None:
    spec = parse_spec(
        {"format": {"a": "integer", "b": {"c": "string?"}, "odd key": "boolean", "l": ["integer"]}}
    )
    assert spec is not None
    v = spec.validator
    assert check_answer(None, v, False)[1] == ["$: the answer is empty (expected JSON)"]
    assert check_answer("  ", v, False)[1] == ["$: the answer is empty (expected JSON)"]
    assert check_answer("{a: 1}", v, False)[1][0].startswith("$: not valid JSON")
    good = {"a": 1, "b": {}, "odd key": True, "l": [1]}  # b.c optional: may be left out
    assert check_answer("```json\n" + orjson.dumps(good).decode() + "\n```", v, False) == (good, [])
    assert check_answer(orjson.dumps({**good, "b": {"c": None}}).decode(), v, False)[1] == []
    _, errors = check_answer('{"a": "1", "b": {"c": 2}, "odd key": 1, "l": [1, "2"], "extra": 0}', v, False)
    assert set(errors) == {
        '$.a: "1" is not of type "integer"',
        '$.b.c: 2 is not of types "null", "string"',
        '$["odd key"]: 1 is not of type "boolean"',
        '$.l[1]: "2" is not of type "integer"',
        "$: Additional properties are not allowed ('extra' was unexpected)",
    }
    many = orjson.dumps({"a": "x", "b": 1, "odd key": 1, "l": ["a", "b", "c"]}).decode()
    assert len(check_answer(many, v, False)[1]) == 5  # the first few, not all
    assert check_answer("[1, 2", None, False)[1][0].startswith("$: not valid JSON")
    assert check_answer('{"anything": 1}', None, False) == ({"anything": 1}, [])  # strict false: parse only
    assert check_answer('{"items": [1]}', None, True) == ({"items": [1]}, [])
    assert check_answer("[1]", None, True)[1] == [
        '$: expected {"items": [...]} (the top-level array, wrapped)'
    ]


def test_json_path() -> None:
    assert json_path([]) == "$"
    assert json_path(["address", "zip"]) == "$.address.zip"
    assert json_path(["tags", 0, "a-b"]) == '$.tags[0]["a-b"]'


ARRAY = '{"items": [{"a": "}"}, {"b": [1, 2]}]}'


@pytest.mark.parametrize("text", [ARRAY, '{ "items" : [1] }\n', '{\n  "items": [\n    1\n  ]\n}'])
def test_array_unwrapper_every_split(text: str) -> None:
    expected = orjson.loads(text)["items"]
    for size in range(1, len(text) + 1):
        unwrapper = ArrayUnwrapper()
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        out = "".join(unwrapper.feed(p) for p in pieces) + unwrapper.close()
        assert orjson.loads(out) == expected, (size, out)


def test_array_unwrapper_leaves_an_unexpected_shape_alone() -> None:
    unwrapper = ArrayUnwrapper()
    out = unwrapper.feed("[1, 2]") + unwrapper.close()
    assert out == "[1, 2]"
    unwrapper = ArrayUnwrapper()
    assert unwrapper.feed('{"other": 1}') + unwrapper.close() == '{"other": 1}'


def _chunks(*deltas: dict[str, Any], finish: str = "stop") -> list[dict[str, Any]]:
    out = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    out[-1]["choices"][0]["finish_reason"] = finish
    return out


async def _drain(spec: Any, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def rest() -> AsyncIterator[Any]:
        for c in chunks[1:]:
            yield c

    first, stream = structured_stream(spec, chunks[:1], rest())
    return first + [c async for c in stream]


async def test_stream_tool_arguments_become_content() -> None:
    spec = parse_spec({"format": FMT, "method": "tool", "name": "person"})
    chunks = _chunks(
        {"role": "assistant"},
        {
            "tool_calls": [
                {"index": 0, "id": "c1", "type": "function", "function": {"name": "person", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"name": "Ada", '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"age": null}'}}]},
        {},
        finish="tool_calls",
    )
    out = await _drain(spec, chunks)
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in out) == '{"name": "Ada", "age": null}'
    )
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in out)
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_invalid_raises_at_the_end_and_other_tools_pass() -> None:
    spec = parse_spec({"format": FMT})
    with pytest.raises(StructuredOutputInvalid, match=r"\$\.age"):
        await _drain(
            spec, _chunks({"role": "assistant", "content": '{"name": "A", '}, {"content": '"age": "x"}'})
        )
    calls = _chunks(
        {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "lookup", "arguments": "{}"}}]},
        finish="tool_calls",
    )
    out = await _drain(parse_spec({"format": FMT, "method": "tool"}), calls)
    assert out[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert out[0]["choices"][0]["finish_reason"] == "tool_calls"


def test_request_rewrite_per_method() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
        "response_format": {"type": "text"},
    }
    spec = parse_spec({"format": FMT, "name": "person"})
    out = to_structured_request(body, spec)  # type: ignore[arg-type]
    assert out["response_format"]["json_schema"] == {"name": "person", "schema": spec.schema, "strict": True}  # type: ignore[union-attr]
    assert body["response_format"] == {"type": "text"}  # the client's body is left alone
    loose = to_structured_request(body, parse_spec({"format": {"a": "object"}}))  # type: ignore[arg-type]
    assert loose["response_format"]["json_schema"]["strict"] is False  # not OpenAI-strict-compatible
    mode = to_structured_request(body, parse_spec({"format": FMT, "method": "json_mode"}))  # type: ignore[arg-type]
    assert mode["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in mode["messages"]] == ["system", "system", "user"]
    assert '"additionalProperties":false' in mode["messages"][1]["content"]
    tool = to_structured_request(body, parse_spec({"format": FMT, "method": "tool", "name": "person"}))  # type: ignore[arg-type]
    assert "response_format" not in tool
    assert tool["tool_choice"] == {"type": "function", "function": {"name": "person"}}
    assert tool["tools"][0]["function"]["name"] == "person" and tool["tools"][0]["function"]["strict"] is True
    theirs = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    spec = parse_spec({"format": FMT, "method": "tool"})
    both = to_structured_request({**body, "tools": [theirs]}, spec)  # type: ignore[arg-type]
    assert both["tool_choice"] == "required" and [t["function"]["name"] for t in both["tools"]] == [
        "lookup",
        "output",
    ]
    after = {
        **body,
        "tools": [theirs],
        "messages": [*body["messages"], {"role": "tool", "tool_call_id": "1", "content": "r"}],
    }
    assert to_structured_request(after, spec)["tool_choice"] == {
        "type": "function",
        "function": {"name": "output"},
    }  # type: ignore[arg-type]


def test_build_refuses_what_it_cannot_honour() -> None:
    with pytest.raises(InvalidRequest) as caught:
        build(None, {"format": FMT}, {"n": 2})  # type: ignore[arg-type]
    assert caught.value.param == "n"
    tools = [{"type": "function", "function": {"name": "output", "parameters": {}}}]
    with pytest.raises(InvalidRequest) as caught:
        build(None, {"format": FMT, "method": "tool"}, {"tools": tools})  # type: ignore[arg-type]
    assert caught.value.param == "structured_output.name"
    assert build(None, {"format": FMT, "enabled": False}, {}) is None  # type: ignore[arg-type]


def test_import_proxy_app_loads_neither_the_step_nor_the_validator() -> None:
    code = (
        "import sys, proxy.app; bad = [m for m in sys.modules if m.startswith(('proxy.structured', "
        "'jsonschema_rs'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_spec_is_usable_across_event_loops() -> None:
    spec = parse_spec({"format": FMT})
    assert (
        asyncio.run(_drain(spec, _chunks({"content": '{"name": "x", "age": 1}'})))[-1]["choices"][0][
            "finish_reason"
        ]
        == "stop"
    )


class ToolLoop:
    """An MCP-shaped outer step: runs the tools the model calls, one `nxt` per round."""

    def __init__(self, rounds: list[str]) -> None:
        self.rounds = rounds

    async def complete(self, call: Any, nxt: Any) -> Any:
        while True:
            served = await nxt(call)
            choice = served.result["choices"][0]
            self.rounds.append(choice["finish_reason"])
            if choice["finish_reason"] != "tool_calls":
                return served
            results = [
                {"role": "tool", "tool_call_id": c["id"], "content": "sunny"}
                for c in choice["message"]["tool_calls"]
            ]
            call.body = {**call.body, "messages": [*call.body["messages"], choice["message"], *results]}

    async def stream(self, call: Any, nxt: Any) -> Any:
        return await nxt(call)


async def test_composes_inside_a_tool_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tool rounds pass through unvalidated; the final answer is validated once, with one header."""
    import os
    import types

    import httpx

    from proxy.app import create_app
    from proxy.config import parse_config

    rounds: list[str] = []
    module = types.ModuleType("tests_tool_loop")
    module.build = lambda gateway, value, body: ToolLoop(rounds)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_tool_loop", module)
    monkeypatch.setattr(
        "proxy.pipeline.STEPS",
        (("mcp", "tests_tool_loop:build"), ("structured_output", "proxy.structured.step:build")),
    )
    app = create_app(
        parse_config(
            "providers:\n  demo: {type: mock}\nmodels:\n  demo: {provider: demo, model: m}\n",
            dict(os.environ),
        )
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "demo",
                "messages": [{"role": "user", "content": "use get_weather for Paris"}],
                "tools": tools,
                "mcp": {},
                "structured_output": {"format": {"report": "string"}},
            },
        )
    assert response.status_code == 200, response.text
    assert rounds == ["tool_calls", "stop"]
    message = response.json()["choices"][0]["message"]
    assert message["parsed"] == {"report": "Tool results: get_weather returned: sunny"}
    assert response.headers.get_list("x-omni-structured-repairs") == ["0"]


class FakeDeployment:
    def __init__(self, name: str) -> None:
        self.name = name


def _answer(content: Any, tokens: int = 1) -> dict[str, Any]:
    return {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": 2 * tokens},
    }


def _scripted_chain(script: dict[str, list[Any]], seen: list[tuple[str, int]]) -> Any:
    """An innermost `nxt` serving the first link of the chain from a per-model script (an exception fails it)."""
    from proxy.router import Served

    async def nxt(call: Any) -> Any:
        name = call.chain[0][0]
        seen.append((name, len(call.body["messages"])))
        item = script[name].pop(0)
        if isinstance(item, Exception):
            raise item
        return Served(item, FakeDeployment(name), None, [], [f"{name}:200"])  # type: ignore[arg-type]

    return nxt


def _call(models: list[str]) -> Any:
    from proxy.pipeline import ChatCall

    return ChatCall(
        {"model": models[0], "messages": [{"role": "user", "content": "q"}]},
        [(m, (FakeDeployment(m),)) for m in models],
        {},
    )  # type: ignore[arg-type]


async def test_step_moves_on_sums_usage_and_reports_every_model() -> None:
    from proxy.errors import UpstreamError

    step = build(None, {"format": {"n": "integer"}}, {})  # type: ignore[arg-type]
    seen: list[tuple[str, int]] = []
    script = {
        "a": [{"choices": []}, _answer('{"n": "x"}', 2)],  # no choices at all, then a wrong type
        "b": [_answer("[]", 3), UpstreamError("b is down")],  # invalid, and its repair fails upstream
        "c": [_answer('{"n": 4}', 5)],
    }
    call = _call(["a", "b", "c"])
    served = await step.complete(call, _scripted_chain(script, seen))  # type: ignore[union-attr]
    assert served.result["choices"][0]["message"]["parsed"] == {"n": 4}
    assert seen == [
        ("a", 1),
        ("a", 3),
        ("b", 1),
        ("b", 3),
        ("c", 1),
    ]  # repairs add 2 turns, on the same model
    assert served.result["usage"] == {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
    assert call.headers == [(b"x-omni-structured-repairs", b"2")]
    assert served.attempts == ["a:200", "a:200", "b:200", "c:200"]


async def test_step_502_lists_each_model_and_a_plain_upstream_failure_stays_itself() -> None:
    from proxy.errors import UpstreamError

    step = build(None, {"format": {"n": "integer"}, "max_repairs": 0}, {})  # type: ignore[arg-type]
    script: dict[str, list[Any]] = {"a": [_answer('{"n": "x"}')], "b": [_answer("nope")]}
    with pytest.raises(StructuredOutputInvalid) as caught:
        await step.complete(_call(["a", "b"]), _scripted_chain(script, []))  # type: ignore[union-attr]
    assert caught.value.status == 502 and caught.value.code == "structured_output_invalid"
    assert 'a: $.n: "x" is not of type "integer"' in caught.value.message
    assert "b: $: not valid JSON" in caught.value.message
    down = UpstreamError("all upstreams failed")
    with pytest.raises(UpstreamError) as failed:
        await step.complete(_call(["a"]), _scripted_chain({"a": [down]}, []))  # type: ignore[union-attr]
    assert failed.value is down
