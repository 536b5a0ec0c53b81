"""Offline token estimates: for rate-limit and budget reservations before a call, and as the
usage of an answer whose vendor sent none.

No tokenizer files ship (nothing may download at run time), so this counts
the way OpenAI's own rule of thumb does: about four bytes of UTF-8 per token,
plus a few tokens of framing per message. Reservations are corrected with the
vendor's usage after the call whenever it reports one.
"""

from __future__ import annotations

from typing import Any

import orjson

_PER_MESSAGE = 4
_DEFAULT_COMPLETION = 4096  # the worst case reserved when the request sets no max_tokens


def count_text(text: str) -> int:
    return (len(text.encode()) + 3) // 4 if text else 0


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else orjson.dumps(content).decode()


def count_prompt(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat (`messages`), embeddings (`input`) or rerank (`query`, `documents`) request."""
    messages = body.get("messages")
    if isinstance(messages, list):
        total = 3
        for message in messages:
            if isinstance(message, dict):
                total += _PER_MESSAGE + count_text(_content_text(message.get("content")))
                if message.get("tool_calls"):
                    total += count_text(orjson.dumps(message["tool_calls"]).decode())
        if body.get("tools"):
            total += count_text(orjson.dumps(body["tools"]).decode())
        return total
    documents = body.get("documents")  # a rerank request: the query and every document are input
    if isinstance(documents, list):
        query = body.get("query")
        return count_text(query if isinstance(query, str) else "") + sum(
            count_text(d if isinstance(d, str) else str(d.get("text", "")) if isinstance(d, dict) else "")
            for d in documents)
    value = body.get("input")
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, list):
        return sum(count_text(v) if isinstance(v, str) else len(v) if isinstance(v, list) else 1 for v in value)
    return 0


def max_completion(body: dict[str, Any], unbounded: int = _DEFAULT_COMPLETION) -> int:
    """The most completion tokens this request can produce (a default worst case when unbounded)."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value * max(1, int(body.get("n") or 1))
    return unbounded if "messages" in body else 0


def count_completion(result: dict[str, Any]) -> int:
    """Completion tokens of a chat.completion's choices (content and tool calls)."""
    total = 0
    for choice in result.get("choices") or []:
        message = choice.get("message") or {}
        total += count_text(_content_text(message.get("content")))
        if message.get("tool_calls"):
            total += count_text(orjson.dumps(message["tool_calls"]).decode())
    return total
