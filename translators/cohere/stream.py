"""Cohere v2 stream events (as plain dicts) -> OpenAI chunks: a pure state machine.

Cohere streams typed events keyed on `type`
(https://docs.cohere.com/reference/chat-stream): `message-start`,
`content-start/delta/end` (text or thinking), `tool-plan-delta`,
`tool-call-start/delta/end` (inside deltas `tool_calls` is ONE object, not a
list), `citation-start/end`, `message-end` (finish reason + usage). Tool calls
are re-indexed in order of appearance so OpenAI indices count tool calls only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from proxy.errors import UpstreamError
from translators.base import JSON
from translators.common import new_tool_call_id
from translators.cohere.response import from_cohere_finish_reason, from_cohere_usage

log = logging.getLogger("omni.translators")

_IGNORED = frozenset(
    {"message-start", "content-end", "tool-call-end", "citation-start", "citation-end", "debug"}
)


@dataclass
class CohereStreamState:
    id: str | None = None
    tool_indices: dict[int, int] = field(default_factory=dict)  # Cohere event index -> OpenAI tool-call index
    finished: bool = False


def _delta(delta: JSON, finish_reason: str | None = None) -> JSON:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def _message(event: JSON) -> JSON:
    return (event.get("delta") or {}).get("message") or {}


def from_cohere_event(event: JSON, state: CohereStreamState) -> JSON | None:
    """One Cohere event -> one OpenAI chunk, or None for bookkeeping events."""
    kind = event.get("type")
    if kind == "message-start":
        state.id = event.get("id")
        return None
    if kind in ("content-start", "content-delta"):
        return from_cohere_content(_message(event).get("content") or {})
    if kind == "tool-plan-delta":
        plan = _message(event).get("tool_plan")
        return _delta({"reasoning_content": plan}) if plan else None
    if kind == "tool-call-start":
        return from_cohere_tool_call_start(event, state)
    if kind == "tool-call-delta":
        return from_cohere_tool_call_delta(event, state)
    if kind == "message-end":
        delta = event.get("delta") or {}
        finish = from_cohere_finish_reason(delta.get("finish_reason"), delta.get("error"))
        state.finished = True
        return {**_delta({}, finish), "usage": from_cohere_usage(delta.get("usage"))}
    if kind not in _IGNORED:
        log.warning("ignoring unknown Cohere stream event type %r", kind)
    return None


def from_cohere_content(content: JSON) -> JSON | None:
    if content.get("thinking"):
        return _delta({"reasoning_content": content["thinking"]})
    if content.get("text"):
        return _delta({"content": content["text"]})
    return None


def from_cohere_tool_call_start(event: JSON, state: CohereStreamState) -> JSON:
    call = _message(event).get("tool_calls") or {}
    function = call.get("function") or {}
    next_index = len(state.tool_indices)
    index = state.tool_indices.setdefault(event.get("index", next_index), next_index)
    return _delta({"tool_calls": [{
        "index": index,
        "id": call.get("id") or new_tool_call_id(),
        "type": "function",
        "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
    }]})


def from_cohere_tool_call_delta(event: JSON, state: CohereStreamState) -> JSON | None:
    index = state.tool_indices.get(event.get("index"))  # type: ignore[arg-type]
    if index is None:
        raise UpstreamError("Cohere streamed arguments for a tool call it never started")
    arguments = ((_message(event).get("tool_calls") or {}).get("function") or {}).get("arguments")
    if not arguments:
        return None
    return _delta({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
