"""A lean keep-alive HTTP/1.1 client for the hot path: a pool of `Connection`s per origin.

The SDKs' own HTTP stack costs about 1 ms of CPU per call (httpx2's `Request`/
`URL` objects, h11, anyio stream wrappers) plus ~0.7 ms of per-call option
handling — several times everything else the gateway does for a request. For
wire formats the gateway already speaks as JSON (OpenAI pass-through, Anthropic
Messages) the translators take the SDK's base URL, auth and default headers
once, and POST the bytes through this client instead.

The rules it keeps (each a row of tests/test_http_conformance.py):
- at most `max_connections` per origin; beyond that a request waits for one,
  within the connect timeout; a new connection resolves the host again;
- a connection goes back to the pool only after its response was read to the
  end (or, for a stream whose logical end was seen, once the rest of the body
  arrives within `DRAIN_S`), never after an error or an abandoned read; an idle
  one is not reused past `idle_timeout_s` (or the upstream's Keep-Alive hint),
  nor when anything (its close, stray bytes) arrived while it was idle;
- a POST is never sent twice: a pooled connection found closed *before* the
  request is written is skipped; once written, a lost connection is an error
  (the router decides about retries);
- timeouts: connect (and the wait for a pooled connection), first byte (the
  request's timeout), and the gap between two reads (`read_timeout_s`);
- TLS verifies against the system trust store (OpenSSL's default paths, which
  honour `SSL_CERT_FILE`/`SSL_CERT_DIR`), one context built once.

Failures are plain exceptions the translators' error tables map:
`UpstreamConnectError` (nothing reached the upstream), `UpstreamConnectionLost`
(the connection broke mid-response, or the answer was malformed or too large),
`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from proxy.config import UpstreamLimits
from translators.http.connection import Connection, UpstreamConnectError


class PoolTimeout(TimeoutError):
    """Every allowed connection to the upstream stayed busy for the whole connect timeout."""


@functools.cache
def default_tls() -> ssl.SSLContext:
    """Verification on, OpenSSL's default CA paths (the system store; `SSL_CERT_FILE` honoured); built once.

    truststore (what httpx2 uses) costs 60-70 ms of CPU per new connection on
    Linux; this context costs a few (bench/tls_handshake.py).
    """
    context = ssl.create_default_context()
    if not context.cert_store_stats()["x509_ca"]:  # a Python whose OpenSSL has no default store
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with httpx
            pass
    return context


class Response:
    """Status and headers are here once `Client.send` returns; the body is read or iterated once."""

    def __init__(self, client: Client, conn: Connection, gap: float | None) -> None:
        self._client = client
        self._conn: Connection | None = conn
        self._gap = gap
        self._at_end = False
        self.status = conn.status
        self._raw_headers = conn.headers

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self._raw_headers:
            if k == key:
                return v.decode("latin-1")
        return None

    def aiter_bytes(self) -> Body:
        return Body(self)

    async def _chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                if conn.chunks:
                    yield conn.take()
                if conn.error is not None:
                    raise conn.error
                if conn.complete:
                    if conn.chunks:
                        yield conn.take()
                    break
                if not conn.chunks:
                    await conn.wait(self._gap)
        finally:
            self.close()

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self._chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def end_reached(self) -> None:
        """The reader saw the stream's logical end (`[DONE]`): what follows is only the body's end."""
        self._at_end = True

    def close(self) -> None:
        """Back to the pool when the response was read to its end; else the connection is dropped."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._at_end and not conn.complete and conn.error is None and not conn.lost:
            conn.drain()  # returns itself to the pool when the body's end arrives in time
        else:
            self._client._release(conn)

    async def aclose(self) -> None:
        self.close()


class Body:
    """The body's pieces as they arrive; `end_reached()` tells the response the stream's logical end was seen."""

    def __init__(self, response: Response) -> None:
        self._response = response
        self._chunks = response._chunks()

    def __aiter__(self) -> Body:
        return self

    def __anext__(self):  # type: ignore[no-untyped-def]
        return self._chunks.__anext__()

    def end_reached(self) -> None:
        self._response.end_reached()

    async def aclose(self) -> None:
        await self._chunks.aclose()


