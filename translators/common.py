"""Mapping helpers more than one translator needs (pure, except `load_image`)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import InvalidRequest

IMAGE_MAX_BYTES = 20 * 1024 * 1024
IMAGE_TIMEOUT_S = 10.0
# Tests serve images from 127.0.0.1; production never fetches private addresses.
ALLOW_PRIVATE_ENV = "OMNI_LLM_ALLOW_PRIVATE_IMAGE_URLS"

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


async def load_image(url: str) -> tuple[str, bytes]:
    """(media type, bytes) of an image URL: `data:` decoded, http(s) fetched (public hosts, capped)."""
    inline = split_data_url(url)
    if inline is not None:
        try:
            return inline[0], base64.b64decode(inline[1], validate=True)
        except ValueError:
            raise InvalidRequest("image data URL is not valid base64", param="messages") from None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidRequest(f"unsupported image URL scheme: {parts.scheme or url[:20]!r}", param="messages")
    if not os.environ.get(ALLOW_PRIVATE_ENV):
        await _require_public(parts.hostname)
    import httpx2  # installed with the openai SDK, a core dependency

    try:
        async with httpx2.AsyncClient(timeout=IMAGE_TIMEOUT_S, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InvalidRequest(f"could not fetch image ({response.status_code}): {url}", param="messages")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > IMAGE_MAX_BYTES:
                        raise InvalidRequest(f"image is larger than {IMAGE_MAX_BYTES} bytes: {url}", param="messages")
                media_type = response.headers.get("content-type", "").split(";")[0].strip() or "image/png"
                return media_type, body
    except httpx2.HTTPError as exc:
        raise InvalidRequest(f"could not fetch image ({type(exc).__name__}): {url}", param="messages") from None


async def _require_public(host: str) -> None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidRequest(f"cannot resolve image host {host!r}", param="messages") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise InvalidRequest(f"image host {host!r} is not a public address", param="messages")
