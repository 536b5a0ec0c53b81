"""OpenAI chat request -> google-genai `generate_content(model, contents, config)` arguments.

The dicts built here use Google's camelCase field names (as in the REST
documentation, https://ai.google.dev/api/generate-content); the SDK's pydantic
types accept them as aliases and serialise them for either backend. Bytes
fields (`inlineData.data`, `thoughtSignature`) are real bytes: the SDK
base64-encodes them on the wire.
"""

from __future__ import annotations

import base64
import binascii
import logging
import mimetypes
from typing import Any

import orjson

from proxy.errors import InvalidRequest
from translators.base import JSON
from translators.common import content_text, inline_schema_refs, reasoning_budget, split_data_url, strip_schema_keys

log = logging.getLogger("omni.translators")

# A thought signature travels to the client inside the tool-call id (every client
# echoes ids verbatim) and in `extra_content.google.thought_signature` (the field
# Google's own OpenAI-compatible endpoint uses).
SIGNATURE_SEPARATOR = "__thought__"
_SCHEMA_DROP = frozenset({"$schema", "$id", "strict"})

Images = dict[str, tuple[str, bytes]]  # fetched https image URL -> (media type, bytes)


def image_urls_to_fetch(messages: list[JSON]) -> list[str]:
    """http(s) image URLs in the conversation: Gemini cannot fetch them, the proxy does."""
    urls = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                url = _image_url(part)
                if url and url.startswith(("http://", "https://")):
                    urls.append(url)
    return urls


def _image_url(part: Any) -> str | None:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return url if isinstance(url, str) else None


def to_google_part(part: Any, images: Images) -> JSON:
    if isinstance(part, dict) and part.get("type") == "text":
        return {"text": str(part.get("text", ""))}
    url = _image_url(part)
    if url is None:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise InvalidRequest(f"content part type {kind!r} is not supported by Gemini", param="messages")
    if url.startswith("gs://"):
        return {"fileData": {"fileUri": url, "mimeType": mimetypes.guess_type(url)[0] or "image/png"}}
    inline = split_data_url(url)
    if inline is not None:
        try:
            data = base64.b64decode(inline[1], validate=True)
        except binascii.Error:
            raise InvalidRequest("image data URL is not valid base64", param="messages") from None
        return {"inlineData": {"mimeType": inline[0], "data": data}}
    if url in images:
        media_type, data = images[url]
        return {"inlineData": {"mimeType": media_type, "data": data}}
    raise InvalidRequest(f"unsupported image URL: {url[:40]!r}", param="messages")


def to_google_parts(content: Any, images: Images) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    return [to_google_part(part, images) for part in content]


def decode_signature(encoded: str) -> bytes:
    """Base64 in either alphabet, padding optional (the SDK dumps bytes URL-safe, the wire is standard)."""
    normalized = encoded.replace("-", "+").replace("_", "/")
    return base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)


def encode_tool_call_id(call_id: str, signature: str | None) -> str:
    """`call_…__thought__<url-safe signature>`: the signature survives any client that echoes ids."""
    if not signature:
        return call_id
    return call_id + SIGNATURE_SEPARATOR + base64.urlsafe_b64encode(decode_signature(signature)).decode().rstrip("=")


def thought_signature(tool_call: JSON) -> bytes | None:
    """The signature a Gemini function call came with: from `extra_content`, else from the id."""
    extra = tool_call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    encoded = google.get("thought_signature") if isinstance(google, dict) else None
    if not encoded:
        _, sep, encoded = str(tool_call.get("id", "")).partition(SIGNATURE_SEPARATOR)
        if not sep:
            return None
    try:
        return decode_signature(encoded)
    except (binascii.Error, ValueError):
        log.warning("ignoring a malformed Gemini thought signature on tool call %s", tool_call.get("id"))
        return None


def _function_call_part(call: JSON) -> JSON:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        args = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"tool call {call.get('id')!r} has arguments that are not JSON", param="messages") from None
    part: JSON = {"functionCall": {"name": function.get("name", ""), "args": args if isinstance(args, dict) else {"value": args}}}
    signature = thought_signature(call)
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_response_part(message: JSON, names: dict[str, str]) -> JSON:
    call_id = str(message.get("tool_call_id", ""))
    name = names.get(call_id) or message.get("name")
    if not name:
        raise InvalidRequest(f"tool message refers to unknown tool_call_id {call_id!r}", param="messages")
    text = content_text(message.get("content"))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    # functionResponse.response must be an object; Google suggests the "output" key.
    return {"functionResponse": {"name": name, "response": value if isinstance(value, dict) else {"output": value}}}


