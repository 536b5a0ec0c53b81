"""The seed API (`POST /invoke`, CONTRACT §14) as pure mappings onto the chat path and back.

Clients of the original Omni-LLM send one JSON object — `prompt`, `model_provider`,
`model_name`, `model_config`, `system_prompt`, `context`, `fallback_strategy`,
`rag_config` (or `rag_enabled` + `s3_path` + `vector_store_type`), `mcp_config`,
`structured_output` (or `structured_output_enabled` + `structured_output_schema`),
`image_url`, `output_config` — and get `{success, response, metadata, rag_context,
tool_calls, error}` back. `to_chat_request` builds the OpenAI chat body (with the
gateway's own `rag`, `mcp`, `structured_output` fields), so `/invoke` runs the same
pipeline as `/v1/chat/completions`; `from_chat_completion` and `seed_error_body`
shape the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proxy.config import Config
from proxy.errors import InvalidRequest, ProxyError
from translators.base import JSON

# model_config keys -> chat request keys (top_k goes to the vendors that have it, else is dropped and named)
_MODEL_CONFIG = {
    "temperature": "temperature", "max_tokens": "max_tokens", "top_p": "top_p", "top_k": "top_k",
    "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty", "seed": "seed",
    "stop_sequences": "stop", "stop": "stop", "stream": "stream",
}
_RESPONSE_FORMATS = ("text", "json", "structured")
_STRUCTURED_KEYS = ("format", "schema", "name", "method", "strict", "max_repairs", "enabled")
_MCP_KEYS = ("servers", "tools", "auto_invoke", "max_iterations")
_RAG_KEYS = ("collection", "sources", "top_k", "score_threshold", "search", "rerank", "query", "include_sources")

# gateway status -> seed error code (CONTRACT §14)
_CODES = {400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 403: "UNAUTHORIZED", 404: "INVALID_MODEL", 405: "INVALID_REQUEST",
          408: "TIMEOUT", 413: "INVALID_REQUEST", 429: "RATE_LIMIT", 502: "UPSTREAM_ERROR", 503: "PROVIDER_UNAVAILABLE",
          504: "TIMEOUT"}


@dataclass(frozen=True)
class OutputOptions:
    max_response_length: int | None = None  # characters of `response.content`
    include_sources: bool = True  # `rag_context` in the answer
    include_metadata: bool = True


def to_chat_request(seed: JSON, config: Config) -> tuple[JSON, OutputOptions]:
    """The chat completions body for a seed request, and what `output_config` asks of the answer."""
    prompt = seed.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("'prompt' is required and must be a non-empty string", param="prompt")
    body: JSON = {"model": _model(seed, config), "messages": _messages(seed, prompt)}
    model_config = _mapping(seed, "model_config")
    for key, value in model_config.items():
        if key == "response_format":
            if value not in _RESPONSE_FORMATS:
                raise InvalidRequest(f"model_config.response_format must be one of {', '.join(_RESPONSE_FORMATS)}",
                                     param="model_config.response_format")
            if value == "json":
                body["response_format"] = {"type": "json_object"}
        elif key in _MODEL_CONFIG:
            body[_MODEL_CONFIG[key]] = value
        else:
            raise InvalidRequest(f"unknown model_config key '{key}'", param=f"model_config.{key}")
    if seed.get("fallback_strategy") is not None:
        body["fallback_strategy"] = seed["fallback_strategy"]
    structured = _structured(seed)
    if structured is not None:
        body["structured_output"] = structured
    elif model_config.get("response_format") == "structured":
        raise InvalidRequest("response_format 'structured' needs structured_output (or structured_output_schema)",
                             param="structured_output")
    rag = _rag(seed)
    if rag is not None:
        body["rag"] = rag
    mcp = _mcp(seed)
    if mcp is not None:
        body["mcp"] = mcp
    return body, _output(seed)


def _mapping(seed: JSON, key: str) -> JSON:
    value = seed.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{key}' must be an object", param=key)
    return value


def _model(seed: JSON, config: Config) -> str:
    name, provider = seed.get("model_name"), seed.get("model_provider")
    if name is None:
        strategy = seed.get("fallback_strategy")
        if isinstance(strategy, str) and strategy:
            return strategy  # the README's examples name only a strategy
        raise InvalidRequest("'model_name' is required (or a fallback_strategy to pick one)", param="model_name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'model_name' must be a non-empty string", param="model_name")
    if provider is not None and not isinstance(provider, str):
        raise InvalidRequest("'model_provider' must be a string", param="model_provider")
    if name in config.models or name in config.strategies or not provider or "/" in name:
        return name
    return f"{provider}/{name}"


def _messages(seed: JSON, prompt: str) -> list[JSON]:
    messages: list[JSON] = []
    system = seed.get("system_prompt")
    if system is not None:
        if not isinstance(system, str):
            raise InvalidRequest("'system_prompt' must be a string", param="system_prompt")
        messages.append({"role": "system", "content": system})
    context = seed.get("context")
    if isinstance(context, str) and context:
        messages.append({"role": "system", "content": f"Context:\n{context}"})
    elif isinstance(context, list):  # earlier turns of the conversation
        for i, turn in enumerate(context):
            if not (isinstance(turn, dict) and turn.get("role") in ("user", "assistant", "system")
                    and isinstance(turn.get("content"), str)):
                raise InvalidRequest("each context turn needs a role (user, assistant, system) and string content",
                                     param=f"context[{i}]")
            messages.append({"role": turn["role"], "content": turn["content"]})
    elif isinstance(context, dict):
        messages.append({"role": "system", "content": "Context:\n" + "\n".join(f"{k}: {v}" for k, v in context.items())})
    elif context is not None:
        raise InvalidRequest("'context' must be a string, an object or a list of turns", param="context")
    image = seed.get("image_url")
    if image is None:
        messages.append({"role": "user", "content": prompt})
    elif isinstance(image, str) and image.startswith(("https://", "http://", "data:")):
        messages.append({"role": "user", "content": [{"type": "text", "text": prompt},
                                                     {"type": "image_url", "image_url": {"url": image}}]})
    else:
        raise InvalidRequest("'image_url' must be an https:// or data: URL", param="image_url")
    return messages


def _structured(seed: JSON) -> JSON | None:
    given = seed.get("structured_output")
    if given is not None:
        if not isinstance(given, dict):
            raise InvalidRequest("'structured_output' must be an object", param="structured_output")
        field = {k: v for k, v in given.items() if k in _STRUCTURED_KEYS}
        if given.get("enabled") is False:
            return None
        if "schema" in field and "format" not in field and not _is_json_schema(field["schema"]):
            field["format"] = field.pop("schema")
        return field
    if seed.get("structured_output_enabled") in (None, False):
        return None
    schema = seed.get("structured_output_schema")
    if not isinstance(schema, dict) and not isinstance(schema, list):
        raise InvalidRequest("structured_output_enabled needs structured_output_schema (an object)",
                             param="structured_output_schema")
    return {"schema": schema} if _is_json_schema(schema) else {"format": schema}


def _is_json_schema(schema: Any) -> bool:
    """CONTRACT §14: a JSON Schema has a top-level `type` or `$schema`; anything else is the simple format."""
    return isinstance(schema, dict) and ("$schema" in schema or isinstance(schema.get("type"), str | list))


def _rag(seed: JSON) -> JSON | None:
    config = seed.get("rag_config")
    if config is not None:
        if not isinstance(config, dict):
            raise InvalidRequest("'rag_config' must be an object", param="rag_config")
        if config.get("enabled") is False:
            return None
        rag = {k: v for k, v in config.items() if k in _RAG_KEYS}
        for alias in ("collection_name", "vector_store", "index_name"):
            if alias in config and "collection" not in rag:
                rag["collection"] = config[alias]
        if "s3_path" in config and "sources" not in rag:
            rag["sources"] = [config["s3_path"]]
        if not rag.get("collection") and not rag.get("sources"):
            raise InvalidRequest("rag_config needs a collection or sources (e.g. s3_path)", param="rag_config")
        return rag
    if not seed.get("rag_enabled"):
        return None
    path = seed.get("s3_path")
    if not isinstance(path, str) or not path:
        raise InvalidRequest("rag_enabled needs s3_path (or rag_config with a collection)", param="s3_path")
    return {"sources": [path]}  # vector_store_type is the operator's choice (rag.store in models.yaml)


def _mcp(seed: JSON) -> JSON | None:
    config = seed.get("mcp_config")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise InvalidRequest("'mcp_config' must be an object", param="mcp_config")
    if config.get("enabled") is False:
        return None
    mcp = {k: v for k, v in config.items() if k in _MCP_KEYS}
    if "servers" not in mcp:
        raise InvalidRequest("mcp_config needs servers (names of the gateway's configured MCP servers)",
                             param="mcp_config.servers")
    return mcp


def _output(seed: JSON) -> OutputOptions:
    config = _mapping(seed, "output_config")
    length = config.get("max_response_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise InvalidRequest("output_config.max_response_length must be a positive integer",
                             param="output_config.max_response_length")
    return OutputOptions(length, config.get("include_sources", True) is not False,
                         config.get("include_metadata", True) is not False)


def from_chat_completion(completion: JSON, options: OutputOptions, provider: str, cost: float | None,
                         started: float, request_id: str) -> JSON:
    """The seed answer for a finished chat completion."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = message.get("content") or ""
    if options.max_response_length is not None and len(content) > options.max_response_length:
        content = content[:options.max_response_length]
    usage = dict(completion.get("usage") or {})
    usage["cost_usd"] = cost
    answer: JSON = {
        "success": True,
        "response": {"content": content, "role": message.get("role") or "assistant",
                     "finish_reason": choice.get("finish_reason")},
        "rag_context": completion.get("rag_context") if options.include_sources else None,
        "tool_calls": completion.get("tool_trace") or message.get("tool_calls") or [],
        "error": None,
    }
    if "parsed" in message:
        answer["response"]["parsed"] = message["parsed"]
    if options.include_metadata:
        answer["metadata"] = {"model_used": completion.get("model"), "provider": provider, "usage": usage,
                              "execution_time": round(time.perf_counter() - started, 4), "request_id": request_id}
    return answer


def seed_error_body(error: ProxyError, request_id: str, message: str | None = None, provider: str | None = None,
                    model: str | None = None) -> JSON:
    """A gateway error in the seed's shape; the HTTP status stays the gateway's (CONTRACT §5)."""
    code = _CODES.get(error.status, "INTERNAL_ERROR" if error.status >= 500 else "INVALID_REQUEST")
    if error.status == 404 and error.code != "model_not_found":
        code = "NOT_FOUND"  # an unknown collection or route, not a model
    return {
        "success": False,
        "error": {"code": code, "message": message if message is not None else error.message,
                  "details": {"provider": provider, "model": model, "retry_after": error.retry_after,
                              "param": error.param, "type": error.code or error.type}},
        "metadata": {"request_id": request_id, "timestamp": datetime.now(UTC).isoformat()},
    }
