"""Bedrock Converse responses and ConverseStream events -> OpenAI shapes (pure).

Converse output is `output.message.content` blocks (`text`, `toolUse` with a
parsed `input`, `reasoningContent`), a `stopReason` and `usage` whose
`inputTokens` exclude cache reads and writes (reported apart as
`cacheReadInputTokens` / `cacheWriteInputTokens`).

ConverseStream (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html)
yields one-key dicts: `messageStart`, `contentBlockStart` (tool-use blocks
only: id and name), `contentBlockDelta` (text, reasoning text/signature, tool
input as JSON *string fragments*), `contentBlockStop`, `messageStop` (the stop
reason) and finally `metadata` (usage). `contentBlockIndex` counts every block,
text included, so OpenAI tool-call indices (tool calls only) are assigned here.
Exception events are raised by botocore before they reach this module.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import UpstreamError
from translators.base import JSON
from translators.common import new_tool_call_id

log = logging.getLogger("omni.translators")

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "stop",
    "malformed_tool_use": "stop",
}


def from_bedrock_stop_reason(reason: Any, has_tool_calls: bool = False) -> str:
    mapped = STOP_REASONS.get(reason)
    if mapped is None:
        log.warning("bedrock: unknown stopReason %r, reporting %s", reason, "tool_calls" if has_tool_calls else "stop")
        return "tool_calls" if has_tool_calls else "stop"
    if reason in ("malformed_model_output", "malformed_tool_use"):
        log.warning("bedrock: model stopped with %s", reason)
    return mapped


def from_bedrock_usage(usage: Any) -> JSON:
    """Converse `usage` -> OpenAI usage: prompt_tokens counts cache reads and writes too."""
    usage = usage or {}
    cache_read = int(usage.get("cacheReadInputTokens") or 0)
    cache_write = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cache_read + cache_write
    completion = int(usage.get("outputTokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def from_bedrock_reasoning(block: JSON) -> tuple[str, JSON | None]:
    """(reasoning text, Anthropic-style thinking block for replay) of one reasoningContent block."""
    if "redactedContent" in block:
        data = block["redactedContent"]
        encoded = base64.b64encode(data).decode() if isinstance(data, bytes | bytearray) else str(data)
        return "", {"type": "redacted_thinking", "data": encoded}
    text_block = block.get("reasoningText") or {}
    text = text_block.get("text", "")
    signature = text_block.get("signature")
    return text, ({"type": "thinking", "thinking": text, "signature": signature} if signature else None)


def from_bedrock_response(response: JSON) -> JSON:
    """A Converse response (as boto3 returns it) -> an OpenAI chat.completion dict."""
    content = ((response.get("output") or {}).get("message") or {}).get("content") or []
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[JSON] = []
    tool_calls: list[JSON] = []
    for block in content:
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            tool_calls.append({
                "id": use.get("toolUseId") or new_tool_call_id("tooluse_"),
                "type": "function",
                "function": {"name": use.get("name", ""), "arguments": json.dumps(use.get("input") or {})},
            })
        elif "reasoningContent" in block:
            text, replay = from_bedrock_reasoning(block["reasoningContent"])
            reasoning.append(text)
            if replay:
                thinking_blocks.append(replay)
        else:
            log.info("bedrock: ignoring response content block %s", sorted(block))
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    request_id = (response.get("ResponseMetadata") or {}).get("RequestId")
    return {
        "id": f"chatcmpl-{request_id}" if request_id else None,
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": from_bedrock_stop_reason(response.get("stopReason"), bool(tool_calls)),
        }],
        "usage": from_bedrock_usage(response.get("usage")),
    }


@dataclass
class BedrockStreamState:
    """What the stream translation remembers between events."""

    tool_indices: dict[int, int] = field(default_factory=dict)  # contentBlockIndex -> OpenAI tool index
    finished: bool = False


def _delta(delta: JSON, finish_reason: str | None = None) -> JSON:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def _tool_index(state: BedrockStreamState, block_index: int) -> int:
    return state.tool_indices.setdefault(block_index, len(state.tool_indices))


def from_bedrock_tool_start(start: JSON, block_index: int, state: BedrockStreamState) -> JSON | None:
    use = start.get("toolUse")
    if use is None:
        log.info("bedrock: ignoring contentBlockStart %s", sorted(start))
        return None
    index = _tool_index(state, block_index)
    call = {"index": index, "id": use.get("toolUseId") or new_tool_call_id("tooluse_"), "type": "function",
            "function": {"name": use.get("name", ""), "arguments": ""}}
    return _delta({"tool_calls": [call]})


def from_bedrock_delta(delta: JSON, block_index: int, state: BedrockStreamState) -> JSON | None:
    if "text" in delta:
        return _delta({"content": delta["text"]}) if delta["text"] else None
    if "reasoningContent" in delta:
        text = delta["reasoningContent"].get("text")
        return _delta({"reasoning_content": text}) if text else None  # signatures and redactions are not streamed
    if "toolUse" in delta:
        fragment = delta["toolUse"].get("input", "")
        if block_index not in state.tool_indices:
            log.warning("bedrock: tool input for block %d arrived without contentBlockStart", block_index)
            start = from_bedrock_tool_start({"toolUse": {}}, block_index, state) or {}
            start["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] = fragment
            return start
        return _delta({"tool_calls": [{"index": state.tool_indices[block_index], "function": {"arguments": fragment}}]})
    log.info("bedrock: ignoring contentBlockDelta %s", sorted(delta))
    return None


def from_bedrock_event(event: JSON, state: BedrockStreamState) -> JSON | None:
    """One ConverseStream event -> an OpenAI chunk (or None when it carries nothing for the client)."""
    if "contentBlockDelta" in event:
        body = event["contentBlockDelta"]
        return from_bedrock_delta(body.get("delta") or {}, int(body.get("contentBlockIndex", 0)), state)
    if "contentBlockStart" in event:
        body = event["contentBlockStart"]
        return from_bedrock_tool_start(body.get("start") or {}, int(body.get("contentBlockIndex", 0)), state)
    if "messageStop" in event:
        state.finished = True
        reason = from_bedrock_stop_reason(event["messageStop"].get("stopReason"), bool(state.tool_indices))
        return _delta({}, reason)
    if "metadata" in event:
        return {"choices": [], "usage": from_bedrock_usage(event["metadata"].get("usage"))}
    if "messageStart" in event or "contentBlockStop" in event:
        return None
    name = next(iter(event), "")
    if name.endswith("Exception"):
        raise UpstreamError(f"Bedrock stream failed: {name}: {(event[name] or {}).get('message', '')}")
    log.info("bedrock: ignoring stream event %r", name)
    return None
