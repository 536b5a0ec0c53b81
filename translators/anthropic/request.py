"""OpenAI chat request -> Anthropic Messages request body (pure)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import orjson
from anthropic import transform_schema

from proxy.errors import InvalidRequest
from translators.base import JSON
from translators.common import content_text, reasoning_budget, split_data_url

log = logging.getLogger("omni.translators")

DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024  # Anthropic rejects smaller `budget_tokens`
JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."
_TOOL_ID_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


def to_anthropic_request(request: JSON, model: str, default_max_tokens: int | None = None) -> JSON:
    """The whole `/v1/messages` body for an OpenAI chat request (without `stream`)."""
    system, messages = to_anthropic_messages(request["messages"])
    body: JSON = {"model": model, "messages": messages}
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    body["max_tokens"] = limit or default_max_tokens or DEFAULT_MAX_TOKENS
    response_format = request.get("response_format") or {}
    output_format = to_anthropic_output_format(response_format)
    if output_format is not None:
        body["output_config"] = {"format": output_format}
    if response_format.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    if system:
        body["system"] = "\n\n".join(system)
    stop = request.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("temperature", "top_p", "top_k"):
        if request.get(key) is not None:
            body[key] = request[key]
    if request.get("user"):
        body["metadata"] = {"user_id": str(request["user"])}
    if request.get("tools"):
        body["tools"] = [to_anthropic_tool(tool) for tool in request["tools"]]
        choice = to_anthropic_tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    thinking = to_anthropic_thinking(request.get("reasoning_effort"), body["max_tokens"], explicit=bool(limit))
    if thinking is not None:
        body["thinking"] = thinking
        if not limit:  # no client cap: leave the default room for the answer after the thinking
            body["max_tokens"] += thinking["budget_tokens"]
    return body


def to_anthropic_messages(messages: Iterable[JSON]) -> tuple[list[str], list[JSON]]:
    """(system texts, alternating user/assistant turns); consecutive same-role turns are merged."""
    system: list[str] = []
    turns: list[JSON] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = to_anthropic_content(message.get("content"))
        elif role == "assistant":
            blocks = to_anthropic_assistant_blocks(message)
            role = "assistant"
        elif role == "tool":
            blocks, role = [to_anthropic_tool_result(message)], "user"
        else:
            raise InvalidRequest(f"unsupported message role: {role!r}", param="messages")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def to_anthropic_content(content: Any) -> list[JSON]:
    """OpenAI user content (string or parts) -> Anthropic content blocks; empty text is dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(to_anthropic_image(part["image_url"]))
        else:
            raise InvalidRequest(f"unsupported content part type for Anthropic: {kind!r}", param="messages")
    return blocks


def to_anthropic_image(image_url: Any) -> JSON:
    url = image_url["url"] if isinstance(image_url, dict) else str(image_url)
    inline = split_data_url(url)
    if inline is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    if not url.startswith(("https://", "http://")):
        raise InvalidRequest(f"unsupported image URL: {url[:40]!r}", param="messages")
    return {"type": "image", "source": {"type": "url", "url": url}}


def to_anthropic_assistant_blocks(message: JSON) -> list[JSON]:
    """Thinking blocks first (verbatim, as Anthropic requires), then text, then tool calls."""
    blocks: list[JSON] = [dict(block) for block in message.get("thinking_blocks") or []]
    content = message.get("content")
    text = content if isinstance(content, str) else "".join(
        p.get("text") or p.get("refusal") or "" for p in content or [] if isinstance(p, dict)
    )
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append({
            "type": "tool_use",
            "id": to_anthropic_tool_id(call.get("id", "")),
            "name": function.get("name", ""),
            "input": _tool_arguments(function.get("arguments")),
        })
    return blocks


def _tool_arguments(arguments: Any) -> Any:
    if arguments in (None, ""):
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise InvalidRequest("tool_calls[].function.arguments must be a JSON string", param="messages") from None


def to_anthropic_tool_result(message: JSON) -> JSON:
    content = message.get("content")
    result: Any = content if isinstance(content, str) else to_anthropic_content(content)
    return {"type": "tool_result", "tool_use_id": to_anthropic_tool_id(message.get("tool_call_id", "")),
            "content": result}


def to_anthropic_tool_id(call_id: str) -> str:
    """Anthropic ids match ^[a-zA-Z0-9_-]+$; others' ids are rewritten the same way everywhere."""
    return _TOOL_ID_INVALID.sub("_", call_id) or "toolu_empty"


def to_anthropic_tool(tool: JSON) -> JSON:
    if tool.get("type", "function") != "function":
        raise InvalidRequest(f"unsupported tool type for Anthropic: {tool.get('type')!r}", param="tools")
    function = tool["function"]
    out: JSON = {"name": function["name"],
                 "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("strict"):
        out["strict"] = True
    return out


def to_anthropic_tool_choice(choice: Any, parallel: Any) -> JSON | None:
    """auto/none/required/named -> auto/none/any/tool; `parallel_tool_calls: false` -> disable_parallel_tool_use."""
    if choice is None:
        out: JSON | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise InvalidRequest(f"unsupported tool_choice: {choice!r}", param="tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def to_anthropic_output_format(response_format: JSON) -> JSON | None:
    """`json_schema` -> native structured output with the schema adapted to Anthropic's subset.

    `json_object` has no native equivalent (Anthropic's schemas must close every
    object), so it becomes a system instruction instead; `text` is the default.
    """
    kind = response_format.get("type")
    if kind in (None, "text", "json_object"):
        return None
    if kind != "json_schema":
        raise InvalidRequest(f"unsupported response_format type: {kind!r}", param="response_format")
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format.json_schema.schema must be an object", param="response_format")
    try:
        adapted = transform_schema(_split_type_lists(schema))
    except (ValueError, TypeError, AssertionError) as exc:
        raise InvalidRequest(f"JSON schema not supported by Anthropic: {exc}", param="response_format") from None
    return {"type": "json_schema", "schema": adapted}


def _split_type_lists(schema: Any) -> Any:
    """`{"type": ["string", "null"]}` (OpenAI's nullable idiom) -> an `anyOf`, which Anthropic accepts."""
    if isinstance(schema, list):
        return [_split_type_lists(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _split_type_lists(value) for key, value in schema.items()}
    if isinstance(out.get("type"), list):
        types = out.pop("type")
        rest = {k: v for k, v in out.items() if k not in ("description", "title")}
        head = {k: v for k, v in out.items() if k in ("description", "title")}
        return {**head, "anyOf": [{**rest, "type": t} if t != "null" else {"type": "null"} for t in types]}
    return out


def to_anthropic_thinking(effort: Any, max_tokens: int, *, explicit: bool) -> JSON | None:
    """`reasoning_effort` -> a thinking budget; with a client cap, thinking must fit inside it."""
    budget = reasoning_budget(effort)
    if budget is None:
        return None
    if explicit and budget >= max_tokens:
        if max_tokens <= MIN_THINKING_BUDGET:
            raise InvalidRequest(
                f"max_tokens must exceed {MIN_THINKING_BUDGET} when reasoning_effort is set (Anthropic's minimum "
                "thinking budget)", param="max_tokens")
        log.info("anthropic: thinking budget %d reduced to fit max_tokens %d", budget, max_tokens)
        budget = max(MIN_THINKING_BUDGET, max_tokens // 2)
    return {"type": "enabled", "budget_tokens": budget}
