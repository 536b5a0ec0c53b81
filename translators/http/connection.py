"""One keep-alive HTTP/1.1 connection: an asyncio protocol that reads responses.

httptools (llhttp, the parser uvicorn uses) parses each status line and header
block and content-length or close-delimited bodies; chunked bodies go through
`chunked.ChunkedDecoder` (llhttp rejects whitespace RFC 9112 allows there).

What reaches the reader is only ever the final answer to the request just
written: interim 1xx responses are parsed and dropped (their headers never mix
into the answer's), `Content-Encoding: gzip`/`deflate` is decoded as it comes,
the decoded size is capped, and bytes that arrive when no request is in flight
(or after the answer ended) make the connection unusable instead of becoming
the next request's answer. A body delimited by the connection closing ends
cleanly only on a clean close; a reset is an error.
"""

from __future__ import annotations

import asyncio
import collections
import select
import zlib
from collections.abc import Callable

import httptools

from translators.http.chunked import MAX_HEAD, ChunkedDecoder

HIGH_WATER = 256 * 1024  # bytes buffered from upstream before reading pauses (slow consumer)
DRAIN_BYTES = 64 * 1024  # what may still arrive after a stream's logical end and be discarded
DRAIN_S = 2.0  # how long the end of a body may take after the stream's logical end

# what the connection is reading
_HEAD, _BODY, _CHUNKED, _DONE = range(4)


class UpstreamConnectError(ConnectionError):
    """The connection could not be opened; the request never left."""


class UpstreamConnectionLost(ConnectionError):
    """The connection broke (or the upstream broke HTTP) before the response was complete."""


class ResponseTooLarge(UpstreamConnectionLost):
    """The (decoded) response body passed the configured cap; the connection was dropped."""


class _Stop(Exception):
    """Raised while reading to stop; the reason is in `Connection.error` (or the response was complete)."""


def _decoder(encoding: bytes) -> zlib._Decompress | None:
    encoding = encoding.strip().lower()
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == b"deflate":
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib-wrapped (RFC 9110); raw deflate is retried below
    return None


