"""Anthropic Messages API (`POST /v1/messages`) <-> the gateway's OpenAI chat format (pure).

https://docs.anthropic.com/en/api/messages and /en/api/messages-streaming. What shapes it:
- `system` is top level (a string or text blocks); a user turn carries `tool_result`
  blocks, which become OpenAI `tool` messages placed before the turn's other parts.
- Assistant `thinking` / `redacted_thinking` blocks are signed: they are kept as
  `thinking_blocks` (replayed verbatim by the Anthropic translators) only when they
  carry a signature; unsigned ones (made up from another vendor's reasoning) are dropped.
- `thinking.budget_tokens` maps to the nearest `reasoning_effort`.
- Server tools (`web_search_20250305`, ...) run at Anthropic only: translation leaves
  them out and names them in `x-omni-dropped-params` (Claude Code offers some).
- Stream events are named (`event:` lines): `message_start`, then per block
  `content_block_start` / `_delta` / `_stop`, then `message_delta` (stop_reason,
  output usage) and `message_stop`. OpenAI usage arrives only at the end, so
  `message_start` reports zero tokens and `message_delta` the full usage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.errors import InvalidRequest
from translators.base import JSON

log = logging.getLogger("omni.ingress")

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
# Gateway extension fields an Anthropic client may send too (extra_body); carried over as they are.
_CARRIED = ("fallbacks", "fallback_strategy", "structured_output", "rag", "mcp", "cache")
_SAMPLING = ("temperature", "top_p", "top_k")


# Request fields the translation maps; anything else is named in `x-omni-dropped-params` when translated.
MAPPED = frozenset({"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stop_sequences",
                    "metadata", "tools", "tool_choice", "thinking", "output_config", "stream", *_CARRIED})


def dropped_fields(body: JSON) -> list[str]:
    """What a translated request leaves out: unmapped fields and Anthropic-run server tools."""
    return [key for key in body if key not in MAPPED] + server_tool_names(body)


def to_openai_effort(budget: Any) -> str:
    if not isinstance(budget, int) or budget <= 2048:
        return "low"
    return "medium" if budget <= 8192 else "high"


def to_openai_request(body: JSON) -> JSON:
    """A Messages request body -> an OpenAI chat request body."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("messages: Field required (a list of messages)", param="messages")
    out: JSON = {"model": model, "messages": to_openai_system(body.get("system")) + to_openai_messages(messages)}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidRequest("max_tokens: must be a positive integer", param="max_tokens")
        out["max_tokens"] = max_tokens
    for key in _SAMPLING:
        if body.get(key) is not None:
            out[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest("stop_sequences: must be a list of strings", param="stop_sequences")
        out["stop"] = stops
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if user:
        out["user"] = str(user)
    tools = [tool for tool in body.get("tools") or [] if not is_server_tool(tool)]
    if tools:
        out["tools"] = [to_openai_tool(tool) for tool in tools]
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(to_openai_tool_choice(choice))
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        out["reasoning_effort"] = to_openai_effort(thinking.get("budget_tokens"))
    output_format = (body.get("output_config") or {}).get("format") if isinstance(body.get("output_config"), dict) \
        else None
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        out["response_format"] = {"type": "json_schema", "json_schema": {
            "name": output_format.get("name") or "output", "schema": output_format.get("schema") or {}}}
    if body.get("stream"):
        out["stream"] = True
    for key in _CARRIED:
        if key in body:
            out[key] = body[key]
    return out


def to_openai_system(system: Any) -> list[JSON]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list):
        text = "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict) and b.get("type") == "text")
        return [{"role": "system", "content": text}] if text else []
    raise InvalidRequest("system: must be a string or a list of text blocks", param="system")


def to_openai_messages(messages: list[Any]) -> list[JSON]:
    out: list[JSON] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{i}.role: must be 'user' or 'assistant'", param=f"messages.{i}.role")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise InvalidRequest(f"messages.{i}.content: must be a string or a list of blocks",
                                 param=f"messages.{i}.content")
        if message["role"] == "user":
            out += to_openai_user_turn(blocks, i)
        else:
            out.append(to_openai_assistant_turn(blocks, i))
    return out


def to_openai_user_turn(blocks: list[Any], i: int) -> list[JSON]:
    """Tool results first (each its own `tool` message, right after the assistant's calls), then the rest."""
    results: list[JSON] = []
    parts: list[JSON] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                            "content": to_openai_tool_result(block.get("content"), block.get("is_error"), i)})
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(to_openai_image(block.get("source") or {}, i))
        elif kind == "document" and (block.get("source") or {}).get("type") == "text":
            parts.append({"type": "text", "text": block["source"].get("data", "")})
        else:
            raise InvalidRequest(f"messages.{i}.content: unsupported block type {kind!r} for a user turn",
                                 param=f"messages.{i}.content")
    if not parts:
        return results
    content: str | list[JSON] = parts[0]["text"] if len(parts) == 1 and parts[0]["type"] == "text" else parts
    return [*results, {"role": "user", "content": content}]


