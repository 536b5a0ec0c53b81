"""The same `send`/`Response` surface as `Client`, over aiohttp's client.

Not the hot path: bench/ runs the gateway with it (`OMNI_LLM_UPSTREAM_CLIENT=aiohttp`)
to measure the lean client against a mature one, and tests/test_http_conformance.py
runs its rows against both to show they agree. aiohttp comes with the `dev` extra.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

from proxy.config import UpstreamLimits
from translators.http.client import default_tls
from translators.http.connection import ResponseTooLarge, UpstreamConnectError, UpstreamConnectionLost


class AiohttpResponse:
    def __init__(self, response: Any, max_bytes: int) -> None:
        self._response = response
        self._max_bytes = max_bytes
        self.status: int = response.status

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)  # type: ignore[no-any-return]

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import aiohttp

        total = 0
        try:
            async for chunk in self._response.content.iter_any():
                total += len(chunk)
                if total > self._max_bytes:
                    raise ResponseTooLarge(f"upstream response larger than {self._max_bytes} bytes")
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamConnectionLost(f"upstream connection lost ({exc})") from exc
        finally:
            self._response.release()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        self._response.release()


class AiohttpClient:
    """Keep-alive connections to one origin through an aiohttp session (opened on first use)."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float | None = 600.0,
                 ssl_context: ssl.SSLContext | None = None, limits: UpstreamLimits | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **headers}
        self.timeout = timeout
        self.limits = limits or UpstreamLimits()
        self._ssl_context = ssl_context
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.limits.max_connections,
                                         keepalive_timeout=self.limits.idle_timeout_s, use_dns_cache=False,
                                         ssl=self._ssl_context or default_tls())
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def send(self, path: str, body: bytes, timeout: float | None = None,
                   extra_headers: bytes = b"") -> AiohttpResponse:
        import aiohttp

        timeout = self.timeout if timeout is None else timeout
        session = self._session or self._open()
        gap = self.limits.read_timeout_s if timeout is None else min(self.limits.read_timeout_s, timeout)
        limits = aiohttp.ClientTimeout(total=None, connect=self.limits.connect_timeout_s, sock_read=gap)
        try:
            async with asyncio.timeout(timeout):
                headers = self._headers
                if extra_headers:
                    lines = extra_headers.decode("latin-1").split("\r\n")[1:]
                    headers = {**headers, **dict(line.split(": ", 1) for line in lines)}
                response = await session.post(self._base + path, data=body, headers=headers, timeout=limits)
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"could not connect ({exc})") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                aiohttp.ClientResponseError) as exc:
            raise UpstreamConnectionLost(f"upstream connection lost ({exc})") from exc
        return AiohttpResponse(response, self.limits.max_response_bytes)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
