"""Mapping helpers more than one translator needs (pure, except `load_image(s)`, see translators/fetch.py)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterable
from typing import Any

from proxy.errors import InvalidRequest
from translators.fetch import FetchBudget, fetch_public_url

IMAGE_MAX_BYTES = 20 * 1024 * 1024  # one image
IMAGE_MAX_TOTAL_BYTES = 32 * 1024 * 1024  # every image one request makes the gateway fetch
IMAGE_TIMEOUT_S = 10.0

# OpenAI `reasoning_effort` -> a thinking-token budget for vendors that take one.
REASONING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}


def content_text(content: Any) -> str:
    """The text of an OpenAI message content (a string, or parts whose text ones are joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def split_data_url(url: str) -> tuple[str, str] | None:
    """`data:image/png;base64,XXXX` -> ("image/png", "XXXX"); None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, _, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if "base64" not in params:
        raise InvalidRequest("image data URLs must be base64-encoded", param="messages")
    return media_type or "application/octet-stream", data


def new_tool_call_id(prefix: str = "call_") -> str:
    """An id for vendors that return none; unique across any conversation."""
    return prefix + uuid.uuid4().hex[:24]


def reasoning_budget(effort: Any) -> int | None:
    if effort in (None, "none"):
        return None
    try:
        return REASONING_BUDGETS[effort]
    except KeyError:
        raise InvalidRequest(
            f"reasoning_effort must be one of {', '.join(['none', *REASONING_BUDGETS])}", param="reasoning_effort"
        ) from None


def inline_schema_refs(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """Resolve local `$ref`s (`#/$defs/X`, `#/definitions/X`) inline and drop the definitions.

    For vendors whose schema dialect has no `$ref`. Recursive schemas are cut
    off after a few levels (as an untyped object) rather than looping.
    """
    if isinstance(schema, dict):
        if defs is None:
            defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            name = ref.rsplit("/", 1)[-1]
            if depth > 8 or name not in defs:
                return {"type": "object"}
            merged = {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
            return inline_schema_refs(merged, defs, depth + 1)
        return {k: inline_schema_refs(v, defs, depth) for k, v in schema.items() if k not in ("$defs", "definitions")}
    if isinstance(schema, list):
        return [inline_schema_refs(v, defs, depth) for v in schema]
    return schema


def strip_schema_keys(schema: Any, unsupported: frozenset[str]) -> Any:
    """Drop keywords a vendor rejects, everywhere in the schema (not inside `properties` names)."""
    if isinstance(schema, dict):
        return {
            k: (
                {name: strip_schema_keys(sub, unsupported) for name, sub in v.items()}
                if k == "properties" and isinstance(v, dict)
                else strip_schema_keys(v, unsupported)
            )
            for k, v in schema.items()
            if k not in unsupported
        }
    if isinstance(schema, list):
        return [strip_schema_keys(v, unsupported) for v in schema]
    return schema


async def load_image(url: str, budget: FetchBudget | None = None) -> tuple[str, bytes]:
    """(media type, bytes) of an image URL: `data:` decoded, http(s) fetched (public hosts, capped)."""
    inline = split_data_url(url)
    if inline is not None:
        try:
            return inline[0], base64.b64decode(inline[1], validate=True)
        except ValueError:
            raise InvalidRequest("image data URL is not valid base64", param="messages") from None
    body, media_type = await fetch_public_url(url, IMAGE_MAX_BYTES, IMAGE_TIMEOUT_S, budget=budget)
    return media_type or "image/png", body


async def load_images(urls: Iterable[str]) -> dict[str, tuple[str, bytes]]:
    """Every distinct image URL of one request, fetched concurrently within one byte budget."""
    unique = list(dict.fromkeys(urls))
    budget = FetchBudget(IMAGE_MAX_TOTAL_BYTES)
    loaded = await asyncio.gather(*(load_image(url, budget) for url in unique))
    return dict(zip(unique, loaded, strict=True))