def to_google_contents(messages: list[JSON], images: Images) -> tuple[JSON | None, list[JSON]]:
    """(systemInstruction, contents): roles user/model, all tool results of a turn in one user content."""
    system: list[JSON] = []
    contents: list[JSON] = []
    names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system += to_google_parts(message.get("content"), images)
        elif role == "user":
            contents.append({"role": "user", "parts": to_google_parts(message.get("content"), images)})
        elif role == "assistant":
            parts = to_google_parts(message.get("content"), images)
            for call in message.get("tool_calls") or []:
                names[str(call.get("id", ""))] = (call.get("function") or {}).get("name", "")
                parts.append(_function_call_part(call))
            contents.append({"role": "model", "parts": parts or [{"text": ""}]})
        elif role == "tool":
            part = _function_response_part(message, names)
            last = contents[-1] if contents else None
            if last and last["role"] == "user" and last.get("_tool_results"):
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part], "_tool_results": True})
        else:
            raise InvalidRequest(f"message role {role!r} is not supported", param="messages")
    for content in contents:
        content.pop("_tool_results", None)
    return ({"parts": system} if system else None), contents


def to_google_tools(tools: list[JSON] | None) -> list[JSON] | None:
    declarations = []
    for tool in tools or []:
        if tool.get("type", "function") != "function":
            raise InvalidRequest(f"tool type {tool.get('type')!r} is not supported by Gemini", param="tools")
        function = tool.get("function") or {}
        declaration: JSON = {"name": function.get("name", "")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            declaration["parametersJsonSchema"] = to_google_schema(function["parameters"])
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else None


def to_google_schema(schema: Any) -> Any:
    """Gemini's JSON-schema fields accept a subset: inline `$ref`s, drop meta keywords."""
    return strip_schema_keys(inline_schema_refs(schema), _SCHEMA_DROP)


def to_google_tool_config(tool_choice: Any) -> JSON | None:
    if tool_choice is None:
        return None
    if tool_choice in ("auto", "none", "required"):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[tool_choice]
        return {"functionCallingConfig": {"mode": mode}}
    if isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise InvalidRequest(f"unsupported tool_choice {tool_choice!r}", param="tool_choice")


def to_google_response_format(response_format: Any) -> JSON:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in (None, "text"):
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        return {"responseMimeType": "application/json", "responseJsonSchema": to_google_schema(schema)}
    raise InvalidRequest(f"unsupported response_format type {kind!r}", param="response_format")


def to_google_thinking(effort: Any) -> JSON | None:
    if effort is None:
        return None
    if effort == "none":
        return {"thinkingBudget": 0, "includeThoughts": False}
    return {"thinkingBudget": reasoning_budget(effort), "includeThoughts": True}


_GENERATION_FIELDS = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "seed": "seed",
    "n": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


def to_google_config(request: JSON) -> JSON:
    """The SDK's GenerateContentConfig: generationConfig fields plus system, tools and tool config."""
    config: JSON = {k: request[o] for o, k in _GENERATION_FIELDS.items() if request.get(o) is not None}
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    config.update(to_google_response_format(request.get("response_format")))
    thinking = to_google_thinking(request.get("reasoning_effort"))
    if thinking:
        config["thinkingConfig"] = thinking
    tools = to_google_tools(request.get("tools"))
    if tools:
        config["tools"] = tools
    tool_config = to_google_tool_config(request.get("tool_choice")) if tools else None
    if tool_config:
        config["toolConfig"] = tool_config
    # The SDK would otherwise try to run Python callables itself.
    config["automaticFunctionCalling"] = {"disable": True}
    return config


def to_google_request(request: JSON, images: Images) -> tuple[list[JSON], JSON]:
    """(contents, config) for `client.aio.models.generate_content[_stream]`."""
    system, contents = to_google_contents(request.get("messages") or [], images)
    config = to_google_config(request)
    if system:
        config["systemInstruction"] = system
    return contents, config
