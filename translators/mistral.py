"""Mistral La Plateforme through the mistralai SDK (3.x, `from mistralai.client import Mistral`).

The API is close to OpenAI's (https://docs.mistral.ai/api/#tag/chat), with
differences that shape this module:

- `seed` is `random_seed`; `tool_choice` "required" is "any"
  (https://docs.mistral.ai/capabilities/function_calling/); `response_format`
  json_schema is native (https://docs.mistral.ai/capabilities/structured-output/).
- Tool-call ids must be exactly 9 alphanumerics. Ids from elsewhere (a
  conversation started on OpenAI, a fallback) are rewritten with a hash, the
  same way in assistant `tool_calls` and in the matching `tool` messages, and
  rewritten back in responses; ids Mistral generated itself pass untouched.
- Images are `image_url` parts taking both `data:` and https URLs.
- Streams send each tool call whole in one delta (the SDK rejects fragments),
  usage on the last chunk; reasoning models send `thinking` content chunks,
  returned as `reasoning_content`.
- The SDK validates requests and responses with pydantic (an embeddings
  response without `id` fails), has no retries by default, and raises
  `SDKError` (any 4xx/5xx, body as text) or `HTTPValidationError` (422), both
  `MistralError` with `.status_code` and `.headers`; transport failures come
  through as raw `httpx2` exceptions.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx2
import orjson
import pydantic
from mistralai.client import Mistral
from mistralai.client import errors as mistral_errors

from proxy.config import Deployment, ProviderConfig
from proxy.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamError,
    UpstreamTimeout,
    parse_retry_after,
    upstream_status_error,
)
from translators.base import CHAT, EMBEDDINGS, JSON, JSON_SCHEMA, STREAM, TOOLS, VISION
from translators.common import content_text, new_tool_call_id, split_data_url

log = logging.getLogger("omni.translators")

MISTRAL_CHAT_PARAMS = frozenset({
    "messages", "model", "stream", "stream_options", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "n", "frequency_penalty", "presence_penalty", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "reasoning_effort",
})
MISTRAL_EMBEDDING_PARAMS = frozenset({"input", "encoding_format", "dimensions", "output_dimension"})
# Request fields that keep their name on the way to Mistral.
_SAME_NAME = ("temperature", "top_p", "stop", "frequency_penalty", "presence_penalty", "parallel_tool_calls", "reasoning_effort")

FINISH_REASONS = {"stop": "stop", "length": "length", "model_length": "length", "tool_calls": "tool_calls"}
TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any", "any": "any"}

_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def to_mistral_tool_call_id(call_id: str) -> str:
    """A 9-alphanumeric id for `call_id`: itself if already valid, else a stable hash of it."""
    if _MISTRAL_ID.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(digits)


def to_mistral_content(content: Any) -> str | list[JSON]:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[JSON] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image if isinstance(image, str) else image.get("url", "")
            split_data_url(url)  # rejects non-base64 data URLs early
            image_url: JSON = {"url": url}
            if isinstance(image, dict) and image.get("detail"):
                image_url["detail"] = image["detail"]
            parts.append({"type": "image_url", "image_url": image_url})
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported by Mistral", param="messages")
    return parts


def to_mistral_messages(messages: list[JSON]) -> tuple[list[JSON], dict[str, str]]:
    """OpenAI messages -> Mistral's, and {mistral tool-call id: client's id} for the ids rewritten."""
    out: list[JSON] = []
    renamed: dict[str, str] = {}
    names: dict[str, str] = {}

    def call_id(original: str) -> str:
        mistral_id = to_mistral_tool_call_id(original)
        if mistral_id != original:
            renamed[mistral_id] = original
        return mistral_id

    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": content_text(message.get("content"))})
        elif role == "user":
            out.append({"role": "user", "content": to_mistral_content(message.get("content"))})
        elif role == "assistant":
            entry: JSON = {"role": "assistant", "content": content_text(message.get("content")) or None}
            calls = message.get("tool_calls") or []
            if calls:
                entry["tool_calls"] = [
                    {"id": call_id(c["id"]), "type": "function",
                     "function": {"name": c["function"]["name"], "arguments": c["function"].get("arguments") or "{}"}}
                    for c in calls
                ]
                names.update({c["id"]: c["function"]["name"] for c in calls})
            out.append(entry)
        elif role == "tool":
            original = str(message.get("tool_call_id", ""))
            entry = {"role": "tool", "tool_call_id": call_id(original), "content": content_text(message.get("content"))}
            if original in names:
                entry["name"] = names[original]
            out.append(entry)
        else:
            raise InvalidRequest(f"message role {role!r} is not supported by Mistral", param="messages")
    return out, renamed


def to_mistral_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    if choice not in TOOL_CHOICES:
        raise InvalidRequest(f"tool_choice {choice!r} is not supported", param="tool_choice")
    return TOOL_CHOICES[choice]


def to_mistral_response_format(response_format: JSON) -> JSON:
    kind = response_format.get("type")
    if kind != "json_schema":
        return {"type": kind}
    spec = response_format.get("json_schema") or {}
    out: JSON = {"name": spec.get("name", "response"), "schema": spec.get("schema", {})}
    for key in ("description", "strict"):
        if spec.get(key) is not None:
            out[key] = spec[key]
    return {"type": "json_schema", "json_schema": out}


def to_mistral_request(request: JSON, model: str, *, stream: bool) -> tuple[JSON, dict[str, str]]:
    """OpenAI chat body -> keyword arguments of `chat.complete_async`/`stream_async`, and the renamed ids."""
    messages, renamed = to_mistral_messages(request["messages"])
    kwargs: JSON = {"model": model, "messages": messages}
    kwargs.update({k: request[k] for k in _SAME_NAME if request.get(k) is not None})
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if request.get("seed") is not None:
        kwargs["random_seed"] = request["seed"]
    n = request.get("n")
    if n not in (None, 1):
        if stream:
            raise InvalidRequest("streaming supports only n=1", param="n")
        kwargs["n"] = n
    if request.get("response_format"):
        kwargs["response_format"] = to_mistral_response_format(request["response_format"])
    if request.get("tools"):
        kwargs["tools"] = [{"type": "function", "function": t["function"]} for t in request["tools"]]
    if request.get("tool_choice") is not None:
        kwargs["tool_choice"] = to_mistral_tool_choice(request["tool_choice"])
    return kwargs, renamed


def from_mistral_finish_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    if reason == "error":
        raise UpstreamError("Mistral stopped generating because of an upstream error")
    mapped = FINISH_REASONS.get(reason)
    if mapped is None:
        log.warning("unknown Mistral finish_reason %r, reporting 'stop'", reason)
        return "stop"
    return mapped


def from_mistral_content(content: Any) -> tuple[str, str]:
    """Mistral content (a string or chunks) -> (text, reasoning text)."""
    if content is None or isinstance(content, str):
        return content or "", ""
    text, thinking = [], []
    for chunk in content:
        if chunk.get("type") == "text":
            text.append(chunk.get("text", ""))
        elif chunk.get("type") == "thinking":
            thinking.append("".join(t.get("text", "") for t in chunk.get("thinking", []) if isinstance(t, dict)))
        else:
            log.warning("ignoring Mistral content chunk of type %r", chunk.get("type"))
    return "".join(text), "".join(thinking)


def _arguments(function: JSON) -> str:
    arguments = function.get("arguments", "")
    return arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()


def _has_id(call: JSON) -> bool:
    return call.get("id") not in (None, "", "null")  # "null": the SDK's default when the API sent none


def from_mistral_tool_call(call: JSON, renamed: dict[str, str]) -> JSON:
    call_id = call["id"] if _has_id(call) else new_tool_call_id()
    return {"id": renamed.get(call_id, call_id), "type": "function",
            "function": {"name": call["function"]["name"], "arguments": _arguments(call["function"])}}


def from_mistral_usage(usage: JSON | None) -> JSON:
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    out: JSON = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": usage.get("total_tokens") or prompt + completion}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or usage.get("num_cached_tokens")
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def from_mistral_response(response: JSON, renamed: dict[str, str]) -> JSON:
    choices = []
    for choice in response.get("choices") or []:
        source = choice.get("message") or {}
        text, thinking = from_mistral_content(source.get("content"))
        message: JSON = {"role": "assistant", "content": text or None}
        if thinking:
            message["reasoning_content"] = thinking
        if source.get("tool_calls"):
            message["tool_calls"] = [from_mistral_tool_call(c, renamed) for c in source["tool_calls"]]
        choices.append({"index": choice.get("index", 0), "message": message,
                        "finish_reason": from_mistral_finish_reason(choice.get("finish_reason")), "logprobs": None})
    return {"id": response.get("id"), "object": "chat.completion", "created": response.get("created"),
            "model": response.get("model"), "choices": choices, "usage": from_mistral_usage(response.get("usage"))}


@dataclass
class MistralStreamState:
    renamed: dict[str, str] = field(default_factory=dict)
    # Mistral tool-call id -> OpenAI index (counting tool calls only, per response).
    tool_indices: dict[str, int] = field(default_factory=dict)


def from_mistral_delta_tool_call(call: JSON, state: MistralStreamState) -> JSON:
    key = call["id"] if _has_id(call) else f"#{call.get('index', 0)}"
    index = state.tool_indices.get(key)
    if index is not None:  # a continuation of a call already started: arguments only
        return {"index": index, "function": {"arguments": _arguments(call["function"])}}
    state.tool_indices[key] = index = len(state.tool_indices)
    return {"index": index, **from_mistral_tool_call(call, state.renamed)}


def from_mistral_event(chunk: JSON, state: MistralStreamState) -> list[JSON]:
    """One Mistral stream chunk -> OpenAI chunks (the choice chunk, then usage when it came)."""
    out: list[JSON] = []
    for choice in chunk.get("choices") or []:
        source = choice.get("delta") or {}
        text, thinking = from_mistral_content(source.get("content"))
        delta: JSON = {}
        if text or source.get("role"):
            delta["content"] = text
        if thinking:
            delta["reasoning_content"] = thinking
        if source.get("tool_calls"):
            delta["tool_calls"] = [from_mistral_delta_tool_call(c, state) for c in source["tool_calls"]]
        finish = from_mistral_finish_reason(choice.get("finish_reason"))
        out.append({"choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": finish}]})
    if chunk.get("usage"):
        out.append({"choices": [], "usage": from_mistral_usage(chunk["usage"])})
    return out


def to_mistral_embedding_request(request: JSON, model: str) -> JSON:
    inputs = request["input"]
    if not (isinstance(inputs, str) or isinstance(inputs, list) and all(isinstance(i, str) for i in inputs)):
        raise InvalidRequest("Mistral embeddings take text input only (no token arrays)", param="input")
    kwargs: JSON = {"model": model, "inputs": inputs}
    dimension = request.get("output_dimension") or request.get("dimensions")
    if dimension is not None:
        kwargs["output_dimension"] = dimension
    return kwargs


def from_mistral_embeddings(response: JSON) -> JSON:
    data = [{"object": "embedding", "index": item.get("index", i), "embedding": item.get("embedding") or []}
            for i, item in enumerate(response.get("data") or [])]
    usage = response.get("usage") or {}
    prompt = usage.get("prompt_tokens") or 0
    return {"object": "list", "data": data, "model": response.get("model"),
            "usage": {"prompt_tokens": prompt, "total_tokens": usage.get("total_tokens") or prompt}}


def mistral_error_message(body: str) -> str | None:
    """The message of a Mistral error body: `{"message": ...}`, FastAPI's `{"detail": [...]}`, or an
    error object where a stream event was expected (the SDK hands events over as `{"data": ...}`)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("data"), dict):
        parsed = parsed["data"]
    if not isinstance(parsed, dict):
        return None
    message, detail = parsed.get("message"), parsed.get("detail")
    if message is not None:
        return message if isinstance(message, str) else orjson.dumps(message).decode()
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return detail if isinstance(detail, str) else None


