"""OpenAI Responses API (`POST /v1/responses`, stateless) <-> the gateway's chat format (pure).

https://platform.openai.com/docs/api-reference/responses. What shapes it:
- `input` is a string or a list of items: messages (`input_text`, `input_image`,
  `output_text` parts), `function_call` and `function_call_output` items (one
  assistant turn per run of calls, one `tool` message per output), `reasoning`
  items (dropped: their encrypted content means nothing to other vendors).
- Nothing is stored: `previous_response_id`, `store: true`, `conversation` and
  `item_reference` inputs are refused with a 400 that says so.
- The answer's `output` is a list of items (reasoning, message, function_call),
  each streamed as `response.output_item.added` … `.done` with its own delta
  events; every event carries a `sequence_number`. The openai SDK's stream helper
  checks item identities, so ids are fixed when an item is added.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.errors import InvalidRequest, ProxyError
from translators.base import JSON

log = logging.getLogger("omni.ingress")

# Request fields copied as they are; gateway extension fields ride along too.
_COPIED = ("model", "temperature", "top_p", "parallel_tool_calls", "user", "stream",
           "fallbacks", "fallback_strategy", "structured_output", "rag", "mcp", "cache")
# Request fields the mapping uses; anything else is named in `x-omni-dropped-params`.
MAPPED = frozenset({*_COPIED, "input", "instructions", "max_output_tokens", "tools", "tool_choice", "text",
                    "reasoning", "metadata", "store", "previous_response_id", "conversation", "background"})
# Echoed on the response object (what the client asked for).
_ECHOED = ("instructions", "max_output_tokens", "metadata", "temperature", "top_p", "user", "reasoning")


def to_openai_request(body: JSON) -> JSON:
    """A Responses request body -> an OpenAI chat request body."""
    if body.get("previous_response_id") or body.get("conversation"):
        raise InvalidRequest("This gateway's Responses API is stateless: previous_response_id and conversation are "
                             "not supported; send the whole conversation in `input`.", param="previous_response_id")
    if body.get("background") is True:
        raise InvalidRequest("This gateway's Responses API is stateless: `background: true` needs stored responses.",
                             param="background")
    if body.get("store") is True:
        raise InvalidRequest("This gateway's Responses API is stateless: `store: true` is not supported "
                             "(send store: false or leave it out).", param="store")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    out: JSON = {k: body[k] for k in _COPIED if body.get(k) is not None}
    messages: list[JSON] = []
    if body.get("instructions"):
        if not isinstance(body["instructions"], str):
            raise InvalidRequest("instructions must be a string", param="instructions")
        messages.append({"role": "system", "content": body["instructions"]})
    messages += to_openai_messages(body.get("input"))
    out["messages"] = messages
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        out["tools"] = [to_openai_tool(tool, i) for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = to_openai_tool_choice(body["tool_choice"])
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if text_format is not None:
        response_format = to_openai_response_format(text_format)
        if response_format is not None:
            out["response_format"] = response_format
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort is not None:
        out["reasoning_effort"] = effort
    return out


def dropped_fields(body: JSON) -> list[str]:
    return [key for key in body if key not in MAPPED]


def to_openai_messages(items: Any) -> list[JSON]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequest("input must be a string or a list of input items", param="input")
    messages: list[JSON] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an object", param=f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(to_openai_message(item, i))
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id") or f"call_{i}", "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or "{}"}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not _after_tool_result(messages):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else to_openai_parts(output, i, "function_call_output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": content})
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            raise InvalidRequest(f"input[{i}]: item_reference needs stored responses; this gateway is stateless",
                                 param=f"input[{i}]")
        else:
            raise InvalidRequest(f"input[{i}]: unsupported input item type {kind!r}", param=f"input[{i}].type")
    return messages


def _after_tool_result(messages: list[JSON]) -> bool:
    return bool(messages) and messages[-1]["role"] == "tool"


def to_openai_message(item: JSON, i: int) -> JSON:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise InvalidRequest(f"input[{i}].role must be user, system, developer or assistant", param=f"input[{i}].role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = to_openai_parts(content, i, "content")
    if role != "user" or all(p["type"] == "text" for p in parts):
        text = "".join(p.get("text", "") for p in parts if p["type"] == "text")
        return {"role": role, "content": text}
    return {"role": role, "content": parts}


def to_openai_parts(content: Any, i: int, where: str) -> list[JSON]:
    if not isinstance(content, list):
        raise InvalidRequest(f"input[{i}].{where} must be a string or a list of parts", param=f"input[{i}].{where}")
    parts: list[JSON] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: JSON = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise InvalidRequest(f"input[{i}].{where}: unsupported part {kind!r} (file ids need stored files)",
                                 param=f"input[{i}].{where}")
    return parts


def to_openai_tool(tool: Any, i: int) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise InvalidRequest(f"tools[{i}]: only function tools are supported (got {kind!r})", param=f"tools[{i}]")
    function: JSON = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def to_openai_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(f"unsupported tool_choice: {choice!r}", param="tool_choice")


def to_openai_response_format(text_format: Any) -> JSON | None:
    kind = text_format.get("type") if isinstance(text_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(text_format.get("schema"), dict):
            raise InvalidRequest("text.format.schema must be a JSON Schema object", param="text.format.schema")
        schema: JSON = {"name": text_format.get("name") or "output", "schema": text_format["schema"]}
        for key in ("strict", "description"):
            if text_format.get(key) is not None:
                schema[key] = text_format[key]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(f"unsupported text.format type: {kind!r}", param="text.format.type")


# -- answers ------------------------------------------------------------------------------------

def from_openai_usage(usage: JSON | None) -> JSON:
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details") or {}
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0,
                                     "cache_write_tokens": prompt_details.get("cache_creation_tokens") or 0},
            "output_tokens_details": {"reasoning_tokens": (usage.get("completion_tokens_details") or {}).get(
                "reasoning_tokens") or 0}}


def skeleton(body: JSON, response_id: str, model: str, created: int) -> JSON:
    """The response object before any output: what the client asked for, echoed."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    response: JSON = {"id": response_id, "object": "response", "created_at": created, "status": "in_progress",
                      "model": model, "output": [], "error": None, "incomplete_details": None,
                      "tool_choice": body.get("tool_choice") or "auto", "tools": body.get("tools") or [],
                      "parallel_tool_calls": body.get("parallel_tool_calls", True), "store": False,
                      "previous_response_id": None, "text": {"format": {"type": "text"}, **(text or {})},
                      "usage": None}
    for key in _ECHOED:
        response[key] = body.get(key)
    return response


