"""Cost of `structured_output` per answer: validation and the whole step, in process (no network).

    .venv/bin/python -m bench.structured        # ~10 s; prints a table and the figures for bench/README.md

Rows: jsonschema-rs validation of one 20-field answer (parse included, as the step does it), the spec lookup a
hot request pays (the field's compiled settings come from a cache), and the step's whole added CPU on a JSON
answer (spec lookup, request rewrite, validation, `parsed`, header) against a plain pass-through. When
`jsonschema` or `fastjsonschema` happen to be installed they are measured too, for the record of the choice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.pipeline import ChatCall
from proxy.router import Served
from proxy.structured.spec import parse_spec
from proxy.structured.step import build
from proxy.structured.validate import check_answer

# 20 fields: scalars, an optional, an enum, arrays, a nested object, an array of objects.
FORMAT: dict[str, Any] = {
    "name": "string",
    "age": "integer?",
    "email": "string",
    "active": "boolean",
    "score": "number",
    "kind": "person|company|other",
    "tags": ["string"],
    "skills": "array of strings",
    "phone": "string?",
    "address": {"street": "string", "city": "string", "zip": "string?", "country": "string"},
    "jobs": [{"title": "string", "years": "integer"}],
    "notes": "string?",
    "rank": "integer",
    "website": "string?",
    "verified": "boolean",
    "balance": "number",
    "currency": "usd|eur|gbp",
    "nickname": "string?",
    "created": "string",
    "level": "integer",
}
ANSWER: dict[str, Any] = {
    "name": "Ada Lovelace",
    "age": 36,
    "email": "ada@example.com",
    "active": True,
    "score": 9.5,
    "kind": "person",
    "tags": ["math", "poetry"],
    "skills": ["analysis", "notes"],
    "phone": None,
    "address": {"street": "St James's Square", "city": "London", "zip": None, "country": "UK"},
    "jobs": [{"title": "analyst", "years": 10}],
    "notes": None,
    "rank": 1,
    "website": None,
    "verified": True,
    "balance": 12.5,
    "currency": "gbp",
    "nickname": "Enchantress of Numbers",
    "created": "1815-12-10",
    "level": 3,
}
assert len(FORMAT) == 20


def per_call_us(fn: Callable[[], Any], seconds: float = 1.0) -> float:
    for _ in range(200):
        fn()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            fn()
        n += 200
    return (time.perf_counter() - started) / n * 1e6


def step_overhead_us(seconds: float = 1.0) -> tuple[float, float]:
    """(µs per request through the step, µs per request without it), with an upstream that answers at once."""
    text = orjson.dumps(ANSWER).decode()
    result = {
        "id": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "structured_output": {"format": FORMAT},
    }
    deployment: Any = type("D", (), {"name": "m"})()
    raw = orjson.dumps(result)

    async def upstream(call: ChatCall) -> Served[Any]:
        return Served(orjson.loads(raw), deployment, None, [], ["m:200"])  # type: ignore[arg-type]

    async def run(n: int, structured: bool) -> float:
        started = time.perf_counter()
        for _ in range(n):
            call = ChatCall(body, [("m", (deployment,))], {})
            if structured:
                step = build(None, body["structured_output"], body)  # type: ignore[arg-type]
                await step.complete(call, upstream)  # type: ignore[union-attr]
            else:
                await upstream(call)
        return (time.perf_counter() - started) / n * 1e6

    n = max(2000, int(seconds * 20000))
    asyncio.run(run(500, True))
    # best of three, interleaved, so a noisy neighbour on a shared box inflates neither side alone
    return (
        min(asyncio.run(run(n, True)) for _ in range(3)),
        min(asyncio.run(run(n, False)) for _ in range(3)),
    )


def main() -> None:
    spec = parse_spec({"format": FORMAT})
    assert spec is not None
    text = orjson.dumps(ANSWER).decode()
    assert check_answer(text, spec.validator, False)[1] == [], check_answer(text, spec.validator, False)
    rows = [
        ("orjson.loads only (20-field answer)", per_call_us(lambda: orjson.loads(text))),
        (
            "jsonschema-rs: parse + validate (the step's check)",
            per_call_us(lambda: check_answer(text, spec.validator, False)),
        ),
        ("spec lookup (hot request, cached compile)", per_call_us(lambda: parse_spec({"format": FORMAT}))),
    ]
    schema = orjson.loads(orjson.dumps(spec.schema))
    try:
        import fastjsonschema

        fast = fastjsonschema.compile(schema)
        rows.append(("fastjsonschema: parse + validate", per_call_us(lambda: fast(orjson.loads(text)))))
    except ImportError:
        pass
    try:
        import jsonschema

        slow = jsonschema.Draft202012Validator(schema)
        rows.append(
            ("jsonschema: parse + is_valid", per_call_us(lambda: slow.is_valid(orjson.loads(text)), 0.5))
        )
    except ImportError:
        pass
    with_step, without = step_overhead_us()
    rows.append(("whole step on a JSON answer, added CPU per request", with_step - without))
    print("| what (20-field schema) | µs per answer |\n|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