def to_openai_tool_result(content: Any, is_error: Any, i: int) -> str | list[JSON]:
    if content is None:
        text: str | list[JSON] = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = [{"type": "text", "text": b.get("text", "")} if b.get("type") == "text"
                 else to_openai_image(b.get("source") or {}, i) for b in content if isinstance(b, dict)]
        text = "\n".join(p["text"] for p in parts) if all(p["type"] == "text" for p in parts) else parts
    else:
        raise InvalidRequest(f"messages.{i}.content: tool_result content must be a string or blocks",
                             param=f"messages.{i}.content")
    if is_error and isinstance(text, str):
        return f"Error: {text}"
    return text


def to_openai_image(source: JSON, i: int) -> JSON:
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif kind == "url":
        url = source.get("url", "")
    else:
        raise InvalidRequest(f"messages.{i}.content: unsupported image source type {kind!r}",
                             param=f"messages.{i}.content")
    return {"type": "image_url", "image_url": {"url": url}}


def to_openai_assistant_turn(blocks: list[Any], i: int) -> JSON:
    texts: list[str] = []
    calls: list[JSON] = []
    thinking: list[JSON] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id", ""), "type": "function", "function": {
                "name": block.get("name", ""), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind == "thinking":
            if block.get("signature"):
                thinking.append(block)
        elif kind == "redacted_thinking":
            thinking.append(block)
        else:
            raise InvalidRequest(f"messages.{i}.content: unsupported block type {kind!r} for an assistant turn",
                                 param=f"messages.{i}.content")
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def is_server_tool(tool: Any) -> bool:
    """Anthropic-run tools (`web_search_20250305`, `bash_20250124`, ...) have a `type`; client tools have none."""
    return isinstance(tool, dict) and tool.get("type") not in (None, "custom")


def server_tool_names(body: JSON) -> list[str]:
    """What translation leaves out (only Anthropic runs these), named for `x-omni-dropped-params`."""
    return [f"tools.{tool.get('name') or tool['type']}" for tool in body.get("tools") or [] if is_server_tool(tool)]


def to_openai_tool(tool: Any) -> JSON:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise InvalidRequest("tools: each tool needs a name", param="tools")
    function: JSON = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object",
                                                                                       "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def to_openai_tool_choice(choice: Any) -> JSON:
    kind = choice.get("type") if isinstance(choice, dict) else None
    mapped: Any
    if kind == "auto":
        mapped = "auto"
    elif kind == "any":
        mapped = "required"
    elif kind == "none":
        mapped = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        mapped = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise InvalidRequest(f"tool_choice: unsupported value {choice!r}", param="tool_choice")
    out: JSON = {"tool_choice": mapped}
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


# -- answers ----------------------------------------------------------------------------------

def from_openai_stop(finish_reason: str | None) -> str:
    if finish_reason in STOP_REASONS:
        return STOP_REASONS[finish_reason]
    if finish_reason is not None:
        log.warning("messages: unknown finish_reason %r, reporting end_turn", finish_reason)
    return "end_turn"


def from_openai_usage(usage: JSON | None) -> JSON:
    """Anthropic's `input_tokens` excludes cache reads and writes (OpenAI's `prompt_tokens` includes them)."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    reads = details.get("cached_tokens") or 0
    writes = details.get("cache_creation_tokens") or 0
    return {"input_tokens": max(0, (usage.get("prompt_tokens") or 0) - reads - writes),
            "output_tokens": usage.get("completion_tokens") or 0,
            "cache_creation_input_tokens": writes, "cache_read_input_tokens": reads}


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        log.warning("messages: tool arguments are not JSON; sent as {\"arguments\": <text>}")
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def from_openai_response(completion: JSON, model: str, message_id: str) -> JSON:
    """A `chat.completion` -> an Anthropic `message` (thinking, text, tool_use blocks)."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[JSON] = []
    if reply.get("thinking_blocks"):
        content += [dict(block) for block in reply["thinking_blocks"]]
    elif reply.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": reply["reasoning_content"], "signature": ""})
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
                        "input": _tool_input(function.get("arguments"))})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": from_openai_stop(choice.get("finish_reason")), "stop_sequence": None,
            "usage": from_openai_usage(completion.get("usage"))}


# -- streams ------------------------------------------------------------------------------------

Event = tuple[str, JSON]


@dataclass
class MessagesStreamState:
    """What `from_openai_chunk` remembers: the open blocks and their Anthropic indices."""

    message_id: str
    model: str
    blocks: int = 0  # content blocks started so far
    open_kind: str | None = None  # "text" / "thinking" block currently open (tool blocks stay open)
    open_index: int = -1
    tools: dict[int, int] = field(default_factory=dict)  # OpenAI tool-call index -> block index
    open_tools: list[int] = field(default_factory=list)
    held: dict[int, JSON] = field(default_factory=dict)  # tool calls not started yet: no name so far
    finish_reason: str | None = None
    extra: JSON = field(default_factory=dict)  # extension fields (rag_context, ...) for the message_start message


