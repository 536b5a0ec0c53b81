"""Request validation at the edge, once.

The schemas only check: the gateway forwards the client's own dict, so unknown
fields survive untouched and nothing is re-serialised. Validation is strict
(no "0.5" for a number, no `true` for an integer) and every failure names the
field, OpenAI-style (`messages[0].content`).

A schema is a tree of small check functions `(value, path) -> None` that raise
`InvalidRequest`. They cost a few microseconds per request and nothing at
import; building pydantic models for the same shapes took ~100 ms at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from proxy.errors import InvalidRequest

Check = Callable[[Any, str], None]

_JSON_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
               dict: "an object", type(None): "null"}


def _fail(path: str, message: str) -> NoReturn:
    param = path or "body"
    raise InvalidRequest(f"Invalid value for '{param}': {message}", param=param)


def _got(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _typed(kinds: tuple[type, ...], name: str, ge: float | None = None, le: float | None = None,
           min_length: int = 0) -> Check:
    def check(value: Any, path: str) -> None:
        if type(value) not in kinds:
            _fail(path, f"expected {name}, got {_got(value)}")
        if ge is not None and value < ge:
            _fail(path, f"must be >= {ge:g}")
        if le is not None and value > le:
            _fail(path, f"must be <= {le:g}")
        if min_length and len(value) < min_length:
            _fail(path, f"must be at least {min_length} character(s) long")
    return check


def string(min_length: int = 0) -> Check:
    return _typed((str,), "a string", min_length=min_length)


def integer(ge: float | None = None, le: float | None = None) -> Check:
    return _typed((int,), "an integer", ge, le)  # type() is exact: bool is not an int here


def number(ge: float | None = None, le: float | None = None) -> Check:
    return _typed((int, float), "a number", ge, le)


BOOLEAN = _typed((bool,), "a boolean")
STRING = string()
OBJECT = _typed((dict,), "an object")


def one_of(*values: str) -> Check:
    def check(value: Any, path: str) -> None:
        if type(value) is not str or value not in values:
            _fail(path, f"{value!r} is not one of {list(values)}")
    return check


def nullable(inner: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if value is not None:
            inner(value, path)
    return check


def either(**by_type: Check) -> Check:
    """Dispatch on the JSON type: `either(str=STRING, list=list_of(PART))`."""
    kinds = {_PY_TYPES[name]: inner for name, inner in by_type.items()}
    expected = " or ".join(_JSON_TYPES[_PY_TYPES[name]] for name in by_type)

    def check(value: Any, path: str) -> None:
        inner = kinds.get(type(value))
        if inner is None:
            _fail(path, f"expected {expected}, got {_got(value)}")
        inner(value, path)
    return check


_PY_TYPES: dict[str, type] = {"str": str, "list": list, "dict": dict}


def list_of(item: Check, min_length: int = 0) -> Check:
    def check(value: Any, path: str) -> None:
        if type(value) is not list:
            _fail(path, f"expected an array, got {_got(value)}")
        if len(value) < min_length:
            _fail(path, f"must have at least {min_length} item(s)")
        for i, element in enumerate(value):
            item(element, f"{path}[{i}]")
    return check


def fields(required: dict[str, Check] | None = None, optional: dict[str, Check] | None = None) -> Check:
    """An object; optional fields may also be null; other fields are allowed and left alone."""
    required = required or {}
    optional = optional or {}

    def check(value: Any, path: str) -> None:
        if type(value) is not dict:
            _fail(path, f"expected an object, got {_got(value)}")
        for key, inner in required.items():
            if key not in value:
                _fail(f"{path}.{key}" if path else key, "is a required property")
            inner(value[key], f"{path}.{key}" if path else key)
        for key, inner in optional.items():
            field = value.get(key)
            if field is not None:
                inner(field, f"{path}.{key}" if path else key)
    return check


def tagged(key: str, variants: dict[str, Check]) -> Check:
    """An object whose `key` (a message's role, a content part's type) selects its schema."""
    def check(value: Any, path: str) -> None:
        if type(value) is not dict:
            _fail(path, f"expected an object, got {_got(value)}")
        tag = value.get(key)
        variant = variants.get(tag) if type(tag) is str else None
        if variant is None:
            if key not in value:
                _fail(f"{path}.{key}", "is a required property")
            _fail(f"{path}.{key}", f"{tag!r} is not one of {list(variants)}")
        variant(value, path)
    return check


# -- chat completions -----------------------------------------------------------
TEXT_PART = fields({"text": STRING})
IMAGE_PART = fields({"image_url": fields({"url": STRING}, {"detail": one_of("auto", "low", "high")})})
PART = tagged("type", {"text": TEXT_PART, "image_url": IMAGE_PART, "input_audio": OBJECT, "file": OBJECT,
                       "refusal": OBJECT})
TEXT_ONLY = either(str=STRING, list=list_of(tagged("type", {"text": TEXT_PART})))
CONTENT = either(str=STRING, list=list_of(PART))
TOOL_CALL = fields({"id": STRING, "function": fields({"name": STRING, "arguments": STRING})},
                   {"type": one_of("function")})
MESSAGE = tagged("role", {
    "system": fields({"content": TEXT_ONLY}),
    "developer": fields({"content": TEXT_ONLY}),
    "user": fields({"content": CONTENT}),
    "assistant": fields(optional={"content": CONTENT, "tool_calls": list_of(TOOL_CALL)}),
    "tool": fields({"tool_call_id": STRING, "content": TEXT_ONLY}),
    "function": fields({"name": STRING, "content": nullable(STRING)}),
})
TOOL = fields({"type": one_of("function"),
               "function": fields({"name": STRING}, {"description": STRING, "parameters": OBJECT})})

CHAT_REQUEST = fields(
    {"model": string(min_length=1), "messages": list_of(MESSAGE, min_length=1)},
    {
        "stream": BOOLEAN,
        "stream_options": fields(optional={"include_usage": BOOLEAN}),
        "temperature": number(0, 2),
        "top_p": number(0, 1),
        "n": integer(1, 128),
        "max_tokens": integer(1),
        "max_completion_tokens": integer(1),
        "stop": either(str=STRING, list=list_of(STRING)),
        "seed": integer(),
        "frequency_penalty": number(-2, 2),
        "presence_penalty": number(-2, 2),
        "user": STRING,
        "tools": list_of(TOOL),
        "tool_choice": either(str=one_of("none", "auto", "required"), dict=OBJECT),
        "parallel_tool_calls": BOOLEAN,
        "response_format": fields({"type": one_of("text", "json_object", "json_schema")}, {"json_schema": OBJECT}),
        "reasoning_effort": STRING,
        "fallbacks": list_of(STRING),
        "fallback_strategy": STRING,
    },
)


# -- embeddings ------------------------------------------------------------------
def _embedding_input(value: Any, path: str) -> None:
    """A string, or a non-empty array of strings, of token ids, or of token-id arrays."""
    if type(value) is str:
        if not value:
            _fail(path, "must not be empty")
        return
    if type(value) is not list:
        _fail(path, f"expected a string or an array, got {_got(value)}")
    if not value:
        _fail(path, "must not be empty")
    item = {str: STRING, int: integer(), list: list_of(integer())}.get(type(value[0]))
    if item is None:
        _fail(f"{path}[0]", f"expected a string, an integer or an array of integers, got {_got(value[0])}")
    for i, element in enumerate(value):
        if type(element) is not type(value[0]):
            _fail(f"{path}[{i}]", f"expected {_got(value[0])} like the first item, got {_got(element)}")
        item(element, f"{path}[{i}]")


EMBEDDING_REQUEST = fields(
    {"model": string(min_length=1), "input": _embedding_input},
    {"encoding_format": one_of("float", "base64"), "dimensions": integer(1), "user": STRING,
     "fallbacks": list_of(STRING)},
)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def validate(schema: Check, body: dict[str, Any]) -> None:
    schema(body, "")
