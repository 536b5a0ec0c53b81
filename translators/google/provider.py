"""The google-genai client for provider types `gemini` and `vertex`, and its error table.

One class serves three ways in (https://googleapis.github.io/python-genai/):
- `gemini`: Gemini API key, `POST /v1/models/{m}:generateContent`, `x-goog-api-key`.
- `vertex` + `api_key`: Vertex express mode, `/v1beta1/publishers/google/models/{m}:…`.
- `vertex` + `project` (+ `location`): `/v1beta1/projects/{p}/locations/{l}/…` with an
  OAuth token from `credentials_file` (service account or authorized user) or ADC.
The SDK has no retries unless asked (the router owns them), its timeout is in
milliseconds, streams are `?alt=sse` data-only events with no terminator, and
the `Client` closes its HTTP client when garbage-collected, so it is kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import google.auth
import google.auth.exceptions
import httpx2
from google import genai
from google.genai import errors, types

from proxy.config import Deployment, ProviderConfig
from proxy.errors import (
    InvalidRequest,
    ProviderNotConfigured,
    ProxyError,
    UpstreamError,
    UpstreamTimeout,
    parse_retry_after,
    upstream_status_error,
)
from translators.base import CHAT, EMBEDDINGS, JSON, JSON_SCHEMA, STREAM, TOOLS, VISION
from translators.common import load_images
from translators.google.request import image_urls_to_fetch, to_google_request
from translators.google.response import (
    GoogleStreamState,
    finish_google_stream,
    from_google_event,
    from_google_response,
    response_json,
)

try:  # google-genai uses aiohttp for async calls when it is installed, else httpx2
    import aiohttp

    _AIOHTTP_CONNECTION: tuple[type[BaseException], ...] = (aiohttp.ClientError,)
except ImportError:
    _AIOHTTP_CONNECTION = ()

# aiohttp's ServerTimeoutError is an asyncio.TimeoutError (= TimeoutError), so one entry covers both clients.
_TIMEOUTS: tuple[type[BaseException], ...] = (httpx2.TimeoutException, TimeoutError)
_CONNECTION: tuple[type[BaseException], ...] = (httpx2.TransportError, *_AIOHTTP_CONNECTION)

log = logging.getLogger("omni.translators")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def map_google_error(exc: BaseException) -> ProxyError | None:
    """google-genai / transport exception -> gateway error (most specific class first)."""
    if isinstance(exc, errors.APIError):  # ClientError (4xx), ServerError (5xx)
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        retry_after = parse_retry_after(headers.get("retry-after"))
        message = exc.message or exc.status or f"HTTP {exc.code}"
        return upstream_status_error(int(exc.code or 502), str(message), retry_after=retry_after)
    if isinstance(exc, _TIMEOUTS):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc, _CONNECTION):
        return UpstreamError(f"could not talk to the upstream ({type(exc).__name__})")
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return UpstreamError(f"could not obtain Google credentials ({type(exc).__name__})", retryable=False)
    return None


def load_credentials(config: ProviderConfig) -> Any:
    """Vertex project mode: `credentials_file` (any google.auth file type), else None (ADC, lazily)."""
    path = config.get("credentials_file")
    if not path:
        return None
    try:
        credentials, _ = google.auth.load_credentials_from_file(path, scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.GoogleAuthError as exc:
        raise ProviderNotConfigured(f"provider '{config.name}': cannot load credentials_file: {exc}") from None
    return credentials


def build_client(config: ProviderConfig, credentials: Any = None) -> genai.Client:
    options = types.HttpOptions(
        base_url=config.get("base_url"),
        headers=dict(config.headers) or None,
        timeout=math.ceil(config.timeout_s * 1000) if config.timeout_s else None,  # milliseconds
    )
    if config.type == "gemini":
        return genai.Client(api_key=config.get("api_key"), http_options=options)
    if config.get("api_key"):  # Vertex express mode
        return genai.Client(vertexai=True, api_key=config.get("api_key"), http_options=options)
    return genai.Client(
        vertexai=True,
        project=config.get("project"),
        location=config.get("location", "us-central1"),
        credentials=credentials or load_credentials(config),
        http_options=options,
    )


def to_google_embed_request(request: JSON) -> tuple[list[str], JSON]:
    raw = request.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("Google embeddings take a string or a list of strings as input", param="input")
    config: JSON = {}
    if request.get("dimensions"):
        config["outputDimensionality"] = request["dimensions"]
    if request.get("task_type"):
        config["taskType"] = str(request["task_type"]).upper()
    return texts, config


def from_google_embeddings(response: JSON, model: str) -> JSON:
    data, tokens = [], 0
    for i, embedding in enumerate(response.get("embeddings") or []):
        data.append({"object": "embedding", "index": i, "embedding": embedding.get("values") or []})
        tokens += int((embedding.get("statistics") or {}).get("tokenCount") or 0)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class GoogleProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA})
    supported_params: ClassVar[frozenset[str] | None] = frozenset({
        "tools", "tool_choice", "response_format", "temperature", "top_p", "top_k", "max_tokens",
        "max_completion_tokens", "stop", "seed", "n", "presence_penalty", "frequency_penalty", "reasoning_effort",
        "dimensions", "encoding_format", "task_type",
    })

    def __init__(self, config: ProviderConfig, credentials: Any = None) -> None:
        """`credentials`: prebuilt google.auth credentials for Vertex project mode (tests, embedding apps)."""
        self._client = build_client(config, credentials)  # keep it: the Client closes itself when collected
        self._models = self._client.aio.models

    def _config(self, config: JSON, deployment: Deployment) -> JSON:
        if deployment.timeout_s:
            config["httpOptions"] = {"timeout": math.ceil(deployment.timeout_s * 1000)}
        return config

    async def _request(self, request: JSON, deployment: Deployment) -> tuple[list[JSON], JSON]:
        images = await load_images(image_urls_to_fetch(request.get("messages") or []))
        contents, config = to_google_request(request, images)
        return contents, self._config(config, deployment)

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        contents, config = await self._request(request, deployment)
        response = await self._models.generate_content(model=deployment.model, contents=contents, config=config)
        return from_google_response(response_json(response), deployment.model)

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        contents, config = await self._request(request, deployment)
        upstream = await self._models.generate_content_stream(model=deployment.model, contents=contents, config=config)
        state = GoogleStreamState()
        try:
            async for response in upstream:
                chunk = from_google_event(response_json(response), state)
                if chunk is not None:
                    yield chunk
        finally:
            await upstream.aclose()
        for chunk in finish_google_stream(state):
            yield chunk

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        texts, config = to_google_embed_request(request)
        response = await self._models.embed_content(
            model=deployment.model, contents=texts, config=self._config(config, deployment) or None
        )
        return from_google_embeddings(response_json(response), deployment.model)

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_google_error(exc)

    async def aclose(self) -> None:
        await self._client.aio.aclose()
