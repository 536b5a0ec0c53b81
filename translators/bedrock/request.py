"""OpenAI chat request -> Bedrock `Converse` / `ConverseStream` parameters (pure).

Converse (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html)
is one request shape for every Bedrock model family. What shapes the mapping:

- System prompts are a top-level `system` list, not messages.
- Messages hold typed content blocks and roles must alternate, so consecutive
  messages of one role (tool results followed by user text, two user turns)
  are merged into one message; tool results are `toolResult` blocks in a user turn.
- Images are raw bytes plus a format (png/jpeg/gif/webp): there is no URL source,
  so the provider fetches https URLs first (`image_urls`, then `images=`).
- `toolChoice` has no "none": tools are withheld instead. Bedrock rejects a
  request whose history holds `toolUse`/`toolResult` blocks when no `toolConfig`
  is sent, so without tools those blocks are replayed as plain text (a synthetic
  toolConfig would let the model call tools the client did not offer).
- Structured output is `outputConfig.textFormat` with the JSON schema as a *string*.
- Vendor extras go in `additionalModelRequestFields`: `top_k`, and reasoning
  (Anthropic `thinking` budget, Nova `reasoningConfig`, gpt-oss `reasoning_effort`).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from proxy.errors import InvalidRequest
from translators.base import JSON
from translators.common import content_text, inline_schema_refs, reasoning_budget, strip_schema_keys

log = logging.getLogger("omni.translators")

IMAGE_FORMATS = {
    "image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp",
}
# Keywords the structured-output schema dialect rejects (as Anthropic's, which it mirrors).
UNSUPPORTED_SCHEMA_KEYS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
     "pattern", "maxItems", "uniqueItems", "minProperties", "maxProperties"}
)
REGION_PREFIXES = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"})
# Anthropic needs room for the answer beyond the thinking budget.
THINKING_ANSWER_TOKENS = 4096
Images = Mapping[str, tuple[str, bytes]]  # image URL -> (media type, bytes)


def bedrock_family(model_id: str) -> str:
    """`us.anthropic.claude-...`, an inference-profile ARN, `amazon.nova-pro-v1:0` -> "anthropic", "amazon"."""
    name = model_id.rsplit("/", 1)[-1]
    parts = name.split(".")
    if len(parts) > 2 and parts[0] in REGION_PREFIXES:
        parts = parts[1:]
    return parts[0]


def to_bedrock_tool_id(call_id: str) -> str:
    """Bedrock tool ids match `[a-zA-Z0-9_-]{1,64}`; ids from other vendors are made to fit, consistently."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", call_id)[:64] or "tool"


def image_urls(messages: list[JSON]) -> list[str]:
    """Every image URL in the request, for the provider to load before `to_bedrock_request`."""
    return [
        part["image_url"]["url"]
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    ]


def to_bedrock_image(media_type: str, data: bytes) -> JSON:
    fmt = IMAGE_FORMATS.get(media_type.lower())
    if fmt is None:
        raise InvalidRequest(f"Bedrock accepts png, jpeg, gif and webp images, not {media_type}", param="messages")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def to_bedrock_content(content: Any, images: Images) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[JSON] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(to_bedrock_image(*images[part["image_url"]["url"]]))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported by Bedrock", param="messages")
    return blocks


def to_bedrock_thinking(message: JSON) -> list[JSON]:
    """Replay Anthropic thinking blocks (from `thinking_blocks`) as reasoningContent, signatures intact."""
    blocks: list[JSON] = []
    for block in message.get("thinking_blocks") or []:
        if block.get("type") == "thinking" and block.get("signature"):
            text = {"text": block.get("thinking", ""), "signature": block["signature"]}
            blocks.append({"reasoningContent": {"reasoningText": text}})
        elif block.get("type") == "redacted_thinking" and block.get("data"):
            blocks.append({"reasoningContent": {"redactedContent": base64.b64decode(block["data"])}})
    return blocks


def to_bedrock_tool_use(call: JSON, as_text: bool) -> JSON:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    if as_text:
        return {"text": f"[called tool {function.get('name')} with {arguments}]"}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        raise InvalidRequest("tool call arguments in the history are not valid JSON", param="messages") from None
    tool_input = parsed if isinstance(parsed, dict) else {"value": parsed}
    return {"toolUse": {"toolUseId": to_bedrock_tool_id(call["id"]), "name": function.get("name"), "input": tool_input}}


def to_bedrock_tool_result(message: JSON, as_text: bool) -> JSON:
    text = content_text(message.get("content"))
    if as_text:
        return {"text": f"[tool result: {text}]"}
    tool_id = to_bedrock_tool_id(message.get("tool_call_id") or "")
    return {"toolResult": {"toolUseId": tool_id, "content": [{"text": text}]}}


