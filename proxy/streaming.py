"""The stream lifecycle, once for every provider.

Translators yield OpenAI chunk dicts; this module opens the stream and peeks
its first chunk (so early failures are real HTTP statuses and the router can
still fall back), then frames SSE and enforces the OpenAI stream invariants:
same id/model on every chunk, `role` on the first delta, `finish_reason` on
every choice (non-null exactly once, on the last chunk with choices), usage
only in a final empty-choices chunk and only when the client asked. A failure
after the first byte is one `data: {"error": ...}` event and no `[DONE]`; a
stream that ends without a finish_reason is such a failure too. The upstream
iterator is closed in `finally`, also when the client goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from proxy.sse import DONE, encode_event
from translators.base import JSON, Provider

# A translator's stream yields chunks, or lists of chunks (all one upstream read
# carried), which the relay then writes to the client in one go.
Item = JSON | list[JSON]
# (the first chunk with choices and what came with it in the same read, the rest)
Stream = tuple[list[JSON], AsyncIterator[Item]]
# Fields of a choice-less chunk that reach the client (an extension's progress report).
SIDE_FIELDS = ("tool_trace",)


async def open_stream(provider: Provider, request: JSON, deployment: Any) -> Stream:
    """Start the upstream stream and wait for its first chunk that has choices."""
    iterator: AsyncIterator[Item] = provider.stream(request, deployment)
    try:
        async for item in iterator:
            batch = item if type(item) is list else [item]
            for i, chunk in enumerate(batch):
                if chunk.get("choices"):
                    return batch[i:], iterator
        raise UpstreamError("upstream stream ended before any content")
    except BaseException:
        await _aclose(iterator)
        raise


class StreamRelay:
    """Normalises chunks and frames them; remembers usage for accounting."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.usage: JSON | None = None
        self._started: set[int] = set()  # choice indices seen
        self._done: set[int] = set()  # choice indices that had their finish_reason
        self.finish_reasons: list[str] = []
        self._first = True
        self.relayed = 0  # chunks with choices sent (a client that aborts is accounted with this)

    @property
    def finished(self) -> bool:
        """Every choice that appeared has finished (n > 1 streams finish per choice)."""
        return bool(self._started) and self._started <= self._done

    def frame(self, chunk: JSON) -> bytes | None:
        normal = self.normalize(chunk)
        return None if normal is None else encode_event(normal)

    def normalize(self, chunk: JSON) -> JSON | None:
        """The chunk as the client may see it (in place), a side chunk, or None (nothing to relay).

        Other ingresses (Messages, Responses, legacy completions) map what this returns into
        their own events; `frame` is it plus the SSE encoding.
        """
        usage = chunk.pop("usage", None)
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if choices and self._done:  # nothing may follow a choice's finish_reason
            choices = chunk["choices"] = [c for c in choices if c.get("index", 0) not in self._done]
        if not choices:
            return self._side_frame(chunk)
        self.relayed += 1
        chunk["id"] = self.id
        chunk["object"] = "chat.completion.chunk"
        chunk["created"] = self.created
        chunk["model"] = self.model
        for choice in choices:
            index = choice.get("index", 0)
            self._started.add(index)
            if choice.get("finish_reason") is None:
                choice["finish_reason"] = None
            else:
                self._done.add(index)
                self.finish_reasons.append(choice["finish_reason"])
        if self._first:
            self._first = False
            delta = choices[0].setdefault("delta", {})
            if "role" not in delta:
                choices[0]["delta"] = {"role": "assistant", **delta}
        return chunk

    def _side_frame(self, chunk: JSON) -> JSON | None:
        """A chunk with no choices that carries an extension's report (MCP's `tool_trace`) is relayed as is."""
        side = {key: chunk[key] for key in SIDE_FIELDS if key in chunk}
        if not side:
            return None
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], **side}

    def frames(self, chunks: list[JSON]) -> bytes:
        return b"".join([frame for chunk in chunks if (frame := self.frame(chunk))])

    def usage_frame(self) -> bytes | None:
        if not (self.include_usage and self.usage):
            return None
        return encode_event(
            {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
             "choices": [], "usage": self.usage}
        )


async def relay(
    relay_state: StreamRelay,
    first: list[JSON],
    rest: AsyncIterator[Item],
    on_error: Callable[[BaseException], ProxyError],
    render_error: Callable[[ProxyError], JSON],
    on_done: Callable[[StreamRelay, ProxyError | None], None],
    deadline: tuple[float, float] | None = None,
) -> AsyncIterator[bytes]:
    """`deadline`: (loop time, the limit it came from); a stream still open then ends with a timeout error event."""
    error: ProxyError | None = None
    clock = _Deadline(*deadline) if deadline is not None else None
    try:
        frame: bytes | None = relay_state.frames(first)
        if frame:
            yield frame
        if clock is None:
            async for item in rest:
                frame = relay_state.frames(item) if type(item) is list else relay_state.frame(item)
                if frame:
                    yield frame
        else:
            read = rest.__anext__
            while True:
                item = await clock.bound(read)
                if item is _END:
                    break
                frame = relay_state.frames(item) if type(item) is list else relay_state.frame(item)
                if frame:
                    yield frame
        if not relay_state.finished:
            raise UpstreamError("upstream stream ended before the answer was complete")
        usage = relay_state.usage_frame()
        yield usage + DONE if usage else DONE
    except Exception as exc:  # after the first byte: report in-band, never a clean [DONE]
        error = on_error(exc)
        yield encode_event(render_error(error))
    finally:
        if clock is not None:
            clock.cancel()
        await _aclose(rest)
        on_done(relay_state, error)


_END = object()  # what `_Deadline.bound` returns when the stream ended


class _Deadline:
    """A stream's overall deadline (server.request_timeout_s): one timer per stream, not a scope per read.

    When it fires during a read of the upstream, that read is cancelled and the
    cancellation becomes `UpstreamTimeout`; when it fires while a frame is being
    written to the client, the next read does not start.
    """

    def __init__(self, at: float, limit: float) -> None:
        self.limit = limit
        self.expired = False
        self._reading = False
        self._task = asyncio.current_task()
        self._timer = asyncio.get_running_loop().call_at(at, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._reading and self._task is not None:
            self._task.cancel()

    async def bound(self, read: Callable[[], Any]) -> Any:
        """The next item, or `_END`."""
        if self.expired:
            raise UpstreamTimeout(f"stream did not complete within {self.limit:g} s")
        self._reading = True
        try:
            return await read()
        except StopAsyncIteration:
            return _END
        except asyncio.CancelledError:
            if self.expired and self._task is not None and self._task.uncancel() == 0:
                raise UpstreamTimeout(f"stream did not complete within {self.limit:g} s") from None
            raise
        finally:
            self._reading = False

    def cancel(self) -> None:
        self._timer.cancel()


async def _aclose(iterator: AsyncIterator[Item]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
