"""The one class that touches the anthropic SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anthropic
import httpx2
import orjson

from proxy.config import Deployment, ProviderConfig
from proxy.errors import ProxyError, UpstreamError
from translators.anthropic.errors import map_anthropic_error
from translators.anthropic.request import to_anthropic_request
from translators.anthropic.response import AnthropicStreamState, from_anthropic_event, from_anthropic_response
from translators.base import CHAT, JSON, JSON_SCHEMA, STREAM, TOOLS, VISION

MESSAGES_PATH = "/v1/messages"


class AnthropicProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, TOOLS, VISION, JSON_SCHEMA})
    supported_params: ClassVar[frozenset[str] | None] = frozenset({
        "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p", "top_k", "user",
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
    })

    def __init__(self, config: ProviderConfig) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key=config.get("api_key"),
            base_url=config.get("base_url"),
            max_retries=0,  # the router owns retries
            timeout=config.timeout_s or 600.0,
            default_headers=dict(config.headers) or None,
        )

    def _body(self, request: JSON, deployment: Deployment) -> JSON:
        return to_anthropic_request(request, deployment.model, deployment.options.get("max_tokens"))

    def _options(self, deployment: Deployment) -> Any:
        return {"timeout": deployment.timeout_s} if deployment.timeout_s else {}

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        response = await self._client.post(
            MESSAGES_PATH, cast_to=httpx2.Response, body=self._body(request, deployment),
            options=self._options(deployment),
        )
        message = orjson.loads(response.content)
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamError("upstream sent a malformed message")
        return from_anthropic_response(message)

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        # Raw events as dicts: the SDK still frames the SSE (event: lines, ping, in-band
        # `event: error` raised as APIStatusError) but builds no pydantic model per event.
        events = await self._client.post(
            MESSAGES_PATH, cast_to=object, body={**self._body(request, deployment), "stream": True},
            options=self._options(deployment), stream=True, stream_cls=anthropic.AsyncStream[object],
        )
        state = AnthropicStreamState()
        try:
            async for event in events:
                if not isinstance(event, dict):
                    raise UpstreamError("upstream sent a malformed stream event")
                chunk = from_anthropic_event(event, state)
                if chunk is not None:
                    yield chunk
        finally:
            await events.close()

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_anthropic_error(exc)

    async def aclose(self) -> None:
        await self._client.close()