def map_mistral_error(exc: BaseException) -> ProxyError | None:
    """mistralai exception -> gateway error (most specific class first)."""
    if isinstance(exc, mistral_errors.ResponseValidationError):  # also an in-band stream error object
        detail = mistral_error_message(exc.body)
        return UpstreamError(f"upstream error: {detail}" if detail else "upstream sent a response the SDK could not parse")
    if isinstance(exc, mistral_errors.MistralError):  # SDKError, HTTPValidationError
        message = mistral_error_message(exc.body) or exc.body[:500] or f"upstream status {exc.status_code}"
        retry_after = parse_retry_after(exc.headers.get("retry-after"))
        return upstream_status_error(exc.status_code, message, retry_after=retry_after)
    if isinstance(exc, mistral_errors.NoResponseError):
        return UpstreamError("no response from the upstream")
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc, httpx2.ConnectError):
        return UpstreamError("could not connect to the upstream")
    if isinstance(exc, httpx2.TransportError):
        return UpstreamError(f"upstream connection lost ({type(exc).__name__})")
    if isinstance(exc, pydantic.ValidationError):  # the SDK refused to build the request
        first = exc.errors()[0] if exc.errors() else {}
        return InvalidRequest(f"request not accepted by the Mistral SDK: {first.get('msg', exc.title)}")
    return None


