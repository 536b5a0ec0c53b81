"""Answers checked against a JSON Schema (draft 2020-12) with jsonschema-rs.

jsonschema-rs (Rust) was measured against `jsonschema` and `fastjsonschema`
on a 20-field answer (bench/structured.py): ~1 µs per validation on top of
parsing, vs ~7 µs (fastjsonschema, which also stops at the first error) and
~200 µs (jsonschema). It lists every error with its instance path, which the
repair turn and the 502 need. A validator is compiled once per distinct schema
(cached by its canonical JSON), so a hot request pays only the check itself.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson

from proxy.errors import InvalidRequest

MAX_LISTED_ERRORS = 5  # errors quoted in a repair turn / the 502 message
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validator_for(schema: Any) -> Any:
    """The compiled validator of `schema` (one per distinct schema, whatever its key order)."""
    return _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=512)
def _compiled(canonical: bytes) -> Any:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(orjson.loads(canonical))


def check_schema(schema: Any, param: str) -> None:
    """A client's JSON Schema must itself be valid draft 2020-12 (and compile): else 400 naming where."""
    import jsonschema_rs

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object", param=param)
    try:
        jsonschema_rs.meta.validate(schema)
        validator_for(schema)
    except jsonschema_rs.ValidationError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.instance_path)
        raise InvalidRequest(
            f"{param}{where}: invalid JSON Schema: {exc.message}", param=param + where
        ) from None
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        raise InvalidRequest(f"{param}: invalid JSON Schema: {exc}", param=param) from None


def strip_fences(text: str) -> str:
    """The answer without surrounding whitespace and a Markdown code fence (json_mode answers may have one)."""
    text = text.strip()
    if text.startswith("```"):
        match = _FENCE.match(text)
        if match:
            return match.group(1).strip()
    return text


def check_answer(text: str | None, validator: Any, unwrap: bool) -> tuple[Any, list[str]]:
    """(parsed value, errors with JSON paths); no errors means valid. `validator` None: parse only.

    With `unwrap` the answer is `{"items": [...]}` and paths are reported inside the array.
    """
    if text is None or not text.strip():
        return None, ["$: the answer is empty (expected JSON)"]
    try:
        parsed = orjson.loads(strip_fences(text))
    except orjson.JSONDecodeError as exc:
        return None, [f"$: not valid JSON ({exc})"]
    if validator is None:  # strict false: parsing is the check (and the wrapper must be there to unwrap)
        if unwrap and not (isinstance(parsed, dict) and isinstance(parsed.get("items"), list)):
            return parsed, ['$: expected {"items": [...]} (the top-level array, wrapped)']
        return parsed, []
    if validator.is_valid(parsed):
        return parsed, []
    errors = []
    for error in validator.iter_errors(parsed):
        path = list(error.instance_path)
        if unwrap and path[:1] == ["items"]:
            path = path[1:]
        errors.append(f"{json_path(path)}: {error.message}")
        if len(errors) == MAX_LISTED_ERRORS:
            break
    return parsed, errors


def json_path(parts: list[Any]) -> str:
    """`['address', 'zip']` -> `$.address.zip`; list indices as `[i]`, odd keys quoted."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}"
        else:
            out += "[" + orjson.dumps(part).decode() + "]"
    return out