def to_bedrock_messages(messages: list[JSON], images: Images, tools_sent: bool) -> tuple[list[JSON], list[JSON]]:
    """(system blocks, alternating messages) from OpenAI messages."""
    system: list[JSON] = []
    turns: list[JSON] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system += [{"text": t} for t in [content_text(message.get("content"))] if t]
            continue
        if role == "assistant":
            blocks = to_bedrock_thinking(message) + to_bedrock_content(message.get("content"), images)
            blocks += [to_bedrock_tool_use(c, not tools_sent) for c in message.get("tool_calls") or []]
        elif role == "tool":
            role, blocks = "user", [to_bedrock_tool_result(message, not tools_sent)]
        elif role == "user":
            blocks = to_bedrock_content(message.get("content"), images)
        else:
            raise InvalidRequest(f"unknown message role {role!r}", param="messages")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def to_bedrock_tool_config(tools: list[JSON], tool_choice: Any) -> JSON | None:
    """None when no tools go out (no tools, or tool_choice "none")."""
    if not tools or tool_choice == "none":
        return None
    specs = []
    for tool in tools:
        function = tool.get("function") or {}
        schema = function.get("parameters") or {"type": "object"}
        spec: JSON = {"name": function["name"], "inputSchema": {"json": schema}}
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: JSON = {"tools": specs}
    if tool_choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(tool_choice, dict):
        config["toolChoice"] = {"tool": {"name": (tool_choice.get("function") or {}).get("name")}}
    elif tool_choice in (None, "auto"):
        config["toolChoice"] = {"auto": {}}
    else:
        raise InvalidRequest(f"unknown tool_choice {tool_choice!r}", param="tool_choice")
    return config


def to_bedrock_output_config(response_format: Any) -> JSON | None:
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema_text, name = json.dumps({"type": "object"}), "json_object"
    elif kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = inline_schema_refs(spec.get("schema") or {"type": "object"})
        schema = strip_schema_keys(schema, UNSUPPORTED_SCHEMA_KEYS)
        schema_text, name = json.dumps(closed_objects(schema)), spec.get("name") or "response"
    else:
        raise InvalidRequest(f"unknown response_format type {kind!r}", param="response_format")
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": schema_text, "name": name}}}}


def closed_objects(schema: Any) -> Any:
    """Structured output requires `additionalProperties: false` on every object with properties."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed_objects(v) if k != "properties" else {n: closed_objects(s) for n, s in v.items()}
           for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def to_bedrock_reasoning(family: str, effort: Any, inference: JSON) -> JSON:
    """`reasoning_effort` -> additionalModelRequestFields for the model family (may raise maxTokens' floor)."""
    budget = reasoning_budget(effort)
    if budget is None:
        return {}
    if family == "anthropic":
        inference.setdefault("maxTokens", budget + THINKING_ANSWER_TOKENS)
        return {"thinking": {"type": "enabled", "budget_tokens": budget}}
    if family == "amazon":
        level = {"minimal": "low", "xhigh": "high"}.get(effort, effort)
        return {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": level}}
    if family == "openai":
        return {"reasoning_effort": {"minimal": "low", "xhigh": "high"}.get(effort, effort)}
    log.info("bedrock: reasoning_effort ignored, no thinking control known for model family %r", family)
    return {}


def to_bedrock_inference(request: JSON, default_max_tokens: Any) -> JSON:
    inference: JSON = {}
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens") or default_max_tokens
    if max_tokens:
        inference["maxTokens"] = int(max_tokens)
    if request.get("temperature") is not None:
        inference["temperature"] = request["temperature"]
    if request.get("top_p") is not None:
        inference["topP"] = request["top_p"]
    stop = request.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    return inference


def to_bedrock_request(request: JSON, model_id: str, options: Mapping[str, Any], images: Images) -> JSON:
    """Keyword arguments for `client.converse(...)` / `client.converse_stream(...)`."""
    tool_config = to_bedrock_tool_config(request.get("tools") or [], request.get("tool_choice"))
    system, messages = to_bedrock_messages(request["messages"], images, tools_sent=tool_config is not None)
    params: JSON = {"modelId": model_id, "messages": messages}
    if system:
        params["system"] = system
    inference = to_bedrock_inference(request, options.get("max_tokens"))
    extra = to_bedrock_reasoning(bedrock_family(model_id), request.get("reasoning_effort"), inference)
    if request.get("top_k") is not None:
        extra["top_k"] = request["top_k"]
    if inference:
        params["inferenceConfig"] = inference
    if tool_config:
        params["toolConfig"] = tool_config
    if extra:
        params["additionalModelRequestFields"] = extra
    output = to_bedrock_output_config(request.get("response_format"))
    if output:
        params["outputConfig"] = output
    return params
