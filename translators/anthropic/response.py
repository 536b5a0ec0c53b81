"""Anthropic Messages responses and stream events -> OpenAI chat completions and chunks (pure)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson

from proxy.errors import ProxyError, UpstreamError, upstream_status_error
from translators.base import JSON

log = logging.getLogger("omni.translators")

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool paused a long turn; the client may continue it
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error `type` -> the HTTP status it is documented with (https://docs.anthropic.com/en/api/errors).
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def from_anthropic_stop_reason(reason: str | None) -> str:
    if reason in STOP_REASONS:
        return STOP_REASONS[reason]
    log.warning("anthropic: unknown stop_reason %r, reporting 'stop'", reason)
    return "stop"


def from_anthropic_usage(usage: JSON) -> JSON:
    """prompt_tokens counts every input token, cache reads and writes included."""
    fresh = usage.get("input_tokens") or 0
    reads = usage.get("cache_read_input_tokens") or 0
    writes = usage.get("cache_creation_input_tokens") or 0
    completion = usage.get("output_tokens") or 0
    prompt = fresh + reads + writes
    out: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": reads, "cache_creation_tokens": writes},
    }
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
    if thinking is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": thinking}
    return out


def from_anthropic_error_event(error: JSON) -> ProxyError:
    """An error object (`{"type": "overloaded_error", "message": ...}`) -> the gateway's error."""
    kind = error.get("type")
    status = ERROR_TYPE_STATUS.get(kind) if isinstance(kind, str) else None
    message = error.get("message") or "unknown upstream error"
    if status is None:
        log.warning("anthropic: unknown error type %r, reporting 502", kind)
        return UpstreamError(f"upstream error: {message}")
    return upstream_status_error(status, str(message))


def from_anthropic_response(message: JSON) -> JSON:
    """A `message` object -> an OpenAI `chat.completion`."""
    texts: list[str] = []
    thoughts: list[str] = []
    thinking_blocks: list[JSON] = []
    tool_calls: list[JSON] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thoughts.append(block.get("thinking", ""))
            thinking_blocks.append(block)
        elif kind == "redacted_thinking":
            thinking_blocks.append(block)
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block["id"], block["name"], orjson.dumps(block.get("input", {})).decode()))
        else:
            log.warning("anthropic: skipping unsupported content block %r", kind)
    reply: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None,
                   "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking_blocks:
        reply["reasoning_content"] = "".join(thoughts)
        reply["thinking_blocks"] = thinking_blocks
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [{"index": 0, "message": reply, "finish_reason": from_anthropic_stop_reason(
            message.get("stop_reason")), "logprobs": None}],
        "usage": from_anthropic_usage(message.get("usage") or {}),
    }


def _tool_call(call_id: str, name: str, arguments: str) -> JSON:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass
class AnthropicStreamState:
    """What `from_anthropic_event` remembers between events of one stream."""

    tool_index: dict[int, int] = field(default_factory=dict)  # Anthropic block index -> OpenAI tool-call index
    thinking: dict[int, JSON] = field(default_factory=dict)  # thinking blocks being assembled, by block index
    usage: JSON = field(default_factory=dict)
    finish_reason: str | None = None

    def merge_usage(self, usage: JSON | None) -> None:
        """message_start and message_delta each carry part of the usage; a later 0 or null never erases a count."""
        for key, value in (usage or {}).items():
            if value or key not in self.usage:
                self.usage[key] = value


def _chunk(delta: JSON, finish_reason: str | None = None) -> JSON:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def from_anthropic_event(event: JSON, state: AnthropicStreamState) -> JSON | None:
    """One raw stream event -> an OpenAI chunk (None when it has nothing to say); an error event raises."""
    kind = event.get("type")
    if kind == "content_block_start":
        return _block_start(event["index"], event["content_block"], state)
    if kind == "content_block_delta":
        return _block_delta(event["index"], event["delta"], state)
    if kind == "content_block_stop":
        block = state.thinking.pop(event["index"], None)
        return _chunk({"thinking_blocks": [block]}) if block is not None else None
    if kind == "message_start":
        state.merge_usage((event.get("message") or {}).get("usage"))
        return _chunk({"role": "assistant", "content": ""})
    if kind == "message_delta":
        state.merge_usage(event.get("usage"))
        state.finish_reason = from_anthropic_stop_reason((event.get("delta") or {}).get("stop_reason"))
        return {**_chunk({}, state.finish_reason), "usage": from_anthropic_usage(state.usage)}
    if kind == "error":
        raise from_anthropic_error_event(event.get("error") or {})
    if kind not in ("message_stop", "ping"):
        log.warning("anthropic: ignoring unknown stream event %r", kind)
    return None


def _block_start(index: int, block: JSON, state: AnthropicStreamState) -> JSON | None:
    kind = block.get("type")
    if kind == "text":
        return _chunk({"content": block["text"]}) if block.get("text") else None
    if kind == "thinking":
        state.thinking[index] = {"type": "thinking", "thinking": block.get("thinking", ""),
                                 "signature": block.get("signature", "")}
        return _chunk({"reasoning_content": block["thinking"]}) if block.get("thinking") else None
    if kind == "redacted_thinking":
        state.thinking[index] = dict(block)
        return None
    if kind == "tool_use":
        position = state.tool_index[index] = len(state.tool_index)
        call = {"index": position, **_tool_call(block["id"], block["name"], "")}
        return _chunk({"tool_calls": [call]})
    log.warning("anthropic: ignoring unsupported streamed content block %r", kind)
    return None


def _block_delta(index: int, delta: JSON, state: AnthropicStreamState) -> JSON | None:
    kind = delta.get("type")
    if kind == "text_delta":
        return _chunk({"content": delta["text"]})
    if kind == "input_json_delta":
        fragment = delta.get("partial_json", "")
        if index not in state.tool_index:  # input of a block we do not relay (e.g. a server tool)
            log.warning("anthropic: ignoring tool input for content block %d, not a client tool call", index)
            return None
        if not fragment:
            return None
        return _chunk({"tool_calls": [{"index": state.tool_index[index], "function": {"arguments": fragment}}]})
    if kind == "thinking_delta":
        if index in state.thinking:
            state.thinking[index]["thinking"] += delta["thinking"]
        return _chunk({"reasoning_content": delta["thinking"]})
    if kind == "signature_delta":
        if index in state.thinking:
            state.thinking[index]["signature"] += delta["signature"]
        return None
    if kind != "citations_delta":
        log.warning("anthropic: ignoring unknown delta %r", kind)
    return None
