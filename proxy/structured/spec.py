"""The `structured_output` request field checked and compiled, once per distinct value.

A hot request (the same field again) costs one `orjson.dumps` and a cache
lookup: the simple format, the schema check and the validator are compiled
on the first request that carries that value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import InvalidRequest
from proxy.structured.format import format_to_schema, is_array_root, is_closed, wrap_array_root
from proxy.structured.validate import check_schema, validator_for

JSON = dict[str, Any]
FIELD = "structured_output"
KEYS = ("format", "schema", "name", "method", "strict", "max_repairs", "enabled")
# method -> (how it is asked, default strictness); the seeds' names are aliases.
METHODS: dict[str, tuple[str, bool]] = {
    "json_schema": ("json_schema", True),
    "tool": ("tool", True),
    "json_mode": ("json_mode", True),
    "pydantic": ("json_schema", True),
    "typed_dict": ("json_schema", False),
}
MAX_REPAIRS = 3
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what OpenAI accepts for a schema or tool name


@dataclass(frozen=True)
class Spec:
    name: str
    method: str  # json_schema | tool | json_mode
    strict: bool  # validate against the schema (False: only parse)
    max_repairs: int
    schema: JSON  # sent upstream: object root (a top-level array wrapped as {"items": ...})
    wrapped: bool  # the answer is unwrapped from {"items": ...}
    closed: bool  # the schema fits OpenAI's strict subset
    validator: Any  # compiled validator (None when not strict)


def parse_spec(value: Any) -> Spec | None:
    """The field's settings, or None when `enabled: false`. Bad values are 400s naming their path."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{FIELD} must be an object", param=FIELD)
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidRequest(f"{FIELD}.enabled must be a boolean", param=f"{FIELD}.enabled")
    if not enabled:
        return None
    # Keyed by the value as sent (key order kept: it is the order the model is asked to answer in).
    return _compiled_spec(orjson.dumps(value))


@functools.lru_cache(maxsize=256)
def _compiled_spec(raw: bytes) -> Spec:
    value: JSON = orjson.loads(raw)
    unknown = [k for k in value if k not in KEYS]
    if unknown:
        raise InvalidRequest(
            f"{FIELD}.{unknown[0]}: unknown field (expected {', '.join(KEYS)})", param=f"{FIELD}.{unknown[0]}"
        )
    name = value.get("name", "output")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(f"{FIELD}.name must be 1-64 letters, digits, '_' or '-'", param=f"{FIELD}.name")
    method_name = value.get("method", "json_schema")
    if method_name not in METHODS:
        raise InvalidRequest(f"{FIELD}.method must be one of {', '.join(METHODS)}", param=f"{FIELD}.method")
    method, default_strict = METHODS[method_name]
    strict = value.get("strict", default_strict)
    if not isinstance(strict, bool):
        raise InvalidRequest(f"{FIELD}.strict must be a boolean", param=f"{FIELD}.strict")
    repairs = value.get("max_repairs", 1)
    if not isinstance(repairs, int) or isinstance(repairs, bool) or not 0 <= repairs <= MAX_REPAIRS:
        raise InvalidRequest(
            f"{FIELD}.max_repairs must be an integer from 0 to {MAX_REPAIRS}", param=f"{FIELD}.max_repairs"
        )
    upstream, checked = _schemas(value)
    wrapped = is_array_root(upstream)
    if wrapped:
        upstream, checked = _wrap(upstream), _wrap(checked)
    return Spec(
        name,
        method,
        strict,
        repairs,
        upstream,
        wrapped,
        is_closed(upstream),
        validator_for(checked) if strict else None,
    )


def _schemas(value: JSON) -> tuple[JSON, JSON]:
    """(the schema sent upstream, the schema the answer is validated against)."""
    has_format, has_schema = value.get("format") is not None, value.get("schema") is not None
    if has_format == has_schema:
        raise InvalidRequest(
            f"{FIELD} needs exactly one of 'format' (the simple format) or 'schema' (JSON Schema)",
            param=FIELD,
        )
    if has_format:
        fmt = value["format"]
        return format_to_schema(fmt), format_to_schema(fmt, for_validation=True)
    schema = value["schema"]
    check_schema(schema, f"{FIELD}.schema")
    return schema, schema


def _wrap(schema: JSON) -> JSON:
    """Top-level array -> {"items": array}; `$defs` and `$schema` stay at the root so `#/$defs/..` still resolve."""
    inner = {k: v for k, v in schema.items() if k not in ("$defs", "definitions", "$schema")}
    outer = wrap_array_root(inner)
    for key in ("$schema", "$defs", "definitions"):
        if key in schema:
            outer[key] = schema[key]
    return outer
