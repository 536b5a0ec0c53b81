"""What the Messages, Responses and legacy-completions ingresses share: the endpoint (the chat
route's wrapper, rendering errors in the API's own shape), and the stream relay that maps normalised OpenAI chunks into
the API's events (proxy/streaming.py's `StreamRelay.normalize` does the normalising; the chat route's
lifecycle rules hold here too: one error event after the first byte, the upstream closed in `finally`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from proxy.errors import ProxyError, UpstreamError
from proxy.streaming import Item, StreamRelay
from translators.base import JSON

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from proxy.app import Endpoint, Gateway

log = logging.getLogger("omni.ingress")

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]

Handler = Callable[["Gateway", "Scope", "Receive", "Send"], Awaitable[None]]


def render_openai(error: ProxyError, message: str) -> JSON:
    """The OpenAI error shape with the scrubbed message (legacy completions, Responses)."""
    body = error.to_dict()
    body["error"]["message"] = message
    return body


def endpoint(gateway: Gateway, route: str, handler: Handler, render: Callable[[ProxyError, str], JSON]) -> Endpoint:
    """The gateway's hot-route wrapper (client watch, drain, metrics) with this API's error shape."""
    from proxy.app import Endpoint

    async def bound(scope: Scope, receive: Receive, send: Send) -> None:
        await handler(gateway, scope, receive, send)

    return Endpoint(gateway, route, bound, lambda error: render(error, gateway.scrub(error.message)))


class Encoder(Protocol):
    """Turns the normalised OpenAI chunks of one stream into an API's SSE bytes."""

    def start(self) -> bytes: ...

    def chunk(self, chunk: JSON) -> bytes: ...

    def end(self, usage: JSON | None) -> bytes: ...

    def error(self, error: ProxyError) -> bytes: ...


async def relay_mapped(
    relay_state: StreamRelay,
    first: list[JSON],
    rest: AsyncIterator[Item],
    encoder: Encoder,
    on_error: Callable[[BaseException], ProxyError],
    on_done: Callable[[StreamRelay, ProxyError | None], None],
) -> AsyncGenerator[bytes, None]:
    """Like `proxy.streaming.relay`, with the framing of `encoder` (one write per upstream read)."""
    error: ProxyError | None = None
    try:
        yield encoder.start() + _encode(relay_state, encoder, first)
        async for item in rest:
            frame = _encode(relay_state, encoder, item if type(item) is list else [item])  # type: ignore[list-item]
            if frame:
                yield frame
        if not relay_state.finished:
            raise UpstreamError("upstream stream ended before the answer was complete")
        yield encoder.end(relay_state.usage)
    except Exception as exc:  # after the first byte: report in-band, never a clean end
        error = on_error(exc)
        yield encoder.error(error)
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
        on_done(relay_state, error)


def _encode(relay_state: StreamRelay, encoder: Encoder, chunks: list[JSON]) -> bytes:
    out = b""
    for chunk in chunks:
        normal = relay_state.normalize(chunk)
        if normal is not None and normal.get("choices"):
            out += encoder.chunk(normal)
    return out


def has_extensions(body: JSON) -> bool:
    """Whether the request asks for a pipeline step (rag, mcp, structured_output)."""
    from proxy.pipeline import STEPS

    return any(body.get(key) is not None for key, _ in STEPS)


def stream_headers(gateway: Gateway, served: Any, started: float, extra: list[tuple[bytes, bytes]]) -> list[
        tuple[bytes, bytes]]:
    return SSE_HEADERS + gateway._headers(served, started, None) + extra
