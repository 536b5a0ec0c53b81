"""The one class that touches the anthropic SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import anthropic
import httpx2
import orjson

from proxy.config import Deployment, ProviderConfig
from proxy.errors import ProxyError, UpstreamError
from proxy.sse import iter_chunk_batches
from translators.anthropic.errors import anthropic_error_message, map_anthropic_error
from translators.anthropic.request import to_anthropic_request
from translators.anthropic.response import AnthropicStreamState, from_anthropic_event, from_anthropic_response
from translators.base import CHAT, JSON, JSON_SCHEMA, STREAM, TOOLS, VISION
from translators.http import BodyStream, SDKSender, map_http_error

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


class AnthropicProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, TOOLS, VISION, JSON_SCHEMA})
    supported_params: ClassVar[frozenset[str] | None] = frozenset({
        "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p", "top_k", "user",
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
    })

    def __init__(self, config: ProviderConfig) -> None:
        client = anthropic.AsyncAnthropic(
            api_key=config.get("api_key"),
            base_url=config.get("base_url"),
            max_retries=0,  # the router owns retries
            timeout=config.timeout_s or 600.0,
            default_headers=dict(config.headers) or None,
        )
        # The SDK's base URL, auth and headers; the bytes go through translators.http (see there).
        self._sender = SDKSender(client, httpx2.Response, anthropic_error_message, config.limits)

    def _body(self, request: JSON, deployment: Deployment) -> JSON:
        return to_anthropic_request(request, deployment.model, deployment.options.get("max_tokens"))

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        response = await self._sender.post(MESSAGES_PATH, self._body(request, deployment), deployment.timeout_s)
        message = orjson.loads(await response.aread())
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamError("upstream sent a malformed message")
        return from_anthropic_response(message)

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[list[JSON]]:
        """One list of chunks per upstream read. Events are told apart by their `type`, so only
        `data:` lines are read; an `error` event raises (see `from_anthropic_event`)."""
        body = {**self._body(request, deployment), "stream": True}
        response = await self._sender.post(MESSAGES_PATH, body, deployment.timeout_s)
        state = AnthropicStreamState()

        def decode(data: bytes) -> JSON | None:
            event = orjson.loads(data)
            if not isinstance(event, dict):
                raise UpstreamError("upstream sent a malformed stream event")
            return from_anthropic_event(event, state)

        try:
            async for batch in iter_chunk_batches(response.aiter_bytes(), decode):
                yield batch
        finally:
            await response.aclose()

    # -- the Messages ingress's pass-through: Anthropic bodies in, Anthropic answers out, untranslated --
    async def messages(self, body: JSON, deployment: Deployment) -> JSON:
        """POST a Messages body as the client sent it (model already the upstream id); the raw `message`."""
        response = await self._sender.post(MESSAGES_PATH, body, deployment.timeout_s)
        message = orjson.loads(await response.aread())
        if not isinstance(message, dict):
            raise UpstreamError("upstream sent a malformed message")
        return message  # type: ignore[no-any-return]

    async def messages_stream(self, body: JSON, deployment: Deployment) -> AsyncIterator[list[JSON]]:
        """Open the upstream stream (status errors raise here, before any byte reaches the client);
        the events come as raw dicts, one list per upstream read."""
        response = await self._sender.post(MESSAGES_PATH, {**body, "stream": True}, deployment.timeout_s)
        return self._raw_events(response)

    async def _raw_events(self, response: BodyStream) -> AsyncIterator[list[JSON]]:
        try:
            async for batch in iter_chunk_batches(response.aiter_bytes(), orjson.loads):
                yield batch
        finally:
            await response.aclose()

    async def count_tokens(self, body: JSON, deployment: Deployment) -> JSON:
        response = await self._sender.post(COUNT_TOKENS_PATH, body, deployment.timeout_s)
        return orjson.loads(await response.aread())  # type: ignore[no-any-return]

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_http_error(exc) or map_anthropic_error(exc)

    async def aclose(self) -> None:
        await self._sender.aclose()
