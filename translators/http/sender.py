"""The SDK-configured sender the JSON translators (OpenAI, Anthropic, Groq) share."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from proxy.config import UpstreamLimits
from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, parse_retry_after, upstream_status_error
from proxy.tracing import UPSTREAM_TRACE_HEADERS
from translators.http.client import Client, PoolTimeout
from translators.http.connection import ResponseTooLarge, UpstreamConnectError, UpstreamConnectionLost

# `aiohttp` here swaps the lean client for aiohttp's (bench/ measures both side by side).
CLIENT_ENV = "OMNI_LLM_UPSTREAM_CLIENT"


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

    def __init__(self, sdk_client: Any, raw_response: type, error_message: Callable[[Any], str | None],
                 limits: UpstreamLimits | None = None) -> None:
        self.sdk = sdk_client
        self._raw = raw_response
        self._error_message = error_message
        base_url = str(sdk_client.base_url)
        self.via_sdk = env_proxy_for(base_url) is not None
        timeout = sdk_client.timeout
        if not isinstance(timeout, int | float):  # an httpx Timeout object
            timeout = getattr(timeout, "read", None)
        self._http: Client | None = None
        if not self.via_sdk:
            if os.environ.get(CLIENT_ENV) == "aiohttp":
                from translators.http.aio import AiohttpClient

                self._http = AiohttpClient(base_url, stainless_headers(sdk_client), timeout, limits=limits)  # type: ignore[assignment]
            else:
                self._http = Client(base_url, stainless_headers(sdk_client), timeout, limits=limits)

    async def post(self, path: str, body: Any, timeout: float | None = None) -> BodyStream:
        """Status checked (>= 400 raises the gateway's error); the body is the caller's to read or iterate."""
        if self._http is None:
            options = {"timeout": timeout} if timeout else {}
            return await self.sdk.post(path, cast_to=self._raw, body=body, options=options, stream=True,
                                       stream_cls=None)  # type: ignore[no-any-return]
        response = await self._http.send(path, orjson.dumps(body), timeout, UPSTREAM_TRACE_HEADERS.get())
        if response.status >= 400:
            raw = await response.aread()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            message = self._error_message(parsed) or f"upstream answered HTTP {response.status}"
            raise upstream_status_error(response.status, message,
                                        retry_after=parse_retry_after(response.header("retry-after")))
        return response  # type: ignore[return-value]

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
    if isinstance(exc, ResponseTooLarge):
        return UpstreamError(str(exc))
    if isinstance(exc, UpstreamConnectionLost):
        return UpstreamError("upstream connection lost")
    if isinstance(exc, PoolTimeout):
        return UpstreamTimeout("no free connection to the upstream (server.upstream_max_connections)")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream timed out")
    return None
