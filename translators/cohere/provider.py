"""The Cohere provider: the only code that touches the `cohere` SDK (`AsyncClientV2`).

The typed SDK methods (`chat`, `chat_stream`, `embed`) do the HTTP and parse
the wire format; each response or stream event is turned into a plain dict
once (`model_dump`) and handed to the pure mapping functions. `base_url` is
always passed: the SDK's default reads `CO_API_URL` when it is imported.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import cohere
import httpx
from cohere.core.api_error import ApiError
from cohere.core.http_sse import SSEError

from proxy.config import Deployment, ProviderConfig
from proxy.errors import (
    ProxyError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    parse_retry_after,
    upstream_status_error,
)
from translators.base import CHAT, EMBEDDINGS, JSON, JSON_SCHEMA, RERANK, STREAM, TOOLS, VISION
from translators.cohere.request import to_cohere_embed_request, to_cohere_request
from translators.cohere.rerank import from_cohere_rerank_response, to_cohere_rerank_request
from translators.cohere.response import from_cohere_embed_response, from_cohere_response
from translators.cohere.stream import CohereStreamState, from_cohere_event

DEFAULT_BASE_URL = "https://api.cohere.com"

# SDK exception class -> the upstream HTTP status it stands for (most specific first).
_ERROR_STATUS: tuple[tuple[type[ApiError], int], ...] = (
    (cohere.BadRequestError, 400),
    (cohere.UnauthorizedError, 401),
    (cohere.InvalidTokenError, 401),  # Cohere's 498
    (cohere.ForbiddenError, 403),
    (cohere.NotFoundError, 404),
    (cohere.UnprocessableEntityError, 422),
    (cohere.TooManyRequestsError, 429),
    (cohere.ClientClosedRequestError, 500),  # Cohere's 499: its side gave up on the request
    (cohere.InternalServerError, 500),
    (cohere.NotImplementedError, 501),
    (cohere.ServiceUnavailableError, 503),
    (cohere.GatewayTimeoutError, 504),
)


def error_message(body: Any, fallback: str) -> str:
    """Cohere error bodies are `{"id": ..., "message": ...}`."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, str) and body:
        return body[:500]
    return fallback


def _retry_after(headers: dict[str, str] | None) -> float | None:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    seconds = parse_retry_after(lowered.get("retry-after"))
    if seconds is None:
        millis = parse_retry_after(lowered.get("retry-after-ms"))
        seconds = None if millis is None else millis / 1000
    return seconds


def map_cohere_error(exc: BaseException) -> ProxyError | None:
    """cohere SDK / httpx exception -> gateway error, by class."""
    if isinstance(exc, ApiError):
        status = next((code for cls, code in _ERROR_STATUS if isinstance(exc, cls)), exc.status_code or 502)
        message = error_message(exc.body, f"Cohere returned HTTP {status}")
        if 200 <= status < 300:  # the SDK could not parse a 200 body
            return UpstreamError("Cohere sent a malformed response")
        if status == 429:
            return RateLimited(message, retry_after=_retry_after(exc.headers))
        return upstream_status_error(status, message)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout("Cohere timed out")
    if isinstance(exc, SSEError):  # a 200 that is not an event stream
        return UpstreamError("Cohere sent a malformed stream")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError("could not connect to Cohere")
    if isinstance(exc, httpx.TransportError):  # the connection broke mid-response
        return UpstreamError(f"Cohere connection lost ({type(exc).__name__})")
    return None


def _plain(model: Any) -> JSON:
    """One SDK object -> the wire-shaped dict (aliases such as `float` restored)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)  # type: ignore[no-any-return]


class CohereProvider:
    """Cohere v2 chat (text, vision, tools, JSON schema, streams), embeddings and rerank."""

    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA, RERANK})
    supported_params: ClassVar[frozenset[str] | None] = frozenset({
        "messages", "model", "stream", "stream_options", "tools", "tool_choice", "response_format",
        "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "stop", "seed",
        "frequency_penalty", "presence_penalty", "reasoning_effort",
        # embeddings
        "input", "input_type", "dimensions", "encoding_format",
    })

    def __init__(self, config: ProviderConfig) -> None:
        self._http = httpx.AsyncClient(
            timeout=config.timeout_s or 300.0, headers=dict(config.headers), follow_redirects=True
        )
        self._client = cohere.AsyncClientV2(
            api_key=config.get("api_key"),
            base_url=config.get("base_url", DEFAULT_BASE_URL),
            max_retries=0,  # the router owns retries
            httpx_client=self._http,
            log_warning_experimental_features=False,
        )

    def _options(self, deployment: Deployment) -> Any:
        options: JSON = {"max_retries": 0}
        if deployment.timeout_s:
            options["timeout_in_seconds"] = max(1, math.ceil(deployment.timeout_s))
        return options

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        kwargs = to_cohere_request(request, deployment.model)
        response = await self._client.chat(**kwargs, request_options=self._options(deployment))
        return from_cohere_response(_plain(response), deployment.model)

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        kwargs = to_cohere_request(request, deployment.model)
        state = CohereStreamState()
        events = self._client.chat_stream(**kwargs, request_options=self._options(deployment))
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                chunk = from_cohere_event(_plain(event), state)
                if chunk is not None:
                    yield chunk
        if not state.finished:
            raise UpstreamError("Cohere stream ended without message-end")

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        kwargs = to_cohere_embed_request(request, deployment.model)
        response = await self._client.embed(**kwargs, request_options=self._options(deployment))
        return from_cohere_embed_response(_plain(response), deployment.model)

    async def rerank(self, request: JSON, deployment: Deployment) -> JSON:
        kwargs = to_cohere_rerank_request(request, deployment.model)
        response = await self._client.rerank(**kwargs, request_options=self._options(deployment))
        return from_cohere_rerank_response(_plain(response))

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_cohere_error(exc)

    async def aclose(self) -> None:
        await self._http.aclose()
