"""A valid instance of a JSON Schema, for the mock's structured output and tool arguments.

`instance_of(schema, text)` walks the schema the way a capable model reads it:
every property of an object (at least every required one), enums and consts
from their values, numbers inside their bounds (and on a `multipleOf`), arrays
of `minItems` (at least one item), strings that carry `text` (the last user
message) cut to `maxLength`. Local `$ref`s (`#/$defs/...`, any JSON pointer
into the root) are followed; a recursive schema switches to "minimal" mode at
the second visit of a ref or below a depth limit (required keys only, no
optional items, null or ref-free `anyOf` branches first), so it terminates.

Best effort, and documented as such: `pattern` keeps `text` when it matches,
else builds the shortest string the regex allows (translators/mock/regex.py);
`oneOf` takes the first branch without checking that no other matches; `not`,
`if/then/else`, `dependentSchemas` and `propertyNames` are ignored. Pure
functions, no I/O, no third-party imports (so `import proxy.app` stays light).
"""

from __future__ import annotations

import math
import uuid
from typing import Any, TypeGuard, TypeVar

from translators.mock.regex import string_matching

JSON = dict[str, Any]
T = TypeVar("T")
_MAX_DEPTH = 12

# Fixed, valid values for the common `format`s (deterministic: same request, same answer).
_FORMATS: dict[str, str] = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T12:00:00Z",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "demo@example.com",
    "idn-email": "demo@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri-reference": "https://example.com/",
    "uri-template": "https://example.com/{id}",
    "json-pointer": "/demo",
    "relative-json-pointer": "0",
    "regex": ".*",
}
_OBJECT_KEYS = ("properties", "required", "additionalProperties", "patternProperties", "minProperties")
_ARRAY_KEYS = ("items", "prefixItems", "minItems", "maxItems", "contains")
_STRING_KEYS = ("minLength", "maxLength", "pattern", "format")
_NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def instance_of(schema: Any, text: str) -> Any:
    """A value valid for `schema` (JSON Schema, drafts 4 to 2020-12, best effort) whose strings carry `text`."""
    return _Walker(schema, text or "hello").value(schema, depth=0, refs=(), minimal=False, variant=0)