def _dump(model: Any) -> JSON:
    """The SDK's typed object -> a plain dict, once per response or chunk."""
    return model.model_dump(mode="json", by_alias=True)


class MistralProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA})
    supported_params: ClassVar[frozenset[str] | None] = MISTRAL_CHAT_PARAMS | MISTRAL_EMBEDDING_PARAMS

    def __init__(self, config: ProviderConfig) -> None:
        timeout_ms = int(config.timeout_s * 1000) if config.timeout_s else None
        self._client = Mistral(api_key=config.get("api_key"), server_url=config.get("base_url"), timeout_ms=timeout_ms)
        self._headers = dict(config.headers) or None  # no retry_config: the SDK does not retry by default

    def _call_options(self, deployment: Deployment) -> JSON:
        options: JSON = {"http_headers": self._headers}
        if deployment.timeout_s:
            options["timeout_ms"] = int(deployment.timeout_s * 1000)
        return options

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        kwargs, renamed = to_mistral_request(request, deployment.model, stream=False)
        response = await self._client.chat.complete_async(**kwargs, **self._call_options(deployment))
        return from_mistral_response(_dump(response), renamed)

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        kwargs, renamed = to_mistral_request(request, deployment.model, stream=True)
        events = await self._client.chat.stream_async(**kwargs, **self._call_options(deployment))
        state = MistralStreamState(renamed=renamed)
        try:
            async for event in events:
                for chunk in from_mistral_event(_dump(event.data), state):
                    yield chunk
        finally:
            await events.close()

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        kwargs = to_mistral_embedding_request(request, deployment.model)
        response = await self._client.embeddings.create_async(**kwargs, **self._call_options(deployment))
        return from_mistral_embeddings(_dump(response))

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_mistral_error(exc)

    async def aclose(self) -> None:
        await self._client.__aexit__(None, None, None)
