"""Pure helpers of the tool loop: public names, result text, truncation, OpenAI function shapes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

SEPARATOR = "__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def public_name(server: str, tool: str) -> str:
    """`SERVER__TOOL`, characters outside `[A-Za-z0-9_-]` replaced by `_` (what every vendor accepts)."""
    return _UNSAFE.sub("_", f"{server}{SEPARATOR}{tool}")


@dataclass(frozen=True)
class ToolEntry:
    """One discovered tool of one server, as offered to the model."""

    server: str
    name: str  # as the MCP server calls it
    description: str
    parameters: dict[str, Any]  # the tool's input JSON schema
    public: str = ""

    def function(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.public, "description": self.description, "parameters": self.parameters}}


@dataclass
class Catalog:
    """The tools a request may use, by public name."""

    entries: dict[str, ToolEntry] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # server -> why (listings only)

    def functions(self) -> list[dict[str, Any]]:
        return [entry.function() for entry in self.entries.values()]


def input_schema(schema: Any) -> dict[str, Any]:
    """A tool's input schema as vendors accept it: always an object schema."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return {"type": "object", "properties": {}}
    return schema


def result_text(content: list[Any], structured: Any) -> str:
    """The text of a tool result: its text blocks; structured content as JSON text when there is no text."""
    texts: list[str] = []
    for block in content:
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(block.text)
        elif kind in ("image", "audio"):
            texts.append(f"[{kind}: {getattr(block, 'mime_type', '') or 'binary'}]")
        elif kind == "resource_link":
            texts.append(f"[resource: {block.uri}]")
        elif kind == "resource":
            resource = block.resource
            texts.append(getattr(resource, "text", None) or f"[resource: {resource.uri}]")
    if not texts and structured is not None:
        return orjson.dumps(structured).decode()
    return "\n".join(texts)


def truncate(text: str, limit: int) -> str:
    """Cut `text` to `limit` UTF-8 bytes (never inside a character), ending with `[truncated N bytes]`."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n[truncated {len(raw) - len(kept.encode())} bytes]"
