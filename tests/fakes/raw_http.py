"""A scripted raw-socket HTTP/1.1 upstream on 127.0.0.1: each test writes the server's bytes itself.

`RawServer(handler)` runs `handler(peer)` for every accepted connection; the
`Peer` reads whole requests (httptools) and writes, drains, closes or resets.
The server counts connections, requests and the most connections open at once.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import httptools


class Peer:
    def __init__(self, server: RawServer, index: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.index = index  # 1-based connection number
        self.reader = reader
        self.writer = writer
        self._buffer = b""

    async def request(self) -> bytes | None:
        """The next request's body, or None when the client closed the connection."""
        done: list[bytes] = []
        parts: list[bytes] = []

        class Handler:
            def on_body(self, body: bytes) -> None:
                parts.append(body)

            def on_message_complete(self) -> None:
                done.append(b"".join(parts))

        parser = httptools.HttpRequestParser(Handler())
        while not done:
            data = await self.reader.read(65536)
            if not data:
                return None
            parser.feed_data(data)
        self.server.requests.append(done[0])
        return done[0]

    async def send(self, *parts: bytes) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0), as a crashed or killed upstream does."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Peer], Awaitable[None]]


class RawServer:
    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(Peer(self, self.connections, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{self.port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def ok(body: bytes, *headers: str, status: str = "200 OK", version: str = "HTTP/1.1") -> bytes:
    head = [f"{version} {status}", f"content-length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@contextmanager
def serve_in_thread(handler: Handler) -> Iterator[tuple[str, RawServer]]:
    """The server on its own event loop in a thread (for tests that drive a subprocess synchronously)."""
    loop = asyncio.new_event_loop()
    server = RawServer(handler)
    ready = threading.Event()
    url: list[str] = []
    stop: list[asyncio.Event] = []

    async def main() -> None:
        async with server as base:
            stop.append(asyncio.Event())
            url.append(base)
            ready.set()
            await stop[0].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield url[0], server
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(5)
        loop.close()
