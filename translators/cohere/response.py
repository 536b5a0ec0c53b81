"""Cohere v2 chat / embed responses (as plain dicts) -> OpenAI shapes (pure)."""

from __future__ import annotations

import logging
import time
from typing import Any

from proxy.errors import UpstreamError, UpstreamTimeout
from translators.base import JSON
from translators.common import new_tool_call_id

log = logging.getLogger("omni.translators")

# https://docs.cohere.com/reference/chat#response.body.finish_reason
FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
# Finish reasons that mean the generation failed: the client gets an error, not a truncated answer.
FAILED_FINISH_REASONS = {"ERROR": UpstreamError, "TIMEOUT": UpstreamTimeout}


def from_cohere_finish_reason(reason: Any, error: str | None = None) -> str:
    """Cohere finish reason -> OpenAI; ERROR / TIMEOUT raise (502 / 504)."""
    if reason in FAILED_FINISH_REASONS:
        detail = f": {error}" if error else ""
        raise FAILED_FINISH_REASONS[reason](f"Cohere ended the generation with {reason}{detail}")
    mapped = FINISH_REASONS.get(reason)  # type: ignore[arg-type]
    if mapped is None:
        log.warning("unknown Cohere finish_reason %r, reporting 'stop'", reason)
        return "stop"
    return mapped


def from_cohere_usage(usage: JSON | None) -> JSON:
    """Billed units are what Cohere charges for; `tokens` (incl. the prompt template) is the fallback."""
    usage = usage or {}
    billed, tokens = usage.get("billed_units") or {}, usage.get("tokens") or {}

    def count(key: str) -> int:
        value = billed.get(key)
        if value is None:
            value = tokens.get(key)
        return int(value or 0)

    prompt, completion = count("input_tokens"), count("output_tokens")
    out: JSON = {"prompt_tokens": prompt, "completion_tokens": completion}
    out["total_tokens"] = prompt + completion
    if usage.get("cached_tokens") is not None:
        out["prompt_tokens_details"] = {"cached_tokens": int(usage["cached_tokens"])}
    return out


def from_cohere_tool_call(call: JSON) -> JSON:
    function = call.get("function") or {}
    return {
        "id": call.get("id") or new_tool_call_id(),
        "type": "function",
        "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or "{}"},
    }


def from_cohere_message(message: JSON) -> JSON:
    """Text parts -> content; thinking parts and `tool_plan` -> `reasoning_content`."""
    items = message.get("content") or []
    text = "".join(item.get("text") or "" for item in items if item.get("type") == "text")
    reasoning = [item.get("thinking") or "" for item in items if item.get("type") == "thinking"]
    if message.get("tool_plan"):
        reasoning.append(message["tool_plan"])
    tool_calls = [from_cohere_tool_call(call) for call in message.get("tool_calls") or []]
    out: JSON = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    if any(reasoning):
        out["reasoning_content"] = "\n\n".join(r for r in reasoning if r)
    return out


def from_cohere_response(response: JSON, model: str) -> JSON:
    finish = from_cohere_finish_reason(response.get("finish_reason"))
    message = from_cohere_message(response.get("message") or {})
    return {
        "id": f"chatcmpl-{response.get('id') or new_tool_call_id('')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": from_cohere_usage(response.get("usage")),
    }


def from_cohere_embed_response(response: JSON, model: str) -> JSON:
    vectors = (response.get("embeddings") or {}).get("float")
    if not isinstance(vectors, list):
        raise UpstreamError("Cohere embed response has no float embeddings")
    meta = response.get("meta") or {}
    usage = from_cohere_usage({"billed_units": meta.get("billed_units"), "tokens": meta.get("tokens")})
    prompt = usage["prompt_tokens"]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
