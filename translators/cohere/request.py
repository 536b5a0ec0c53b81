"""OpenAI request -> Cohere v2 `chat` / `embed` keyword arguments (pure).

The result is handed to the typed SDK methods (`AsyncClientV2.chat(**kwargs)`),
so it only ever contains names those methods accept.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import InvalidRequest
from translators.base import JSON
from translators.common import content_text, reasoning_budget, split_data_url

DEFAULT_INPUT_TYPE = "search_document"

# OpenAI sampling/limit fields that only change their name.
_RENAMED = {
    "temperature": "temperature",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "top_p": "p",
    "top_k": "k",  # extension field (extra_body), Cohere's native name is `k`
}
_TOOL_CHOICE = {"required": "REQUIRED", "none": "NONE"}
_TOOL_KEYS = ("name", "description", "parameters")  # OpenAI's per-tool `strict` becomes `strict_tools`


def to_cohere_request(request: JSON, model: str) -> JSON:
    """The kwargs for `chat` / `chat_stream` (without `stream`, which picks the method)."""
    kwargs: JSON = {"model": model, "messages": to_cohere_messages(request["messages"])}
    for openai_name, cohere_name in _RENAMED.items():
        if request.get(openai_name) is not None:
            kwargs[cohere_name] = request[openai_name]
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    stop = request.get("stop")
    if stop:
        kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools, tool_choice, strict = to_cohere_tools(request.get("tools"), request.get("tool_choice"))
    if tools:
        kwargs["tools"] = tools
        if strict:
            kwargs["strict_tools"] = True
    if tool_choice:
        kwargs["tool_choice"] = tool_choice
    response_format = to_cohere_response_format(request.get("response_format"))
    if response_format:
        kwargs["response_format"] = response_format
    thinking = to_cohere_thinking(request.get("reasoning_effort"))
    if thinking:
        kwargs["thinking"] = thinking
    return kwargs


def to_cohere_messages(messages: list[JSON]) -> list[JSON]:
    return [to_cohere_message(m) for m in messages]


def to_cohere_message(message: JSON) -> JSON:
    role = message.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": content_text(message.get("content"))}
    if role == "user":
        return {"role": "user", "content": to_cohere_user_content(message.get("content"))}
    if role == "assistant":
        return to_cohere_assistant(message)
    if role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.get("tool_call_id") or "",
            "content": [to_cohere_tool_result(message.get("content"))],
        }
    raise InvalidRequest(f"unsupported message role {role!r}", param="messages")


def to_cohere_user_content(content: Any) -> str | list[JSON]:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[JSON] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": to_cohere_image_url(part.get("image_url") or {})})
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported by Cohere", param="messages")
    return parts


def to_cohere_image_url(image: JSON | str) -> JSON:
    """Cohere takes both `data:` and web URLs as OpenAI sends them (`detail` included)."""
    if isinstance(image, str):
        image = {"url": image}
    url = image.get("url") or ""
    if split_data_url(url) is None and not url.startswith(("https://", "http://")):
        raise InvalidRequest("image_url must be an https or a data: URL", param="messages")
    out: JSON = {"url": url}
    if image.get("detail"):
        out["detail"] = image["detail"]
    return out


def to_cohere_assistant(message: JSON) -> JSON:
    """A replayed assistant turn; `reasoning_content` next to tool calls goes back as `tool_plan`."""
    out: JSON = {"role": "assistant"}
    text = content_text(message.get("content"))
    tool_calls = message.get("tool_calls")
    if tool_calls:
        out["tool_calls"] = [
            {
                "id": call.get("id") or "",
                "type": "function",
                "function": {
                    "name": (call.get("function") or {}).get("name") or "",
                    "arguments": (call.get("function") or {}).get("arguments") or "{}",
                },
            }
            for call in tool_calls
        ]
        if message.get("reasoning_content"):
            out["tool_plan"] = message["reasoning_content"]
    if text or not tool_calls:
        out["content"] = text
    return out


def to_cohere_tool_result(content: Any) -> JSON:
    return {"type": "document", "document": {"data": to_cohere_document(content)}}


def to_cohere_document(content: Any) -> JSON:
    """A tool result as a Cohere document: a JSON object as is, anything else under `result`."""
    text = content_text(content)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def to_cohere_tools(tools: list[JSON] | None, choice: Any) -> tuple[list[JSON], str | None, bool]:
    """(tools, tool_choice, strict_tools). Cohere has no named choice: keep that tool only, REQUIRED."""
    functions = [tool["function"] for tool in tools or [] if isinstance(tool.get("function"), dict)]
    converted = [
        {"type": "function", "function": {k: v for k, v in f.items() if k in _TOOL_KEYS}} for f in functions
    ]
    strict = any(f.get("strict") for f in functions)
    if choice is None or choice == "auto":
        return converted, None, strict
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE:
            raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
        return converted, _TOOL_CHOICE[choice], strict
    name = (choice.get("function") or {}).get("name")
    named = [t for t in converted if t["function"]["name"] == name]
    if not named:
        message = f"tool_choice names a function that is not in tools: {name!r}"
        raise InvalidRequest(message, param="tool_choice")
    return named, "REQUIRED", strict


def to_cohere_response_format(response_format: JSON | None) -> JSON | None:
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")  # type: ignore[union-attr]
        return {"type": "json_object", "json_schema": schema} if schema else {"type": "json_object"}
    raise InvalidRequest(f"unsupported response_format type {kind!r}", param="response_format")


def to_cohere_thinking(effort: Any) -> JSON | None:
    """`reasoning_effort` -> Cohere `thinking` (reasoning models only; "none" disables it)."""
    if effort is None:
        return None
    budget = reasoning_budget(effort)
    return {"type": "disabled"} if budget is None else {"type": "enabled", "token_budget": budget}


def to_cohere_embed_request(request: JSON, model: str) -> JSON:
    """`input_type` is required by Cohere: an extension field, else `search_document`."""
    inputs = request.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("Cohere embeddings take a string or a list of strings", param="input")
    kwargs: JSON = {
        "model": model,
        "texts": texts,
        "input_type": request.get("input_type") or DEFAULT_INPUT_TYPE,
        "embedding_types": ["float"],
    }
    if request.get("dimensions") is not None:
        kwargs["output_dimension"] = request["dimensions"]
    return kwargs

