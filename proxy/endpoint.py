"""The hot routes' ASGI plumbing: reading the body, watching for the client going away, error rendering.

`Endpoint` wraps a handler (chat, embeddings, the other ingresses) as a raw ASGI
app: the body is read once, a `ClientWatch` cancels the request when the client
disconnects before the answer is complete (no further upstream attempt starts),
errors are rendered in the API's own shape, and metrics are kept. `send_stream`
relays SSE frames under the same watch. Split out of proxy/app.py; the names are
re-exported there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Receive, Scope, Send

from proxy.errors import ProxyError, ServerShuttingDown
from proxy.middleware import error_headers, send_json
from proxy.sse import encode_event
from translators.base import JSON

if TYPE_CHECKING:
    from proxy.app import Gateway


async def read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class ClientWatch:
    """The `receive` a hot handler sees: its body (already read), and a watch for the client going away.

    Started once the body is in, so the server's next `receive()` only ever returns
    `http.disconnect` (the connection dropped, or the response completed). A drop
    before the response is complete cancels the request's task: the router's retry
    sleep or upstream call gets CancelledError (providers close the upstream on it)
    and no further attempt starts. `send` marks the response complete first, so a
    finished answer is never cancelled.

    That one `receive()` coroutine is driven by future callbacks, as a Task would
    drive it, but without a Task per request: a Task cost 5–10 µs of CPU per request
    (create, schedule, cancel), the callbacks ~2 µs — this is the hot path.
    """

    __slots__ = ("_receive", "_body", "_task", "_coro", "_log", "_send", "_waiters", "_timer", "gone", "live",
                 "started")

    def __init__(self, receive: Receive, body: bytes | None, log: dict[str, Any], send: Send) -> None:
        self._receive = receive
        self._body = body
        self._log = log
        self._send = send
        self._task = asyncio.current_task()
        self._waiters: list[asyncio.Future[None]] | None = None
        self.gone = False  # the client disconnected before the response was complete
        self.live = True
        self.started = False  # http.response.start went out
        self._coro: Any = None
        # Listening costs tens of µs per request (the server's receive() parked, then unwound), so a request
        # answered within WATCH_AFTER_S never listens; a longer one (every real upstream call) does, so a
        # client that goes away cancels it at most WATCH_AFTER_S after it went.
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._listen)

    async def __call__(self) -> Message:
        body, self._body = self._body, None
        if body is not None:
            return {"type": "http.request", "body": body, "more_body": False}
        if self._timer is not None and self.live:  # asked before the watch started: start it now
            self._listen()
        if self._coro is not None:  # someone else waits for the disconnect too
            waiter = asyncio.get_running_loop().create_future()
            self._waiters = [*(self._waiters or []), waiter]
            await waiter
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif not message.get("more_body"):
            self.live = False
        await self._send(message)

    def _listen(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._coro = self._receive()
        self._step()

    def _step(self, _: object = None) -> None:
        try:
            blocked_on = self._coro.send(None)
        except StopIteration as finished:
            self._coro = None
            self._received(finished.value)
            return
        except BaseException:  # the server's receive failed: nothing to watch any more
            self._coro = None
            self._wake()
            return
        if blocked_on is None:  # a bare yield (asyncio.sleep(0)): run again on the next loop pass
            asyncio.get_running_loop().call_soon(self._step)
        else:
            blocked_on._asyncio_future_blocking = False
            blocked_on.add_done_callback(self._step)

    def _received(self, message: Message) -> None:
        if message["type"] != "http.disconnect":
            self._listen()
            return
        self._wake()
        if self.live:
            self.live = False
            self.gone = True
            self._log["client_disconnected"] = True
            self._log["status"] = CLIENT_CLOSED
            self._task.cancel()  # type: ignore[union-attr]

    def _wake(self) -> None:
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def stop(self) -> None:
        self.live = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()  # the server's receive() unwinds (its waiter is removed)
        self._wake()


WATCH_AFTER_S = 0.02  # how long a request runs before its client is watched for going away

# nginx's "client closed request": the status the access log and metrics give an aborted request.
CLIENT_CLOSED = 499


class Endpoint:
    """A hot route as a raw ASGI app (no Starlette Request/Response): errors rendered, metrics kept."""

    def __init__(self, gateway: Gateway, route: str, handler: Callable[[Scope, Receive, Send], Awaitable[None]],
                 render: Callable[[ProxyError], JSON] | None = None) -> None:
        self.gateway = gateway
        self.route = route
        self.handler = handler
        self.render = render or gateway.render_error  # another API's error shape (Anthropic's on /v1/messages)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        watch: ClientWatch | None = None
        try:
            watch = ClientWatch(receive, await read_body(receive), scope["state"]["log"], send)
            await self.handler(scope, watch, watch.send)
        except ProxyError as error:
            fields = scope["state"]["log"]
            fields["error"] = self.gateway.scrub(error.message)
            self._observe(scope, error.status, started)
            await send_json(watch.send if watch else send, self.render(error), error.status, error_headers(error))
        except ClientGone:
            pass
        except asyncio.CancelledError:
            if watch is not None and watch.started and not watch.gone:
                raise  # cancelled mid-response by something else than the client: not ours to swallow
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if watch is not None and watch.gone:
                if not watch.started:  # a stream that started was accounted by its relay
                    self._observe(scope, CLIENT_CLOSED, started)
                return
            # The server's drain period ended (SIGTERM) before this request was answered.
            error = ServerShuttingDown("the server is shutting down; retry the request")
            scope["state"]["log"]["error"] = error.message
            self._observe(scope, error.status, started)
            await send_json(send, self.render(error), error.status)
        finally:
            if watch is not None:
                watch.stop()

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        fields = scope["state"]["log"]
        self.gateway.metrics.observe(self.route, fields.get("model", ""), fields.get("provider", ""), status,
                                     time.perf_counter() - started)


async def send_stream(receive: Receive, send: Send, frames: AsyncGenerator[bytes, None],
                      headers: list[tuple[bytes, bytes]]) -> None:
    """Relay SSE frames; a client that goes away cancels the relay (whose `finally` closes the upstream).

    Under an `Endpoint`, `receive` is its `ClientWatch` (which cancels the task and accounts for the
    abort); elsewhere the body has been read and a watch is started here. A cancellation that is
    not the client's is the end of the SIGTERM drain period: the stream gets one final
    `server_shutting_down` error event instead of a silent cut.
    """
    watch = receive if isinstance(receive, ClientWatch) else None
    own = None
    if watch is None:
        own = watch = ClientWatch(receive, None, {}, send)
        send = own.send
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    try:
        async for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if watch.gone:
            if own is None:
                raise  # the Endpoint swallows it
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return
        await frames.aclose()  # accounted while the task is still cancelling: as a shutdown
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        error = ServerShuttingDown("the server shut down before the stream completed")
        await send({"type": "http.response.body", "body": encode_event(error.to_dict()), "more_body": False})
    finally:
        await frames.aclose()
        if own is not None:
            own.stop()

