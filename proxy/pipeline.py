"""The chat path as a short, explicit pipeline of steps around the router.

    retrieve (rag) → offer tools / tool loop (mcp) → call (router) → validate (structured_output)

Each extension is a `Step` in its own module, built per request — and only
when the request carries its field, so a plain request pays one dict lookup
per extension and imports nothing. A step wraps the rest of the pipeline
(onion-style) once for JSON answers (`complete`) and once for streams
(`stream`): it may rewrite `call.body` before passing it on, call `nxt` more
than once (a repair round, a tool round, the next model of `call.chain`),
and decorate what comes back (`call.extra`, `call.headers`). The innermost
`nxt` is the router walking `call.chain` with its retries and fallbacks.

Every ingress (chat completions, legacy completions, Messages, Responses,
`/invoke`) goes through `Gateway.complete_chat` / `Gateway.open_chat`, so the
extensions compose with all of them and there is one pipeline.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from proxy.routing import Link
from translators.base import JSON

if TYPE_CHECKING:
    from proxy.app import Gateway
    from proxy.router import Served
    from proxy.streaming import Stream


@dataclass
class ChatCall:
    """One chat request on its way through the pipeline."""

    body: JSON  # the OpenAI request; steps may rewrite it (gateway fields are stripped by the router)
    chain: list[Link]  # the models to try, in order
    state: dict[str, Any]  # the ASGI scope state: request_id, log fields
    extra: JSON = field(default_factory=dict)  # top-level fields for the answer (JSON) / the first chunk (stream)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # extra response headers


Complete = Callable[[ChatCall], Awaitable["Served[JSON]"]]
OpenStream = Callable[[ChatCall], Awaitable["Served[Stream]"]]


class Step(Protocol):
    async def complete(self, call: ChatCall, nxt: Complete) -> Served[JSON]: ...

    async def stream(self, call: ChatCall, nxt: OpenStream) -> Served[Stream]: ...


# (request field, "module:factory"), outermost first. A factory takes
# (gateway, the field's value, the request body) and returns a Step, or None
# when the field turns the extension off (e.g. `enabled: false`). Modules are
# imported on the first request that uses them.
STEPS: tuple[tuple[str, str], ...] = (
    ("rag", "proxy.rag.step:build"),
    ("mcp", "proxy.mcp.step:build"),
    ("structured_output", "proxy.structured.step:build"),
)

StepFactory = Callable[["Gateway", Any, JSON], "Step | None"]


def _factory(target: str) -> StepFactory:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def steps_for(gateway: Gateway, body: JSON) -> list[Step]:
    """The steps this request asks for, outermost first (none for a plain request)."""
    steps: list[Step] = []
    for key, target in STEPS:
        value = body.get(key)
        if value is not None:
            step = _factory(target)(gateway, value, body)
            if step is not None:
                steps.append(step)
    return steps


def compose_complete(steps: list[Step], innermost: Complete) -> Complete:
    call = innermost
    for step in reversed(steps):
        call = _bind(step.complete, call)
    return call


def compose_stream(steps: list[Step], innermost: OpenStream) -> OpenStream:
    call = innermost
    for step in reversed(steps):
        call = _bind(step.stream, call)
    return call


def _bind(method: Callable[[ChatCall, Any], Awaitable[Any]], nxt: Any) -> Any:
    async def bound(call: ChatCall) -> Any:
        return await method(call, nxt)

    return bound


def add_usage(total: JSON | None, more: JSON | None) -> JSON | None:
    """Token usage of several rounds summed (the `*_details` counters too)."""
    if not more:
        return total
    if not total:
        return dict(more)
    summed = dict(total)
    for key, value in more.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            summed[key] = (summed.get(key) or 0) + value
        elif isinstance(value, dict):
            inner = dict(summed.get(key) or {})
            for k, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    inner[k] = (inner.get(k) or 0) + v
            summed[key] = inner
    return summed
