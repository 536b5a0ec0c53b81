"""Server-sent events, both ways: decoding data-only upstream streams, encoding ours."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import orjson

from proxy.errors import UpstreamError

DONE = b"data: [DONE]\n\n"
MAX_LINE_BYTES = 32 * 1024 * 1024  # one SSE line (one event's data); real ones are far smaller


def encode_event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def iter_sse_batches(chunks: AsyncIterable[bytes]) -> AsyncIterator[list[bytes]]:
    """Yield, per read, the `data` payloads of the SSE events that read completed.

    Handles `\\n`, `\\r\\n` line endings, multi-line data (joined with `\\n`),
    comments and other fields (ignored), and events split across reads. A read
    that completes no event yields nothing. Pieces of an unfinished line are
    kept in a list and joined once its end arrives (linear, however many reads
    a line spans); a line longer than `MAX_LINE_BYTES` is an error.
    """
    buffer = b""
    pending: list[bytes] = []  # pieces of a line longer than one read
    pending_size = 0
    data: list[bytes] = []
    async for chunk in chunks:
        if b"\n" not in chunk:
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size + len(buffer) > MAX_LINE_BYTES:
                raise UpstreamError(f"upstream stream line longer than {MAX_LINE_BYTES} bytes")
            continue
        if pending:
            chunk = b"".join(pending) + chunk
            pending, pending_size = [], 0
        *lines, buffer = (buffer + chunk).split(b"\n")
        events = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        if events:
            yield events
    buffer += b"".join(pending)
    if buffer.startswith(b"data:"):
        value = buffer[5:].rstrip(b"\r")
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield [b"\n".join(data)]


async def iter_sse_data(chunks: AsyncIterable[bytes], end: bytes | None = None) -> AsyncIterator[bytes]:
    """Yield the `data` payload of each event of an SSE byte stream (see `iter_sse_batches`).

    Stops at the `end` payload (`[DONE]`, not yielded), telling `chunks` as `iter_chunk_batches` does.
    """
    async for events in iter_sse_batches(chunks):
        for event in events:
            if event == end:
                end_reached = getattr(chunks, "end_reached", None)
                if end_reached is not None:
                    end_reached()
                return
            yield event


async def iter_chunk_batches(
    chunks: AsyncIterable[bytes], decode: Callable[[bytes], dict[str, Any] | None], end: bytes | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """Per upstream read, the chunks `decode` makes of its events (None: nothing to relay).

    Stops at the `end` payload (`[DONE]`), telling `chunks` so when it can hear it
    (`end_reached`: the gateway's client then keeps the connection if the rest of
    the body follows). When `decode` raises in the middle of a read, the chunks
    before it are still yielded, then the error propagates.
    """
    async for events in iter_sse_batches(chunks):
        batch = []
        for data in events:
            if data == end:
                end_reached = getattr(chunks, "end_reached", None)
                if end_reached is not None:
                    end_reached()
                if batch:
                    yield batch
                return
            try:
                chunk = decode(data)
            except Exception:
                if batch:
                    yield batch
                raise
            if chunk is not None:
                batch.append(chunk)
        if batch:
            yield batch