class Connection(asyncio.Protocol):
    """One connection; holds the state of the response being read. The pool owns its life."""

    def __init__(self, max_bytes: int, on_lost: Callable[[Connection], None],
                 on_drained: Callable[[Connection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.max_bytes = max_bytes
        self._on_lost = on_lost
        self._on_drained = on_drained
        self.lost = False
        self.counted = False  # part of its pool's connection count (set once connected)
        self.expires = 0.0  # loop time after which an idle connection is not reused
        self.keep_alive_hint: float | None = None  # the upstream's `Keep-Alive: timeout=N`
        self.in_flight = False
        self._poll: select.poll | None = None
        self._drain_from = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._stage = _HEAD
        self._chunked: ChunkedDecoder | None = None
        self._reset()

    def _reset(self) -> None:
        if self._stage != _DONE or self._chunked is not None:  # llhttp is mid-message: a fresh one
            self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.total = 0
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.draining = False
        self._stage = _HEAD
        self._head = b""
        self._chunked: ChunkedDecoder | None = None
        self._paused = False
        self._interim = False
        self._decoder: zlib._Decompress | None = None
        self._encoding = b""

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # poll, not select: descriptors past 1024 are common in a busy gateway
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:  # nobody asked: never let these bytes become the next request's answer
            self._drop()
            return
        try:
            self._read(data)
        except (httptools.HttpParserError, ValueError, _Stop) as exc:
            if self.error is None and not self.complete:
                self.error = UpstreamConnectionLost(f"malformed HTTP response from upstream ({exc})")
            self._drop()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.in_flight and self.error is None:
            if exc is None and self._stage == _BODY and self._unframed():
                try:
                    self._finish()  # a body delimited by a clean close
                except _Stop:
                    pass  # the reason is in self.error
            else:
                self.error = UpstreamConnectionLost("upstream closed the connection" + (f" ({exc})" if exc else ""))
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self._on_lost(self)
        self._wake()

    def _read(self, data: bytes) -> None:
        while data:
            stage = self._stage
            if stage == _BODY:
                self.parser.feed_data(data)
                return
            if stage == _CHUNKED:
                piece, finished, data = self._chunked.feed(data)  # type: ignore[union-attr]
                if piece:
                    self._deliver(piece)
                if finished:
                    self._finish()
                    if data:
                        raise _Stop("bytes after the end of the response")
                continue
            if stage == _DONE:
                raise _Stop("bytes after the end of the response")
            head = self._head + data if self._head else data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > MAX_HEAD:
                    raise _Stop("response head too long")
                self._head = head
                return
            self._head = b""
            data = head[end + 4:]
            self.parser.feed_data(head[:end + 4])  # the callbacks below set the next stage

    # -- httptools callbacks ---------------------------------------------------
    def on_message_begin(self) -> None:
        if self._stage == _DONE:  # a second answer to one request: the connection is out of step
            raise _Stop("bytes after the end of the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self.error = UpstreamConnectionLost("upstream switched protocols unasked (101)")
                raise _Stop("101")
            self._interim = True  # 1xx (100 Continue, 103 Early Hints): not the answer
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self._stage = _BODY
        for name, value in self.headers:
            if name == b"transfer-encoding":
                if value.rpartition(b",")[2].strip().lower() == b"chunked":
                    self._stage = _CHUNKED
                    self._chunked = ChunkedDecoder()
            elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                self._encoding = value
                self._decoder = _decoder(value)
                if self._decoder is None:
                    self.error = UpstreamConnectionLost(f"unsupported content-encoding {value.decode('latin-1')!r}")
                    raise _Stop("encoding")
            elif name == b"keep-alive":
                for param in value.split(b","):
                    key, _, number = param.partition(b"=")
                    if key.strip().lower() == b"timeout" and number.strip().isdigit():
                        self.keep_alive_hint = float(number)

    def on_body(self, body: bytes) -> None:
        self._deliver(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._stage != _CHUNKED:  # no body (204, 304, content-length: 0) or its end
            self._finish()

    # -- the body ----------------------------------------------------------------
    def _deliver(self, body: bytes) -> None:
        if self._decoder is not None:
            body = self._decode(body)
        self.total += len(body)
        if self.total > self.max_bytes:
            self.error = ResponseTooLarge(f"upstream response larger than {self.max_bytes} bytes")
            raise _Stop("too large")
        if self.draining:
            if self.total - self._drain_from > DRAIN_BYTES:
                raise _Stop("more than a body's end after the stream's end")
            return
        if body:
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self._paused:
                self._paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    def _decode(self, body: bytes) -> bytes:
        decoder = self._decoder
        assert decoder is not None
        try:
            return decoder.decompress(body, self.max_bytes - self.total + 1)
        except zlib.error:
            if self._encoding.strip().lower() == b"deflate" and self.total == 0:
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send it
                self._encoding = b"raw-deflate"
                return self._decode(body)
            self.error = UpstreamConnectionLost("upstream sent a corrupt compressed body")
            raise _Stop("corrupt") from None

    def _finish(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            tail = decoder.flush()
            if tail:
                self._deliver(tail)
            if not decoder.eof:
                self.error = UpstreamConnectionLost("upstream sent a truncated compressed body")
                raise _Stop("truncated")
        self._stage = _DONE
        self.complete = True
        self.in_flight = False
        if self.draining:
            self.chunks.clear()
            self.buffered = 0
            if self._drain_timer is not None:
                self._drain_timer.cancel()
            self._on_drained(self)

    def _unframed(self) -> bool:
        names = {name for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _drop(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the pool and the response ---------------------------------------
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.lost and self.error is None

    def stale(self) -> bool:
        """An idle connection with anything to read (the upstream's FIN or RST, stray bytes) is not used again."""
        if self.lost or self._poll is None:
            return self.lost
        try:
            return bool(self._poll.poll(0))
        except OSError:
            return True

    async def wait(self, timeout: float | None) -> None:
        """Until more bytes, the end of the response or a failure arrive."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._waiter
            else:
                async with asyncio.timeout(timeout):
                    await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self._paused:
            self._paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def send(self, head: bytes, body: bytes) -> None:
        self._reset()
        self.in_flight = True
        self.transport.writelines((head, body))  # type: ignore[union-attr]

    def drain(self) -> None:
        """The reader saw the stream's logical end: read what is left of the body, then go back to the pool."""
        self.draining = True
        self._drain_from = self.total
        self.chunks.clear()
        self.buffered = 0
        if self._paused:
            self._paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_S, self.close)

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        else:
            self.lost = True
