"""The response cache: exact match on the canonical request, per key, one entry for JSON and streams.

The key is the SHA-256 of the request body as sorted-key JSON, without the
fields that do not change the answer (`NOT_IN_KEY`) — everything else (model,
messages, tools, tool_choice, response_format, every sampling parameter, n,
stop, seed, logprobs, and extension fields such as rag, mcp and
structured_output) is in it, including fields this gateway does not know, so
an unknown parameter can only cause a miss, never a wrong answer. The
namespace is the virtual key's id (`cache.shared: true`: one namespace).

An entry is the finished `chat.completion` (a stream is recorded into one as it
is relayed), replayed as JSON or as a stream, whichever the hit asks for.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.keys.redis import PREFIX
from translators.base import JSON

log = logging.getLogger("omni")

# Delivery and bookkeeping fields: the same answer whatever their value.
NOT_IN_KEY = frozenset({"stream", "stream_options", "cache", "user", "metadata", "store"})


def cache_key(body: JSON, namespace: str) -> str:
    canonical = {k: v for k, v in body.items() if k not in NOT_IN_KEY}
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{PREFIX}cache:v1:{namespace}:{digest}"


class MemoryCache:
    """A bounded LRU in this process."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max(1, max_entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RedisCache:
    """Entries in Redis, shared by every instance (Redis evicts by its own maxmemory policy)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def get(self, key: str) -> bytes | None:
        try:
            return await self._client.get(key)  # type: ignore[no-any-return]
        except Exception:  # Redis down: the cache misses, the request goes on
            log.warning("cache: Redis read failed; answering without the cache", exc_info=True)
            return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            await self._client.set(key, value, px=max(1, int(ttl_s * 1000)))
        except Exception:
            log.warning("cache: Redis write failed", exc_info=True)


class StreamRecorder:
    """Rebuilds the `chat.completion` from the chunks of a stream as they pass."""

    def __init__(self) -> None:
        self.choices: dict[int, JSON] = {}
        self.usage: JSON | None = None
        self.extra: JSON = {}

    def add(self, chunk: JSON) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            slot = self.choices.setdefault(index, {"message": {"role": "assistant", "content": None},
                                                   "finish_reason": None, "calls": {}})
            delta = choice.get("delta") or {}
            message = slot["message"]
            for field in ("content", "refusal", "reasoning_content"):
                if delta.get(field):
                    message[field] = (message.get(field) or "") + delta[field]
            for call in delta.get("tool_calls") or ():
                entry = slot["calls"].setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                        "function": {"name": "", "arguments": ""}})
                if call.get("id"):
                    entry["id"] = call["id"]
                function = call.get("function") or {}
                entry["function"]["name"] += function.get("name") or ""
                entry["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]

    @property
    def complete(self) -> bool:
        return bool(self.choices) and all(c["finish_reason"] for c in self.choices.values())

    def completion(self) -> JSON:
        choices = []
        for index in sorted(self.choices):
            slot = self.choices[index]
            message = dict(slot["message"])
            if slot["calls"]:
                message["tool_calls"] = [slot["calls"][i] for i in sorted(slot["calls"])]
            choices.append({"index": index, "message": message, "finish_reason": slot["finish_reason"]})
        result: JSON = {"object": "chat.completion", "choices": choices}
        if self.usage:
            result["usage"] = self.usage
        return result


def to_chunks(completion: JSON) -> list[JSON]:
    """A `chat.completion` as the chunks of a stream (the relay sets id, model, created)."""
    chunks: list[JSON] = []
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        delta: JSON = {"role": "assistant"}
        for field in ("content", "refusal", "reasoning_content"):
            if message.get(field):
                delta[field] = message[field]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append({"choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        chunks.append({"choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}]})
    if completion.get("usage"):
        chunks.append({"choices": [], "usage": completion["usage"]})
    return chunks


async def iterate(items: list[JSON]) -> AsyncIterator[JSON]:
    for item in items:
        yield item