def finished(response: JSON, finish_reason: str | None, usage: JSON | None) -> JSON:
    """The final status: `length` and `content_filter` make an incomplete response (with the reason)."""
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = from_openai_usage(usage)
    return response


def _message_item(item_id: str, text: str, status: str, refusal: str | None = None) -> JSON:
    parts: list[JSON] = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text or \
        not refusal else []
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def _call_item(item_id: str, call: JSON, status: str) -> JSON:
    function = call.get("function") or {}
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.get("id") or item_id,
            "name": function.get("name") or "", "arguments": function.get("arguments") or ""}


def _reasoning_item(item_id: str, text: str) -> JSON:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def from_openai_response(completion: JSON, body: JSON, response_id: str, model: str) -> JSON:
    """A `chat.completion` -> a `response` object."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    output: list[JSON] = []
    if reply.get("reasoning_content"):
        output.append(_reasoning_item(f"rs_{response_id}", reply["reasoning_content"]))
    if reply.get("content") or reply.get("refusal") or not reply.get("tool_calls"):
        output.append(_message_item(f"msg_{response_id}", reply.get("content") or "", "completed", reply.get("refusal")))
    for n, call in enumerate(reply.get("tool_calls") or []):
        output.append(_call_item(f"fc_{response_id}_{n}", call, "completed"))
    response = skeleton(body, response_id, model, int(completion.get("created") or time.time()))
    response["output"] = output
    return finished(response, choice.get("finish_reason"), completion.get("usage"))


# -- streams ------------------------------------------------------------------------------------

@dataclass
class _Item:
    output_index: int
    item: JSON
    text: str = ""  # the text or arguments streamed so far


@dataclass
class ResponsesStreamState:
    """What `from_openai_chunk` remembers: the response, its items, the sequence number."""

    response: JSON
    sequence: int = 0
    items: list[_Item] = field(default_factory=list)
    open_text: _Item | None = None  # the message or reasoning item receiving deltas
    calls: dict[int, _Item] = field(default_factory=dict)  # OpenAI tool-call index -> its item
    held: dict[int, JSON] = field(default_factory=dict)  # tool calls not added yet: no name so far
    finish_reason: str | None = None


def _event(state: ResponsesStreamState, kind: str, **fields: Any) -> JSON:
    event = {"type": kind, "sequence_number": state.sequence, **fields}
    state.sequence += 1
    return event


def start_events(state: ResponsesStreamState) -> list[JSON]:
    return [_event(state, "response.created", response=state.response),
            _event(state, "response.in_progress", response=state.response)]


def _add(state: ResponsesStreamState, item: JSON, events: list[JSON]) -> _Item:
    entry = _Item(len(state.items), item)
    state.items.append(entry)
    events.append(_event(state, "response.output_item.added", output_index=entry.output_index, item=dict(item)))
    return entry


def _open_text(state: ResponsesStreamState, kind: str, events: list[JSON]) -> _Item:
    current = state.open_text
    if current is not None and current.item["type"] == kind:
        return current
    _close_text(state, events)
    rid = state.response["id"]
    if kind == "reasoning":
        entry = _add(state, {"id": f"rs_{rid}_{len(state.items)}", "type": "reasoning", "summary": [],
                             "content": [], "status": "in_progress"}, events)
        part: JSON = {"type": "reasoning_text", "text": ""}
    else:
        entry = _add(state, {"id": f"msg_{rid}_{len(state.items)}", "type": "message", "status": "in_progress",
                             "role": "assistant", "content": []}, events)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events.append(_event(state, "response.content_part.added", item_id=entry.item["id"],
                         output_index=entry.output_index, content_index=0, part=part))
    state.open_text = entry
    return entry


def _close_text(state: ResponsesStreamState, events: list[JSON]) -> None:
    entry, state.open_text = state.open_text, None
    if entry is None:
        return
    ids = {"item_id": entry.item["id"], "output_index": entry.output_index, "content_index": 0}
    if entry.item["type"] == "reasoning":
        part: JSON = {"type": "reasoning_text", "text": entry.text}
        events.append(_event(state, "response.reasoning_text.done", text=entry.text, **ids))
        entry.item = {**entry.item, "status": "completed", "content": [part]}
    else:
        part = {"type": "output_text", "text": entry.text, "annotations": [], "logprobs": []}
        events.append(_event(state, "response.output_text.done", text=entry.text, logprobs=[], **ids))
        entry.item = _message_item(entry.item["id"], entry.text, "completed")
    events.append(_event(state, "response.content_part.done", part=part, **ids))
    events.append(_event(state, "response.output_item.done", output_index=entry.output_index, item=entry.item))


def from_openai_chunk(chunk: JSON, state: ResponsesStreamState) -> list[JSON]:
    """One normalised OpenAI chunk (choice 0) -> the Responses events it makes."""
    events: list[JSON] = []
    choices = chunk.get("choices") or []
    if not choices:
        return events
    choice = choices[0]
    delta = choice.get("delta") or {}
    for kind, key, event in (("reasoning", "reasoning_content", "response.reasoning_text.delta"),
                             ("message", "content", "response.output_text.delta")):
        text = delta.get(key)
        if text:
            entry = _open_text(state, kind, events)
            entry.text += text
            extra: JSON = {"logprobs": []} if kind == "message" else {}
            events.append(_event(state, event, item_id=entry.item["id"], output_index=entry.output_index,
                                 content_index=0, delta=text, **extra))
    for call in delta.get("tool_calls") or []:
        _tool_delta(state, call, events)
    if choice.get("finish_reason") is not None:
        state.finish_reason = choice["finish_reason"]
    return events


def _tool_delta(state: ResponsesStreamState, call: JSON, events: list[JSON]) -> None:
    """A tool-call delta. A function_call item names its function when it is added, so a call whose first
    delta has no name yet (some OpenAI-compatible servers) is held, arguments and all, until it has one."""
    position = call.get("index", 0)
    function = call.get("function") or {}
    arguments = function.get("arguments") or ""
    entry = state.calls.get(position)
    if entry is None:
        held = state.held.setdefault(position, {"id": None, "name": "", "arguments": ""})
        held["id"] = held["id"] or call.get("id")
        held["name"] += function.get("name") or ""
        held["arguments"] += arguments
        if held["name"]:
            _add_call(state, position, events)
        return
    if arguments:
        entry.text += arguments
        events.append(_event(state, "response.function_call_arguments.delta", item_id=entry.item["id"],
                             output_index=entry.output_index, delta=arguments))


def _add_call(state: ResponsesStreamState, position: int, events: list[JSON]) -> None:
    held = state.held.pop(position)
    _close_text(state, events)
    item_id = f"fc_{state.response['id']}_{position}"
    entry = state.calls[position] = _add(state, {
        "id": item_id, "type": "function_call", "status": "in_progress", "call_id": held["id"] or item_id,
        "name": held["name"], "arguments": ""}, events)
    if held["arguments"]:
        entry.text = held["arguments"]
        events.append(_event(state, "response.function_call_arguments.delta", item_id=item_id,
                             output_index=entry.output_index, delta=held["arguments"]))


def end_events(state: ResponsesStreamState, usage: JSON | None) -> list[JSON]:
    events: list[JSON] = []
    for position in list(state.held):  # never named: sent as they are rather than lost
        _add_call(state, position, events)
    _close_text(state, events)
    for entry in state.calls.values():
        events.append(_event(state, "response.function_call_arguments.done", item_id=entry.item["id"],
                             output_index=entry.output_index, name=entry.item["name"], arguments=entry.text))
        entry.item = {**entry.item, "status": "completed", "arguments": entry.text}
        events.append(_event(state, "response.output_item.done", output_index=entry.output_index, item=entry.item))
    response = finished(state.response, state.finish_reason, usage)
    response["output"] = [entry.item for entry in state.items]
    kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
    events.append(_event(state, kind, response=response))
    return events


def error_events(state: ResponsesStreamState, error: ProxyError, message: str) -> list[JSON]:
    """An `error` event, then `response.failed` (the stream helpers' terminal state)."""
    code = error.code or error.type
    events = [_event(state, "error", code=code, message=message, param=error.param)]
    response = {**state.response, "status": "failed", "output": [entry.item for entry in state.items],
                "error": {"code": "rate_limit_exceeded" if error.status == 429 else "server_error", "message": message}}
    events.append(_event(state, "response.failed", response=response))
    return events


def encode_events(events: list[JSON]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)
