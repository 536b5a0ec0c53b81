"""A lean keep-alive HTTP/1.1 client for the hot path: an asyncio protocol over httptools.

The SDKs' own HTTP stack costs about 1 ms of CPU per call (httpx2's `Request`/
`URL` objects, h11, anyio stream wrappers) plus ~0.7 ms of per-call option
handling — several times everything else the gateway does for a request. For
wire formats the gateway already speaks as JSON (OpenAI pass-through, Anthropic
Messages) the translators take the SDK's base URL, auth and default headers
once, and send the bytes through this client instead: one pooled connection
per in-flight request, the request written in one call, the response parsed by
httptools (the parser uvicorn uses) straight into bytes.

Failures are plain exceptions the translators' error tables map:
`UpstreamConnectError` (nothing reached the upstream), `UpstreamConnectionLost`
(the connection broke mid-response), `TimeoutError` (connect, first byte or a
gap between reads took longer than the timeout).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httptools
import orjson

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, parse_retry_after, upstream_status_error

_HIGH_WATER = 256 * 1024  # bytes buffered from upstream before reading pauses (slow client)
_MAX_IDLE = 100  # idle keep-alive connections kept per origin


class UpstreamConnectError(ConnectionError):
    """The connection could not be opened; the request never left."""


class UpstreamConnectionLost(ConnectionError):
    """The connection broke before the response was complete."""


@functools.cache
def _tls() -> ssl.SSLContext:
    """The system trust store (as httpx2 uses, via truststore), else the default CA paths; built once."""
    try:
        import truststore

        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    except ImportError:  # pragma: no cover - truststore comes with httpx2
        return ssl.create_default_context()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; holds the state of the response being read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.received = False  # any byte of this response
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self._paused = False

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamConnectionLost(f"malformed HTTP response from upstream ({exc})")
            self.keep_alive = False
            self.transport.close()  # type: ignore[union-attr]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.status and not self.complete and self._unframed():
            self.complete = True  # a body delimited by the connection closing
        elif not self.complete and self.error is None:
            self.error = UpstreamConnectionLost("upstream closed the connection" + (f" ({exc})" if exc else ""))
        self._wake()

    # -- httptools callbacks ---------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.complete = True

    # -- used by the pool and the response ---------------------------------------
    def _unframed(self) -> bool:
        names = {name for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
        self.transport.writelines((head, body))  # type: ignore[union-attr]

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """Status and headers are here once `Client.send` returns; the body is read or iterated once."""

    def __init__(self, client: Client, conn: _Connection, timeout: float | None) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self.status = conn.status
        self._raw_headers = conn.headers

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self._raw_headers:
            if k == key:
                return v.decode("latin-1")
        return None

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
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
                    await conn.wait(self._timeout)
        finally:
            self.close()

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self.aiter_bytes()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Back to the pool when the response was read to its end; else the connection is dropped."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn)

    async def aclose(self) -> None:
        self.close()


class Client:
    """Keep-alive connections to one origin, taken from `base_url`; `headers` go on every request."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float | None = 600.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"unsupported base URL: {base_url!r}")
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        self._prefix = url.path.rstrip("/")
        host = url.netloc.rpartition("@")[2]
        lines = [f"host: {host}"] + [f"{name}: {value}" for name, value in headers.items()
                                     if name.lower() not in ("host", "content-length", "connection")]
        self._head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._idle: collections.deque[_Connection] = collections.deque()

    async def send(self, path: str, body: bytes, timeout: float | None = None) -> Response:
        """POST `body` (JSON) to `base_url + path`; returns once the status line and headers are in."""
        timeout = self.timeout if timeout is None else timeout
        head = (f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._head
                + str(len(body)).encode() + b"\r\n\r\n")
        while self._idle:
            conn = self._idle.pop()
            if conn.lost:
                continue
            try:
                return await self._exchange(conn, head, body, timeout)
            except UpstreamConnectionLost:
                if conn.received:
                    raise
                # The upstream closed this idle connection as we reused it: try a fresh one.
        return await self._exchange(await self._connect(timeout), head, body, timeout)

    async def _connect(self, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection, self._host, self._port,
                    ssl=(self._ssl_context or _tls()) if self._tls else None, server_hostname=self._host if self._tls else None,
                )
        except OSError as exc:
            raise UpstreamConnectError(f"could not connect to {self._host}:{self._port} ({exc})") from exc
        return conn

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes, timeout: float | None) -> Response:
        try:
            conn.send(head, body)
            while not conn.status:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(timeout)
        except BaseException:
            conn.close()
            raise
        return Response(self, conn, timeout)

    def _release(self, conn: _Connection) -> None:
        if conn.complete and conn.keep_alive and not conn.lost and conn.error is None and len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()


# -- the SDK-configured sender the JSON translators share -------------------------

class BodyStream(Protocol):
    """What both this client's `Response` and an httpx/httpx2 streamed response offer."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


def env_proxy_for(url: str) -> str | None:
    """The HTTP(S)_PROXY / ALL_PROXY an httpx client would use for `url` (NO_PROXY honoured)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def stainless_headers(sdk_client: Any) -> dict[str, str]:
    """The headers a Stainless-generated SDK client (openai, anthropic, groq) sends on every call."""
    headers = {**sdk_client.default_headers, **sdk_client.auth_headers}
    return {name: value for name, value in headers.items() if isinstance(value, str)}


class SDKSender:
    """POSTs JSON with a Stainless SDK client's base URL, auth and headers.

    Directly through `Client` (the hot path), or through the SDK's own
    `post(..., stream=True)` when an environment proxy applies to the upstream
    — this client does not speak to proxies; httpx does. `error_message`
    reads the vendor's message from an error body (parsed JSON, or None).
    """

    def __init__(self, sdk_client: Any, raw_response: type, error_message: Callable[[Any], str | None]) -> None:
        self.sdk = sdk_client
        self._raw = raw_response
        self._error_message = error_message
        base_url = str(sdk_client.base_url)
        self.via_sdk = env_proxy_for(base_url) is not None
        timeout = sdk_client.timeout
        if not isinstance(timeout, int | float):  # an httpx Timeout object
            timeout = getattr(timeout, "read", None)
        self._http = None if self.via_sdk else Client(base_url, stainless_headers(sdk_client), timeout)

    async def post(self, path: str, body: Any, timeout: float | None = None) -> BodyStream:
        """Status checked (>= 400 raises the gateway's error); the body is the caller's to read or iterate."""
        if self._http is None:
            options = {"timeout": timeout} if timeout else {}
            return await self.sdk.post(path, cast_to=self._raw, body=body, options=options, stream=True,
                                       stream_cls=None)  # type: ignore[no-any-return]
        response = await self._http.send(path, orjson.dumps(body), timeout)
        if response.status >= 400:
            raw = await response.aread()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            message = self._error_message(parsed) or f"upstream answered HTTP {response.status}"
            raise upstream_status_error(response.status, message,
                                        retry_after=parse_retry_after(response.header("retry-after")))
        return response

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.sdk.close()


def map_http_error(exc: BaseException) -> ProxyError | None:
    """This client's failures -> the gateway's errors (status errors already are one)."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, UpstreamConnectError):
        return UpstreamError("could not connect to the upstream")
    if isinstance(exc, UpstreamConnectionLost):
        return UpstreamError("upstream connection lost")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream timed out")
    return None
