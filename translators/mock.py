"""The `mock` provider: deterministic answers with no upstream and no credentials.

Its reply contains the last user message (unless the model entry or the
provider sets `response`), streams word by word with `chunk_delay_ms` between
words, honours `max_tokens` (one word = one token, finish_reason `length`), and
embeds text into deterministic unit vectors. It lets a fresh checkout serve a
working model with no keys, and it is the load-test target.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from proxy.config import Deployment, ProviderConfig
from proxy.errors import ProxyError
from translators.base import CHAT, EMBEDDINGS, JSON, STREAM, TOOLS, VISION


def last_user_text(messages: list[JSON]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _count_tokens(messages: list[JSON]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict))
    return max(total, 1)


def mock_embedding(text: str, dimensions: int) -> list[float]:
    digest = b""
    counter = 0
    while len(digest) < dimensions * 4:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    raw = [v / 2**31 - 1.0 for v in struct.unpack(f">{dimensions}I", digest[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


class MockProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION})
    supported_params: ClassVar[frozenset[str] | None] = None

    def __init__(self, config: ProviderConfig) -> None:
        self._response = config.get("response")
        self._delay_ms = float(config.get("chunk_delay_ms", 0) or 0)

    def _plan(self, request: JSON, deployment: Deployment) -> tuple[list[str], str, JSON]:
        text = deployment.options.get("response") or self._response or f"You said: {last_user_text(request['messages'])}"
        words = str(text).split(" ")
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(words):
            words, finish = words[:limit], "length"
        prompt = _count_tokens(request["messages"])
        usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
        return words, finish, usage

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        words, finish, usage = self._plan(request, deployment)
        return {
            "id": f"chatcmpl-mock{time.time_ns():x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        words, finish, usage = self._plan(request, deployment)
        delay = float(deployment.options.get("chunk_delay_ms", self._delay_ms) or 0) / 1000
        for i, word in enumerate(words):
            if i and delay:
                await asyncio.sleep(delay)
            delta: dict[str, Any] = {"content": word if i == 0 else " " + word}
            if i == 0:
                delta["role"] = "assistant"
            yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        yield {"choices": [], "usage": usage}

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        inputs = request["input"]
        texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs]
        dimensions = int(request.get("dimensions") or 16)
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": mock_embedding(text, dimensions)}
                for i, text in enumerate(texts)
            ],
            "model": deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return None

    async def aclose(self) -> None:
        return None
