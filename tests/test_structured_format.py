"""The simple format of CONTRACT §9 -> JSON Schema, table-driven; every bad-format path is a 400 naming it."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.structured.format import format_to_schema, is_closed


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


S, I = {"type": "string"}, {"type": "integer"}

CASES = [
    ({"a": "string"}, obj({"a": S})),
    (
        {"a": "number", "b": "integer", "c": "boolean", "d": "null"},
        obj({"a": {"type": "number"}, "b": I, "c": {"type": "boolean"}, "d": {"type": "null"}}),
    ),
    ({"a": "object", "b": "array"}, obj({"a": {"type": "object"}, "b": {"type": "array"}})),
    ({"age": "integer?"}, obj({"age": {"type": ["integer", "null"]}})),
    ({"a": " string ? "}, obj({"a": {"type": ["string", "null"]}})),
    ({"n": "null?"}, obj({"n": {"type": "null"}})),
    ({"kind": "person|company"}, obj({"kind": {"type": "string", "enum": ["person", "company"]}})),
    ({"k": "a|b|c?"}, obj({"k": {"type": ["string", "null"], "enum": ["a", "b", "c", None]}})),
    (
        {"k": "string|null"},
        obj({"k": {"type": "string", "enum": ["string", "null"]}}),
    ),  # bare words, not types
    ({"k": "v1.0|v2-beta"}, obj({"k": {"type": "string", "enum": ["v1.0", "v2-beta"]}})),
    ({"t": "array of string"}, obj({"t": {"type": "array", "items": S}})),
    ({"t": "array of strings"}, obj({"t": {"type": "array", "items": S}})),
    ({"t": "array of integers?"}, obj({"t": {"type": ["array", "null"], "items": I}})),
    ({"t": "array of objects"}, obj({"t": {"type": "array", "items": {"type": "object"}}})),
    (
        {"t": "array of array of numbers"},
        obj({"t": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}),
    ),
    (
        {"t": "array of red|green"},
        obj({"t": {"type": "array", "items": {"type": "string", "enum": ["red", "green"]}}}),
    ),
    ({"t": ["string"]}, obj({"t": {"type": "array", "items": S}})),
    ({"t": ["integer?"]}, obj({"t": {"type": "array", "items": {"type": ["integer", "null"]}}})),
    ({"t": ["array of strings"]}, obj({"t": {"type": "array", "items": S}})),
    ({"t": ["array"]}, obj({"t": {"type": "array"}})),
    ({"t": [["string"]]}, obj({"t": {"type": "array", "items": {"type": "array", "items": S}}})),
    ({"t": [{"x": "integer"}]}, obj({"t": {"type": "array", "items": obj({"x": I})}})),
    (
        {"address": {"city": "string", "zip": "string?"}},
        obj({"address": obj({"city": S, "zip": {"type": ["string", "null"]}})}),
    ),
    ([{"name": "string"}], {"type": "array", "items": obj({"name": S})}),
    (["string"], {"type": "array", "items": S}),
    (["array of integers"], {"type": "array", "items": I}),
    ("array of strings", {"type": "array", "items": S}),
]


@pytest.mark.parametrize("fmt, schema", CASES)
def test_format_to_schema(fmt: Any, schema: dict[str, Any]) -> None:
    assert format_to_schema(fmt) == schema


def test_key_order_is_kept() -> None:
    schema = format_to_schema({"z": "string", "a": "string", "m": "string"})
    assert list(schema["properties"]) == ["z", "a", "m"] == schema["required"]


def test_validation_schema_lets_optional_keys_be_left_out() -> None:
    fmt = {"a": "string", "b": "integer?", "c": {"d": "string?", "e": "string"}, "f": [{"g": "boolean?"}]}
    schema = format_to_schema(fmt, for_validation=True)
    assert schema["required"] == ["a", "c", "f"]
    assert schema["properties"]["c"]["required"] == ["e"]
    assert schema["properties"]["f"]["items"]["required"] == []
    assert schema["properties"]["b"] == {"type": ["integer", "null"]}  # still nullable
    assert format_to_schema(fmt)["required"] == ["a", "b", "c", "f"]  # upstream: every key required


BAD = [
    ("string", "structured_output.format"),
    ("array of strings?", "structured_output.format"),
    ("person|company", "structured_output.format"),
    (5, "structured_output.format"),
    (None, "structured_output.format"),
    ({}, "structured_output.format"),
    ([], "structured_output.format"),
    (["string", "integer"], "structured_output.format"),
    ({"a": "text"}, "structured_output.format.a"),
    ({"a": "String"}, "structured_output.format.a"),
    ({"a": ""}, "structured_output.format.a"),
    ({"a": "?"}, "structured_output.format.a"),
    ({"a": 3}, "structured_output.format.a"),
    ({"a": True}, "structured_output.format.a"),
    ({"a": None}, "structured_output.format.a"),
    ({"a": {}}, "structured_output.format.a"),
    ({"a": "person|"}, "structured_output.format.a"),
    ({"a": "|person"}, "structured_output.format.a"),
    ({"a": "single"}, "structured_output.format.a"),
    ({"a": "a|a"}, "structured_output.format.a"),
    ({"a": "a | b"}, "structured_output.format.a"),
    ({"a": "array of"}, "structured_output.format.a"),
    ({"a": "array of widgets"}, "structured_output.format.a"),
    ({"a": "array of string??"}, "structured_output.format.a"),
    ({"a": "list of strings"}, "structured_output.format.a"),
    ({"address": {"zip": "zipcode"}}, "structured_output.format.address.zip"),
    ({"tags": []}, "structured_output.format.tags"),
    ({"tags": ["string", "integer"]}, "structured_output.format.tags"),
    ({"tags": ["strings"]}, "structured_output.format.tags[0]"),
    ({"tags": [5]}, "structured_output.format.tags[0]"),
    ({"rows": [{"cells": [{"v": "float"}]}]}, "structured_output.format.rows[0].cells[0].v"),
    ({"a": {"": "string"}}, "structured_output.format.a"),
    ([{"name": "str"}], "structured_output.format[0].name"),
]


@pytest.mark.parametrize("fmt, param", BAD)
def test_bad_format_names_its_path(fmt: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        format_to_schema(fmt)
    assert caught.value.param == param
    assert caught.value.status == 400
    assert caught.value.message.startswith(param)


@pytest.mark.parametrize(
    "schema, closed",
    [
        (format_to_schema({"a": "string", "b": [{"c": "integer?"}]}), True),
        (format_to_schema({"a": "object"}), False),
        (format_to_schema({"a": ["array"]}), False),
        ({"type": "object", "properties": {"a": S}}, False),
        ({"type": "object", "properties": {"a": S}, "required": ["a"], "additionalProperties": False}, True),
        (
            {
                "type": "object",
                "properties": {"enum": {"type": "string", "enum": [{"type": "object"}]}},
                "required": ["enum"],
                "additionalProperties": False,
            },
            True,
        ),
    ],
)
def test_is_closed(schema: dict[str, Any], closed: bool) -> None:
    assert is_closed(schema) is closed
