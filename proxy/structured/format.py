"""The simple format of CONTRACT §9 compiled to JSON Schema (pure functions).

    {"name": "string", "age": "integer?", "tags": ["string"],
     "address": {"city": "string"}, "kind": "person|company"}

A type name (`string number integer boolean object array null`), `?` at the
end for optional-and-nullable, `a|b|c` (two or more bare words) for an enum of
strings, `array of T` (plural accepted) / `[T]` / `["array of T"]` for arrays,
`["array"]` for an array of anything, a nested dict for an object. Every
object is closed (all keys required, `additionalProperties: false`) — what
OpenAI's strict mode and Anthropic's structured output demand. The schema sent
upstream lists `?` keys as required-but-nullable (strict vendors require every
key); the schema the answer is validated against lets them be left out too.
A bad format is an `InvalidRequest` whose `param` is the exact path.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import InvalidRequest

JSON = dict[str, Any]

TYPE_NAMES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_PLURALS = {name + "s": name for name in TYPE_NAMES if name != "null"}
_ENUM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:\|[A-Za-z0-9_][A-Za-z0-9_.\-]*)+")
_ARRAY_OF = re.compile(r"array\s+of\s+(.+)")
ITEMS_KEY = "items"  # the key a top-level array is wrapped under upstream


def format_to_schema(
    fmt: Any, path: str = "structured_output.format", *, for_validation: bool = False
) -> JSON:
    """The JSON Schema of a simple-format root (an object, or a top-level array — not wrapped here)."""
    if isinstance(fmt, dict | list):
        return _node(fmt, path, for_validation)
    root = fmt.strip() if isinstance(fmt, str) else ""
    if _ARRAY_OF.fullmatch(root) and not root.endswith("?"):  # "array of T" as the root: a top-level array
        return _type_string(root, path)
    raise InvalidRequest(
        f'{path} must be an object, a one-item array or "array of T" (answers have an object or array root), '
        f"got {_kind(fmt) if not isinstance(fmt, str) else repr(fmt)}",
        param=path,
    )


def wrap_array_root(schema: JSON) -> JSON:
    """Vendors require an object root: a top-level array goes upstream as `{"items": [...]}`."""
    return {
        "type": "object",
        "properties": {ITEMS_KEY: schema},
        "required": [ITEMS_KEY],
        "additionalProperties": False,
    }


def is_array_root(schema: JSON) -> bool:
    return schema.get("type") == "array"


def is_closed(schema: Any) -> bool:
    """True when every object lists, requires and closes all its keys, and every array has `items`.

    That is the subset OpenAI's `strict: true` accepts; anything else goes upstream with `strict: false`.
    """
    if isinstance(schema, list):
        return all(is_closed(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "object" in types:
        props = schema.get("properties")
        if not isinstance(props, dict) or schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or ()) != set(props):
            return False
    if "array" in types and "items" not in schema:
        return False
    return all(is_closed(value) for key, value in schema.items() if key not in _DATA_KEYS)


_DATA_KEYS = frozenset({"enum", "const", "default", "examples"})


def _node(value: Any, path: str, for_validation: bool) -> JSON:
    if isinstance(value, str):
        return _type_string(value, path)
    if isinstance(value, dict):
        return _object(value, path, for_validation)
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidRequest(
                f'{path}: an array is written with exactly one item type, e.g. ["string"] or [{{...}}], '
                f"got {len(value)} items",
                param=path,
            )
        item = value[0]
        if isinstance(item, str):
            spec = item.strip()
            if spec == "array":  # ["array"]: an array of anything
                return {"type": "array"}
            if _ARRAY_OF.fullmatch(spec):  # ["array of T"] is the same as "array of T"
                return _type_string(spec, f"{path}[0]")
        return {"type": "array", "items": _node(item, f"{path}[0]", for_validation)}
    raise InvalidRequest(
        f"{path}: expected a type name, an object or a one-item array, got {_kind(value)}", param=path
    )


def _object(fields: JSON, path: str, for_validation: bool) -> JSON:
    if not fields:
        raise InvalidRequest(
            f'{path}: an object needs at least one key (use "object" for any object)', param=path
        )
    properties: JSON = {}
    required: list[str] = []
    for key, value in fields.items():
        if not key:
            raise InvalidRequest(f"{path}: keys must be non-empty", param=path)
        child = f"{path}.{key}"
        properties[key] = _node(value, child, for_validation)
        if not (for_validation and _optional(value)):
            required.append(key)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _optional(value: Any) -> bool:
    return isinstance(value, str) and value.strip().endswith("?")


def _type_string(text: str, path: str) -> JSON:
    spec = text.strip()
    optional = spec.endswith("?")
    if optional:
        spec = spec[:-1].rstrip()
    schema = _base_type(spec, text, path)
    return _nullable(schema) if optional else schema


def _base_type(spec: str, text: str, path: str) -> JSON:
    if spec in TYPE_NAMES:
        return {"type": spec}
    if _ENUM.fullmatch(spec):
        words = spec.split("|")
        if len(set(words)) != len(words):
            raise InvalidRequest(f"{path}: enum {text!r} repeats a value", param=path)
        return {"type": "string", "enum": words}
    match = _ARRAY_OF.fullmatch(spec)
    if match:
        item = match.group(1).strip()
        item = _PLURALS.get(item, item)
        if item.endswith("?"):
            raise InvalidRequest(f"{path}: write 'array of T?' for an optional array ({text!r})", param=path)
        return {"type": "array", "items": _base_type(item, text, path)}
    raise InvalidRequest(
        f"{path}: unknown type {text!r} (expected one of {', '.join(sorted(TYPE_NAMES))}, "
        "optionally ending in '?', 'a|b|c' for an enum, or 'array of T')",
        param=path,
    )


def _nullable(schema: JSON) -> JSON:
    kind = schema["type"]
    if kind == "null":
        return schema
    out = {**schema, "type": [kind, "null"]}
    if "enum" in schema:
        out["enum"] = [*schema["enum"], None]
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