def start_events(state: MessagesStreamState) -> list[Event]:
    message = {"id": state.message_id, "type": "message", "role": "assistant", "model": state.model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": from_openai_usage(None), **state.extra}
    return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]


def _open(state: MessagesStreamState, kind: str, block: JSON, events: list[Event]) -> int:
    _close_open(state, events)
    index = state.blocks
    state.blocks += 1
    events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
    if kind in ("text", "thinking"):
        state.open_kind, state.open_index = kind, index
    return index


def _close_open(state: MessagesStreamState, events: list[Event]) -> None:
    if state.open_kind is not None:
        events.append(("content_block_stop", {"type": "content_block_stop", "index": state.open_index}))
        state.open_kind = None


def _delta(index: int, delta: JSON) -> Event:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def from_openai_chunk(chunk: JSON, state: MessagesStreamState) -> list[Event]:
    """One normalised OpenAI chunk (choice 0) -> the Messages events it makes."""
    events: list[Event] = []
    choices = chunk.get("choices") or []
    if not choices:
        return events
    choice = choices[0]
    delta = choice.get("delta") or {}
    reasoning = delta.get("reasoning_content")
    if reasoning:
        if state.open_kind != "thinking":
            _open(state, "thinking", {"type": "thinking", "thinking": "", "signature": ""}, events)
        events.append(_delta(state.open_index, {"type": "thinking_delta", "thinking": reasoning}))
    for block in delta.get("thinking_blocks") or []:
        if block.get("type") == "thinking" and state.open_kind == "thinking" and block.get("signature"):
            events.append(_delta(state.open_index, {"type": "signature_delta", "signature": block["signature"]}))
        elif block.get("type") == "redacted_thinking":
            index = _open(state, "redacted_thinking", dict(block), events)
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    text = delta.get("content")
    if text:
        if state.open_kind != "text":
            _open(state, "text", {"type": "text", "text": ""}, events)
        events.append(_delta(state.open_index, {"type": "text_delta", "text": text}))
    for call in delta.get("tool_calls") or []:
        _tool_delta(state, call, events)
    if choice.get("finish_reason") is not None:
        state.finish_reason = choice["finish_reason"]
    return events


def _tool_delta(state: MessagesStreamState, call: JSON, events: list[Event]) -> None:
    """A tool-call delta. A `tool_use` block names its tool when it starts, so a call whose first
    delta has no name yet (some OpenAI-compatible servers) is held, arguments and all, until it has one."""
    position = call.get("index", 0)
    function = call.get("function") or {}
    arguments = function.get("arguments") or ""
    if position not in state.tools:
        held = state.held.setdefault(position, {"id": None, "name": "", "arguments": ""})
        held["id"] = held["id"] or call.get("id")
        held["name"] += function.get("name") or ""
        held["arguments"] += arguments
        if held["name"]:
            _start_tool(state, position, events)
        return
    if arguments:
        events.append(_delta(state.tools[position], {"type": "input_json_delta", "partial_json": arguments}))


def _start_tool(state: MessagesStreamState, position: int, events: list[Event]) -> None:
    held = state.held.pop(position)
    index = _open(state, "tool_use", {"type": "tool_use", "id": held["id"] or f"toolu_{position}",
                                      "name": held["name"], "input": {}}, events)
    state.tools[position] = index
    state.open_tools.append(index)
    if held["arguments"]:
        events.append(_delta(index, {"type": "input_json_delta", "partial_json": held["arguments"]}))


def end_events(state: MessagesStreamState, usage: JSON | None) -> list[Event]:
    events: list[Event] = []
    for position in list(state.held):  # never named: sent as they are rather than lost
        _start_tool(state, position, events)
    _close_open(state, events)
    for index in state.open_tools:
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    state.open_tools = []
    events.append(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": from_openai_stop(state.finish_reason), "stop_sequence": None},
        "usage": from_openai_usage(usage)}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def encode_events(events: list[Event]) -> bytes:
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events)


# -- count_tokens -----------------------------------------------------------------------------

def estimate_input_tokens(body: JSON) -> int:
    """An offline estimate (about 4 characters a token, plus a few per message and tool) for models with no
    token-counting endpoint; images count a flat 1,600 tokens (Anthropic's figure for ~1.15 megapixels)."""
    chars = 0
    extra = 0

    def walk(value: Any) -> None:
        nonlocal chars, extra
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict):
            if value.get("type") == "image":
                extra += 1600
                return
            for key, item in value.items():
                if key not in ("type", "cache_control", "signature"):
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(body.get("system"))
    walk(body.get("messages"))
    walk(body.get("tools"))
    overhead = 3 * len(body.get("messages") or []) + 10 * len(body.get("tools") or [])
    return max(1, -(-chars // 4) + extra + overhead)
