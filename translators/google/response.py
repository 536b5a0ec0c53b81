"""Gemini `GenerateContentResponse` JSON -> OpenAI chat completions and chunks.

Input is the response in its REST shape (camelCase, https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse),
as the SDK's types dump it with `by_alias=True`. Quirks that shape the mapping:
- Candidates carry no call ids: ids are synthesized (unique across any
  conversation) and carry the part's `thoughtSignature`, which Gemini wants
  back on the next turn (https://ai.google.dev/gemini-api/docs/thought-signatures).
- `candidatesTokenCount` excludes thinking tokens (`thoughtsTokenCount`), and
  `promptTokenCount` already includes `cachedContentTokenCount`.
- Streams send whole parts (a function call arrives complete in one chunk);
  the last chunk carries `finishReason` and the full `usageMetadata`. The
  finish is emitted after the upstream stream ends, in one chunk for every
  candidate, so the gateway sees exactly one finishing chunk even for n > 1.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from translators.base import JSON
from translators.common import new_tool_call_id
from translators.google.request import decode_signature, encode_tool_call_id

log = logging.getLogger("omni.translators")

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}


def from_google_finish_reason(reason: str | None, has_tool_calls: bool) -> str:
    if has_tool_calls and reason in (None, "STOP"):
        return "tool_calls"
    mapped = _FINISH_REASONS.get(reason or "")
    if mapped is None:
        # LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED, future values
        log.warning("unmapped Gemini finishReason %r, reporting 'stop'", reason)
        return "stop"
    return mapped


def from_google_usage(meta: JSON | None) -> JSON | None:
    if not meta:
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = meta.get("thoughtsTokenCount")
    completion = int(meta.get("candidatesTokenCount") or 0) + int(thoughts or 0)
    usage: JSON = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if meta.get("cachedContentTokenCount") is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": int(meta["cachedContentTokenCount"])}
    if thoughts is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": int(thoughts)}
    return usage


def from_google_function_call(part: JSON) -> JSON:
    """A `functionCall` part -> an OpenAI tool call (arguments complete), signature kept."""
    call = part["functionCall"]
    signature = part.get("thoughtSignature")
    tool_call: JSON = {
        "id": encode_tool_call_id(new_tool_call_id(), signature),
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": orjson.dumps(call.get("args") or {}).decode()},
    }
    if signature:
        standard = base64.b64encode(decode_signature(signature)).decode()
        tool_call["extra_content"] = {"google": {"thought_signature": standard}}
    return tool_call


def split_parts(parts: list[JSON]) -> tuple[str, str, list[JSON]]:
    """(text, thought text, tool calls) of a candidate's parts."""
    text, thoughts, calls = [], [], []
    for part in parts:
        if "functionCall" in part:
            calls.append(from_google_function_call(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else text).append(part["text"])
    return "".join(text), "".join(thoughts), calls


def _blocked_choice(response: JSON) -> JSON | None:
    """A prompt blocked before any candidate: one empty choice, content_filter."""
    reason = (response.get("promptFeedback") or {}).get("blockReason")
    if response.get("candidates") or not reason:
        return None
    log.info("Gemini blocked the prompt: %s", reason)
    return {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}


def from_google_response(response: JSON, model: str) -> JSON:
    choices = []
    for position, candidate in enumerate(response.get("candidates") or []):
        text, thoughts, calls = split_parts((candidate.get("content") or {}).get("parts") or [])
        message: JSON = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = thoughts
        finish = from_google_finish_reason(candidate.get("finishReason"), bool(calls))
        choices.append({"index": candidate.get("index", position), "message": message, "finish_reason": finish})
    blocked = _blocked_choice(response)
    if blocked:
        choices.append(blocked)
    usage = from_google_usage(response.get("usageMetadata")) or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "id": "chatcmpl-" + str(response.get("responseId") or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.get("modelVersion") or model,
        "choices": choices,
        "usage": usage,
    }


@dataclass
class GoogleStreamState:
    """Per stream: tool calls seen per candidate (their OpenAI indices), finishes, usage."""

    tool_calls: dict[int, int] = field(default_factory=dict)
    finishes: dict[int, str | None] = field(default_factory=dict)
    usage: JSON | None = None


def from_google_event(chunk: JSON, state: GoogleStreamState) -> JSON | None:
    """One streamed GenerateContentResponse -> an OpenAI chunk (None when it holds no delta)."""
    choices = []
    for position, candidate in enumerate(chunk.get("candidates") or []):
        index = candidate.get("index", position)
        text, thoughts, calls = split_parts((candidate.get("content") or {}).get("parts") or [])
        delta: JSON = {}
        if text:
            delta["content"] = text
        if thoughts:
            delta["reasoning_content"] = thoughts
        if calls:
            first = state.tool_calls.get(index, 0)
            delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
            state.tool_calls[index] = first + len(calls)
        if candidate.get("finishReason"):
            state.finishes[index] = candidate["finishReason"]
        if delta:
            choices.append({"index": index, "delta": delta})
    if _blocked_choice(chunk):
        state.finishes[0] = "PROHIBITED_CONTENT"
    usage = from_google_usage(chunk.get("usageMetadata"))
    if usage:
        state.usage = usage
    return {"choices": choices} if choices else None


def finish_google_stream(state: GoogleStreamState) -> list[JSON]:
    """The closing chunks once the upstream stream ended: the finish reasons, then usage."""
    chunks: list[JSON] = []
    if state.finishes:
        chunks.append({"choices": [
            {"index": index, "delta": {}, "finish_reason": from_google_finish_reason(reason, bool(state.tool_calls.get(index)))}
            for index, reason in sorted(state.finishes.items())
        ]})
    if state.usage:
        chunks.append({"choices": [], "usage": state.usage})
    return chunks


def response_json(response: Any) -> JSON:
    """An SDK response object -> its REST-shaped JSON (camelCase, bytes as base64)."""
    dumped: JSON = response.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude={"sdk_http_response", "automatic_function_calling_history"}
    )
    return dumped
