"""Groq: an OpenAI-compatible API, so a small diff over the OpenAI pass-through.

Groq serves the Chat Completions and Embeddings wire format under
`/openai/v1` (https://console.groq.com/docs/openai); the groq SDK adds that
prefix itself, so `base_url` is the host root. The body goes out as the client
sent it, with the SDK's base URL, auth and headers, through the lean client of
`translators.http` (no per-chunk pydantic). The differences that shape this
module:

- Unsupported fields answer 400 (`logprobs`, `logit_bias`, `top_logprobs`) and
  `n` must be 1 (https://console.groq.com/docs/openai#unsupported-features):
  the first three are left out of `supported_params`, so the router drops or
  rejects them; `n != 1` is rejected here with a 400 naming `n`.
- Streams carry usage in `x_groq.usage` on the last chunk, not in a separate
  chunk (https://console.groq.com/docs/api-reference#chat-create); it is moved
  to a final `{"choices": [], "usage": ...}` chunk. `x_groq.error` means the
  stream was stopped early and is raised. `x_groq` is not relayed.
- Reasoning models return their thinking as `reasoning`
  (https://console.groq.com/docs/reasoning); it is renamed `reasoning_content`.
- groq 1.7.0 still uses classic `httpx` (the openai SDK moved to `httpx2`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import groq
import httpx
import orjson

from proxy.config import Deployment, ProviderConfig
from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.sse import iter_sse_data
from translators.base import CHAT, EMBEDDINGS, JSON, JSON_SCHEMA, STREAM, TOOLS, VISION
from translators.http import SDKSender, map_http_error
from translators.openai import error_message, from_openai_event, map_stainless_error

# https://console.groq.com/docs/api-reference#chat-create, minus logprobs/logit_bias/top_logprobs.
GROQ_CHAT_PARAMS = frozenset({
    "messages", "model", "stream", "stream_options", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "n", "frequency_penalty", "presence_penalty", "user", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "reasoning_effort", "reasoning_format", "include_reasoning",
    "service_tier", "metadata", "search_settings", "documents", "citation_options", "include_domains",
    "exclude_domains", "compound_custom", "disable_tool_validation",
})
# https://console.groq.com/docs/api-reference#embeddings-create (no `dimensions`).
GROQ_EMBEDDING_PARAMS = frozenset({"input", "encoding_format", "user"})
CHAT_PATH, EMBEDDINGS_PATH = "/openai/v1/chat/completions", "/openai/v1/embeddings"


def to_groq_request(request: JSON, model: str, *, stream: bool) -> JSON:
    """The client's body for Groq: upstream model id, `n` checked, usage is in `x_groq` anyway."""
    n = request.get("n")
    if n not in (None, 1):
        raise InvalidRequest("provider type 'groq' supports only n=1", param="n")
    body = {k: v for k, v in request.items() if k not in ("stream_options", "n")}
    body["model"] = model
    body["stream"] = stream
    return body


def from_groq_message(message: JSON) -> JSON:
    if "reasoning" in message:
        message["reasoning_content"] = message.pop("reasoning")
    return message


def from_groq_response(result: Any) -> JSON:
    if not isinstance(result, dict) or not isinstance(result.get("choices"), list):
        raise UpstreamError("upstream sent a malformed chat completion")
    result.pop("x_groq", None)
    for choice in result["choices"]:
        if isinstance(choice.get("message"), dict):
            from_groq_message(choice["message"])
    return result


@dataclass
class GroqStreamState:
    usage: JSON | None = None


def from_groq_event(chunk: JSON, state: GroqStreamState) -> JSON | None:
    """One Groq chunk -> the chunk to relay (None if only usage); usage is kept in `state`."""
    x_groq = chunk.pop("x_groq", None) or {}
    if x_groq.get("error"):
        raise UpstreamError(f"upstream error mid-stream: {x_groq['error']}")
    usage = chunk.pop("usage", None) or x_groq.get("usage")
    if usage:
        state.usage = usage
    choices = chunk.get("choices")
    if not choices:
        return None
    for choice in choices:
        if isinstance(choice.get("delta"), dict):
            from_groq_message(choice["delta"])
    return chunk


def map_groq_error(exc: BaseException) -> ProxyError | None:
    """groq SDK exception -> gateway error: the openai table, on classic httpx."""
    return map_stainless_error(exc, groq, httpx)


class GroqProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA})
    supported_params: ClassVar[frozenset[str] | None] = GROQ_CHAT_PARAMS | GROQ_EMBEDDING_PARAMS

    def __init__(self, config: ProviderConfig) -> None:
        client = groq.AsyncGroq(
            api_key=config.get("api_key"),
            base_url=config.get("base_url"),
            max_retries=0,  # the router owns retries
            timeout=config.timeout_s or 60.0,
            default_headers=dict(config.headers) or None,
        )
        self._sender = SDKSender(client, httpx.Response, lambda body: error_message(body, ""), config.limits)

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        body = to_groq_request(request, deployment.model, stream=False)
        response = await self._sender.post(CHAT_PATH, body, deployment.timeout_s)
        return from_groq_response(orjson.loads(await response.aread()))

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        body = to_groq_request(request, deployment.model, stream=True)
        response = await self._sender.post(CHAT_PATH, body, deployment.timeout_s)
        state = GroqStreamState()
        try:
            async for data in iter_sse_data(response.aiter_bytes(), end=b"[DONE]"):
                chunk = from_openai_event(data)
                if chunk is None:
                    break
                relayed = from_groq_event(chunk, state)
                if relayed is not None:
                    yield relayed
        finally:
            await response.aclose()
        if state.usage:
            yield {"choices": [], "usage": state.usage}

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        # Always floats: the gateway base64-encodes for clients that ask.
        body = {k: v for k, v in request.items() if k != "encoding_format"}
        body["model"] = deployment.model
        response = await self._sender.post(EMBEDDINGS_PATH, body, deployment.timeout_s)
        result = orjson.loads(await response.aread())
        if not isinstance(result, dict) or not isinstance(result.get("data"), list):
            raise UpstreamError("upstream sent a malformed embedding response")
        return result

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_http_error(exc) or map_groq_error(exc)

    async def aclose(self) -> None:
        await self._sender.aclose()
