"""`POST /v1/completions`: legacy text completions on every chat provider, through the chat pipeline.

Several prompts are several chat calls, run at once; for a stream they are all
opened before the first byte (so any failure is still a real status) and relayed
one after the other, their choice indices shifted and their usage summed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from proxy.errors import ProxyError
from proxy.ingress.completions import CompletionsEncoder, from_chat_completion, to_chat_requests
from proxy.ingress.relay import endpoint, relay_mapped, render_openai, stream_headers
from proxy.pipeline import add_usage
from proxy.router import to_proxy_error
from proxy.schemas import CHAT_REQUEST, parse_json_object, validate
from proxy.streaming import Item, StreamRelay
from translators.base import JSON

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from proxy.app import Endpoint, Gateway
    from proxy.router import Served
    from proxy.streaming import Stream


def build(gateway: Gateway) -> Endpoint:
    return endpoint(gateway, "completions", completions, render_openai)


async def completions(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    from proxy.app import read_body, send_stream
    from proxy.middleware import send_json

    started = time.perf_counter()
    body = parse_json_object(await read_body(receive))
    prompts, requests, dropped = to_chat_requests(body)
    for request in requests:
        validate(CHAT_REQUEST, request)
    calls = [gateway.chat_call(request, scope["state"]) for request in requests]
    n = int(body.get("n") or 1)
    echo = bool(body.get("echo"))
    completion_id = f"cmpl-{scope['state']['request_id']}"
    headers = [h for call in calls for h in call.headers]
    if not body.get("stream"):
        served_all: list[Served[JSON]] = await asyncio.gather(*(gateway.complete_chat(call) for call in calls))
        choices: list[JSON] = []
        usage: JSON | None = None
        for p, (call, served) in enumerate(zip(calls, served_all, strict=True)):
            completion = gateway.finish_chat(call, served)
            choices += from_chat_completion(completion, p * n, prompts[p], echo)
            usage = add_usage(usage, completion.get("usage"))
        answered = served_all[0]
        answered.dropped = dropped + answered.dropped
        cost = gateway._account("completions", calls[0].state, answered, usage, started)
        result = {"id": completion_id, "object": "text_completion", "created": int(time.time()),
                  "model": answered.deployment.name, "choices": sorted(choices, key=lambda c: c["index"]),
                  "usage": usage, **calls[0].extra}
        await send_json(send, result, headers=gateway._headers(answered, started, cost) + headers)
        return
    opened = await _open_all(gateway, calls)
    first = opened[0]
    first.dropped = dropped + first.dropped
    provider = gateway.pool.get(first.deployment.provider)
    state = calls[0].state
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    encoder = CompletionsEncoder(completion_id, first.deployment.name, int(time.time()), prompts, n, echo,
                                 include_usage, lambda error: render_openai(error, gateway.scrub(error.message)),
                                 calls[0].extra)

    def on_done(done: StreamRelay, error: ProxyError | None) -> None:
        if error is not None:
            state["log"]["error"] = gateway.scrub(error.message)
        gateway._account("completions", state, first, done.usage, started, status=error.status if error else 200)

    summed: list[JSON | None] = [None]
    head = [_shift(chunk, 0, summed) for chunk in first.result[0]]
    frames = relay_mapped(StreamRelay(completion_id, first.deployment.name, include_usage), head,
                          _chained(opened, n, summed), encoder, lambda exc: to_proxy_error(provider, exc), on_done)
    await send_stream(receive, send, frames, stream_headers(gateway, first, started, headers))


async def _open_all(gateway: Gateway, calls: list[Any]) -> list[Served[Stream]]:
    """Every prompt's stream, up to its first chunk; when one fails, the others are closed."""
    results = await asyncio.gather(*(gateway.open_chat(call) for call in calls), return_exceptions=True)
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        return results  # type: ignore[return-value]
    for result in results:
        if not isinstance(result, BaseException):
            aclose = getattr(result.result[1], "aclose", None)
            if aclose is not None:
                await aclose()
    raise failure


def _shift(chunk: JSON, offset: int, summed: list[JSON | None]) -> JSON:
    """Choice indices shifted to the prompt's place; usage taken out and summed over the prompts."""
    usage = chunk.pop("usage", None)
    if usage:
        summed[0] = add_usage(summed[0], usage)
    if offset:
        for choice in chunk.get("choices") or []:
            choice["index"] = choice.get("index", 0) + offset
    return chunk


async def _chained(opened: list[Served[Stream]], n: int, summed: list[JSON | None]) -> AsyncIterator[Item]:
    """The rest of the first stream, then each further stream whole; the summed usage last."""
    try:
        for p, served in enumerate(opened):
            head, rest = served.result
            if p:
                yield [_shift(chunk, p * n, summed) for chunk in head]
            async for item in rest:
                batch: list[JSON] = item if type(item) is list else [item]  # type: ignore[list-item]
                yield [_shift(chunk, p * n, summed) for chunk in batch]
        if summed[0]:
            yield {"choices": [], "usage": summed[0]}
    finally:
        for served in opened:
            aclose = getattr(served.result[1], "aclose", None)
            if aclose is not None:
                await aclose()