class Client:
    """Keep-alive connections to one origin, taken from `base_url`; `headers` go on every request."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float | None = 600.0,
                 ssl_context: ssl.SSLContext | None = None, limits: UpstreamLimits | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"unsupported base URL: {base_url!r}")
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        self._prefix = url.path.rstrip("/")
        host = url.netloc.rpartition("@")[2]
        skip = ("host", "content-length", "connection", "accept-encoding", "transfer-encoding")
        lines = [f"host: {host}", "accept-encoding: gzip, deflate"]
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in skip]
        self._head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        self.timeout = timeout
        self.limits = limits or UpstreamLimits()
        self._ssl_context = ssl_context
        self._idle: collections.deque[Connection] = collections.deque()
        self._open = 0  # connections open or opening, idle or busy
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def send(self, path: str, body: bytes, timeout: float | None = None, extra_headers: bytes = b"") -> Response:
        """POST `body` (JSON) to `base_url + path`; returns once the final status line and headers are in.

        `extra_headers`: raw `\r\nname: value` lines of this request alone (trace context)."""
        timeout = self.timeout if timeout is None else timeout
        head = (f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._head
                + str(len(body)).encode() + extra_headers + b"\r\n\r\n")
        conn = self._idle_connection() or await self._new_connection(timeout)
        try:
            if conn.lost:
                raise UpstreamConnectError(f"the connection to {self._host}:{self._port} closed before the request")
            conn.send(head, body)
            async with asyncio.timeout(timeout):
                while not conn.status:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(None)
        except BaseException:
            conn.close()
            raise
        gap = self.limits.read_timeout_s
        return Response(self, conn, gap if timeout is None else min(gap, timeout))

    # -- the pool ------------------------------------------------------------------
    def _idle_connection(self) -> Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if now < conn.expires and not conn.stale():
                return conn
            conn.close()
        return None

    async def _new_connection(self, timeout: float | None) -> Connection:
        """A pooled connection freed in the meantime, or a new one; waits while the pool is full."""
        limit = self.limits.connect_timeout_s if timeout is None else min(self.limits.connect_timeout_s, timeout)
        conn: Connection | None = None
        try:
            async with asyncio.timeout(limit):
                while True:
                    conn = self._idle_connection()
                    if conn is not None:
                        return conn
                    if self._open < self.limits.max_connections:
                        conn = await self._connect()
                        return conn
                    await self._wait_turn()
        except TimeoutError:
            if conn is not None:  # connected just as the time ran out: use it
                return conn
            if self._open >= self.limits.max_connections:
                raise PoolTimeout(f"all {self.limits.max_connections} connections to {self._host} stayed busy "
                                  f"for {limit:g} s") from None
            raise

    async def _wait_turn(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_next()  # woken and cancelled at once: pass the turn on
            else:
                waiter.cancel()
            raise

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        self._open += 1
        try:
            # The host is resolved on every new connection (no address cache): DNS changes are followed.
            _, conn = await loop.create_connection(
                lambda: Connection(self.limits.max_response_bytes, self._lost, self._release),
                self._host, self._port,
                ssl=(self._ssl_context or default_tls()) if self._tls else None,
                server_hostname=self._host if self._tls else None,
            )
        except BaseException as exc:
            self._open -= 1
            self._wake_next()
            if isinstance(exc, OSError):
                raise UpstreamConnectError(f"could not connect to {self._host}:{self._port} ({exc})") from exc
            raise
        conn.counted = True
        if conn.lost:  # closed during the handshake's last step
            self._lost(conn)
        return conn

    def _lost(self, conn: Connection) -> None:
        if conn.counted:
            conn.counted = False
            self._open -= 1
            if conn in self._idle:
                self._idle.remove(conn)
            self._wake_next()

    def _release(self, conn: Connection) -> None:
        if not conn.reusable():
            conn.close()  # connection_lost gives its place back
            return
        now = asyncio.get_running_loop().time()
        idle_s = self.limits.idle_timeout_s
        if conn.keep_alive_hint is not None:  # leave a second's margin before the upstream's own close
            idle_s = min(idle_s, conn.keep_alive_hint - 1)
        conn.expires = now + idle_s
        while self._idle and self._idle[0].expires <= now:
            self._idle.popleft().close()
        self._idle.append(conn)
        self._wake_next()

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
