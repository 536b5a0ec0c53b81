"""OpenAI and any OpenAI-compatible server (Ollama, vLLM, LM Studio, ...): pass-through.

The request already is the vendor's format, so nothing is translated: the body
goes out as the client sent it (with the upstream model id), and the response
comes back as raw JSON. The SDK client supplies the base URL, auth and
headers; the bytes go through the lean client of `translators.http` (or the
SDK's own low-level `post`, when an environment proxy applies), so no
pydantic model is built per response or chunk. Streams are
data-only SSE ending in `data: [DONE]`; an in-band `{"error": ...}` frame is a
failure (https://platform.openai.com/docs/api-reference/chat-streaming).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx2
import openai
import orjson

from proxy.config import Deployment, ProviderConfig
from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, parse_retry_after, upstream_status_error
from proxy.sse import iter_chunk_batches
from translators.base import CHAT, EMBEDDINGS, JSON, JSON_SCHEMA, STREAM, TOOLS, VISION
from translators.http import SDKSender, map_http_error


def error_message(body: Any, fallback: str) -> str:
    """The vendor's message from an OpenAI-style error body (inner object or whole JSON)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
    return fallback


def map_stainless_error(exc: BaseException, sdk: Any, http: Any) -> ProxyError | None:
    """A Stainless-generated SDK's exception -> gateway error (most specific class first).

    openai and groq share the class tree; `http` is the HTTP package the SDK runs on
    (httpx2 for openai, classic httpx for groq).
    """
    if isinstance(exc, sdk.APITimeoutError | http.TimeoutException):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc, sdk.APIConnectionError):
        return UpstreamError("could not connect to the upstream")
    if isinstance(exc, sdk.APIStatusError):
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        return upstream_status_error(exc.status_code, error_message(exc.body, exc.message), retry_after=retry_after)
    if isinstance(exc, http.TransportError):  # the connection broke while reading a stream
        return UpstreamError(f"upstream connection lost ({type(exc).__name__})")
    if isinstance(exc, orjson.JSONDecodeError):
        return UpstreamError("upstream sent a malformed response")
    return None


def map_openai_error(exc: BaseException) -> ProxyError | None:
    return map_stainless_error(exc, openai, httpx2)


def from_openai_event(data: bytes) -> JSON | None:
    """One SSE data payload -> a chunk; None at `[DONE]`; an error frame raises."""
    if data == b"[DONE]":
        return None
    chunk = orjson.loads(data)
    if not isinstance(chunk, dict):
        raise UpstreamError("upstream sent a malformed stream event")
    if "error" in chunk:
        raise UpstreamError(f"upstream error mid-stream: {error_message(chunk, 'unknown error')}")
    return chunk


class OpenAIProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA})
    supported_params: ClassVar[frozenset[str] | None] = None  # pass-through: the upstream judges

    def __init__(self, config: ProviderConfig) -> None:
        client = openai.AsyncOpenAI(
            api_key=config.get("api_key", "not-needed"),
            base_url=config.get("base_url"),
            organization=config.get("organization"),
            project=config.get("project"),
            max_retries=0,  # the router owns retries
            timeout=config.timeout_s or 600.0,
            default_headers=dict(config.headers) or None,
        )
        self._sender = SDKSender(client, httpx2.Response, lambda body: error_message(body, ""), config.limits)

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        response = await self._sender.post("/chat/completions", {**request, "model": deployment.model}, deployment.timeout_s)
        result = orjson.loads(await response.aread())
        if not isinstance(result, dict) or not isinstance(result.get("choices"), list):
            raise UpstreamError("upstream sent a malformed chat completion")
        return result

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[list[JSON]]:
        """One list of chunks per upstream read."""
        options = request.get("stream_options") or {}
        body = {**request, "model": deployment.model, "stream": True, "stream_options": {**options, "include_usage": True}}
        response = await self._sender.post("/chat/completions", body, deployment.timeout_s)
        try:
            async for batch in iter_chunk_batches(response.aiter_bytes(), from_openai_event, end=b"[DONE]"):
                yield batch
        finally:
            await response.aclose()

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        response = await self._sender.post("/embeddings", {**request, "model": deployment.model}, deployment.timeout_s)
        result = orjson.loads(await response.aread())
        if not isinstance(result, dict) or not isinstance(result.get("data"), list):
            raise UpstreamError("upstream sent a malformed embedding response")
        return result

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_http_error(exc) or map_openai_error(exc)

    async def aclose(self) -> None:
        await self._sender.aclose()