class _Walker:
    def __init__(self, root: Any, text: str) -> None:
        self.root = root
        self.text = text

    def value(self, schema: Any, depth: int, refs: tuple[str, ...], minimal: bool, variant: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return self.text
        if depth > 4 * _MAX_DEPTH:  # only an unsatisfiable recursion (a required self-reference) gets here
            return None
        schema, refs, minimal = self.resolve(schema, refs, minimal)
        minimal = minimal or depth >= _MAX_DEPTH
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            values = schema["enum"]
            return values[variant % len(values)]
        if "allOf" in schema:
            return self.value(self.merge(schema, refs), depth + 1, refs, minimal, variant)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                rest = {k: v for k, v in schema.items() if k != key}
                branch = self.pick_branch(schema[key], minimal, refs)
                return self.value({"allOf": [rest, branch]} if rest else branch, depth + 1, refs, minimal, variant)
        kind = _type_of(schema, minimal)
        if kind == "object":
            return self.object(schema, depth, refs, minimal)
        if kind == "array":
            return self.array(schema, depth, refs, minimal)
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer", variant)
        if kind == "boolean":
            return variant % 2 == 0
        if kind == "null":
            return None
        return _string(schema, self.text, variant)

    def resolve(self, schema: JSON, refs: tuple[str, ...], minimal: bool) -> tuple[JSON, tuple[str, ...], bool]:
        """Follow `$ref` (siblings kept, 2019+ style); the second visit of a ref turns on minimal mode."""
        for _ in range(32):  # a chain of refs to refs, never a cycle of them
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                return schema, refs, minimal
            minimal = minimal or ref in refs
            target = self.pointer(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {"allOf": [target, rest]} if rest and isinstance(target, dict) else (
                target if isinstance(target, dict) else {})
            refs = (*refs, ref)
        return {}, refs, True

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}  # remote refs are not fetched: anything goes
        node: Any = self.root
        for part in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def merge(self, schema: JSON, refs: tuple[str, ...]) -> JSON:
        """allOf -> one schema: properties and required united, bounds tightened, the rest first-wins."""
        merged: JSON = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema.get("allOf") or []:
            if not isinstance(part, dict):
                continue
            part, _, _ = self.resolve(part, refs, False)
            if "allOf" in part:
                part = self.merge(part, refs)
            for key, value in part.items():
                if key not in merged:
                    merged[key] = value
                elif key == "properties" and isinstance(value, dict):
                    props = dict(merged[key])
                    for name, sub in value.items():
                        props[name] = {"allOf": [props[name], sub]} if name in props else sub
                    merged[key] = props
                elif key == "required" and isinstance(value, list):
                    merged[key] = list(dict.fromkeys([*merged[key], *value]))
                elif key in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
                    merged[key] = max(merged[key], value) if _both_numbers(merged[key], value) else merged[key]
                elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"):
                    merged[key] = min(merged[key], value) if _both_numbers(merged[key], value) else merged[key]
                elif key == "enum" and isinstance(value, list) and isinstance(merged[key], list):
                    both = [v for v in merged[key] if v in value]
                    merged[key] = both or merged[key]
                elif key == "type":
                    mine = merged[key] if isinstance(merged[key], list) else [merged[key]]
                    theirs = value if isinstance(value, list) else [value]
                    both = [t for t in mine if t in theirs or (t == "integer" and "number" in theirs)]
                    both += [t for t in theirs if t == "integer" and "number" in mine and t not in both]
                    merged[key] = both or merged[key]
                elif key == "additionalProperties" and value is False:
                    merged[key] = False
        return merged

    def pick_branch(self, branches: list[Any], minimal: bool, refs: tuple[str, ...]) -> Any:
        usable = [b for b in branches if b is not False]
        if not usable:
            return {}
        if minimal:  # end a recursion: null first, then anything that does not refer back
            for branch in usable:
                if isinstance(branch, dict) and branch.get("type") == "null":
                    return branch
            for branch in usable:
                if isinstance(branch, dict) and "$ref" not in branch:
                    return branch
            return usable[0]
        for branch in usable:  # an Optional[X] shows X, as a model would when it has a value
            if not (isinstance(branch, dict) and branch.get("type") == "null"):
                return branch
        return usable[0]

    def object(self, schema: JSON, depth: int, refs: tuple[str, ...], minimal: bool) -> JSON:
        properties = _of_type(schema, "properties", dict) or {}
        required = [k for k in _of_type(schema, "required", list) or [] if isinstance(k, str)]
        extra = schema.get("additionalProperties", True)
        names = list(dict.fromkeys(required if minimal else [*properties, *required]))
        result: JSON = {}
        for name in names:
            sub = properties.get(name, extra if isinstance(extra, dict) else True)
            result[name] = self.value(sub, depth + 1, refs, minimal, 0)
        wanted = _of_type(schema, "minProperties", int)
        if wanted is not None and extra is not False:
            index = 1
            while len(result) < wanted:
                result.setdefault(f"key_{index}", self.value(extra, depth + 1, refs, minimal, index))
                index += 1
        return result

    def array(self, schema: JSON, depth: int, refs: tuple[str, ...], minimal: bool) -> list[Any]:
        prefix: list[Any] = _of_type(schema, "prefixItems", list) or []
        items = schema.get("items", True)
        if isinstance(items, list):  # drafts 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        low = _of_type(schema, "minItems", int) or 0
        high = _of_type(schema, "maxItems", int)
        length = max(low, len(prefix) if not minimal else 0, 0 if minimal else 1)
        if items is False:
            length = min(length, len(prefix))
        if high is not None:
            length = min(length, high)
        unique = bool(schema.get("uniqueItems"))
        contains = schema.get("contains")
        result = []
        for i in range(length):
            sub = prefix[i] if i < len(prefix) else items
            if i == 0 and isinstance(contains, dict):
                sub = {"allOf": [sub, contains]} if isinstance(sub, dict) else contains
            result.append(self.value(sub, depth + 1, refs, minimal, i if unique else 0))
        return result


def _of_type(schema: JSON, key: str, kind: type[T]) -> T | None:
    value = schema.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _both_numbers(a: Any, b: Any) -> bool:
    return _is_number(a) and _is_number(b)


def _type_of(schema: JSON, minimal: bool) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        if minimal and "null" in kinds:
            return "null"
        kind = next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if isinstance(kind, str):
        return kind
    for keys, name in ((_OBJECT_KEYS, "object"), (_ARRAY_KEYS, "array"), (_STRING_KEYS, "string"),
                       (_NUMBER_KEYS, "number")):
        if any(k in schema for k in keys):
            return name
    return "string"


Bound = tuple[float, bool]  # (value, exclusive)


def _bounds(schema: JSON) -> tuple[Bound | None, Bound | None]:
    """The tightest lower and upper bound, drafts 4 (boolean exclusives) to 2020-12 (numeric ones)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if xlow is True:  # draft 4: a boolean that makes `minimum` exclusive
        xlow, low = low, None
    if xhigh is True:
        xhigh, high = high, None
    lows = [(float(v), exclusive) for v, exclusive in ((low, False), (xlow, True)) if _is_number(v)]
    highs = [(float(v), exclusive) for v, exclusive in ((high, False), (xhigh, True)) if _is_number(v)]
    lo = max(lows, key=lambda b: (b[0], b[1])) if lows else None
    hi = min(highs, key=lambda b: (b[0], not b[1])) if highs else None
    return lo, hi


def _fits(value: float, lo: Bound | None, hi: Bound | None) -> bool:
    if lo is not None and (value < lo[0] or (lo[1] and value == lo[0])):
        return False
    return not (hi is not None and (value > hi[0] or (hi[1] and value == hi[0])))


def _number(schema: JSON, integer: bool, variant: int) -> int | float:
    lo, hi = _bounds(schema)
    raw_step = schema.get("multipleOf")
    step = float(raw_step) if _is_number(raw_step) and raw_step > 0 else None
    target: float
    if lo is not None and hi is not None:
        target = (lo[0] + hi[0]) / 2
    else:
        target = 42 if integer else 42.5
        if lo is not None:
            target = max(lo[0] + (1 if lo[1] else 0), target)
        if hi is not None:
            target = min(hi[0] - (1 if hi[1] else 0), target)
    target += variant
    for candidate in _candidates(target, integer, step, lo, hi):
        if _fits(candidate, lo, hi) and (step is None or _on_step(candidate, step)):
            return candidate
    return int(target) if integer else target


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _candidates(target: float, integer: bool, step: float | None, lo: Bound | None, hi: Bound | None,
                ) -> list[int | float]:
    """Values near the target, on the step, and just inside each bound; the first that fits wins."""
    def plain(value: float) -> int | float:
        return round(value) if integer or float(value).is_integer() else value

    out: list[int | float] = [] if integer else [target]
    if step is not None:
        base = math.floor(target / step)
        out += [plain(k * step) for k in (base, base + 1, base - 1, base + 2)]
        if lo is not None:
            out.append(plain((math.floor(lo[0] / step) + 1) * step))
    floor = math.floor(target)
    out += [floor, floor + 1, floor - 1]
    if integer:
        if lo is not None:
            out.append(math.floor(lo[0]) + 1)
    else:
        out += [b[0] + (0.5 if b is lo else -0.5) if b[1] else b[0] for b in (lo, hi) if b is not None]
    return out


def _on_step(value: float, step: float) -> bool:
    """The check validators make (jsonschema: a float quotient must be integral)."""
    if isinstance(step, int) and isinstance(value, int):
        return value % step == 0
    quotient = value / step
    return quotient == int(quotient)


def _string(schema: JSON, text: str, variant: int) -> str:
    fmt = schema.get("format")
    if fmt == "uuid":
        value = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{text}#{variant}"))
    elif isinstance(fmt, str) and fmt in _FORMATS:
        value = _FORMATS[fmt]
    else:
        value = text if not variant else f"{text} {variant + 1}"
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        value = string_matching(pattern, value, variant)
    high = schema.get("maxLength")
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
        if isinstance(pattern, str):
            value = string_matching(pattern, value, variant)[:high]
    low = schema.get("minLength")
    if isinstance(low, int) and len(value) < low:
        value = (value + " " + text * (low // max(len(text), 1) + 1))[:low] if value else ("x" * low)
    return value
