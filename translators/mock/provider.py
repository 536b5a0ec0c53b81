"""The mock provider class: shapes a `MockAnswer` into OpenAI responses, chunks and embeddings."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from proxy.config import Deployment, ProviderConfig
from proxy.errors import ProxyError
from translators.base import CHAT, EMBEDDINGS, JSON, JSON_SCHEMA, RERANK, STREAM, TOOLS, VISION
from translators.mock.answer import MockAnswer, plan_mock_answer

# What the mock honours (sampling params are accepted: a deterministic model is
# what temperature 0 asks for). Anything else — logprobs, logit_bias,
# modalities, audio, prediction, service_tier, store, metadata, vendor
# extensions like top_k — is dropped and named, as for a real provider.
MOCK_CHAT_PARAMS = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "max_tokens",
    "max_completion_tokens", "stop", "seed", "frequency_penalty", "presence_penalty", "user", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
})


def mock_embedding(text: str, dimensions: int) -> list[float]:
    digest = b""
    counter = 0
    while len(digest) < dimensions * 4:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    raw = [v / 2**31 - 1.0 for v in struct.unpack(f">{dimensions}I", digest[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def to_mock_embedding_inputs(inputs: Any) -> list[tuple[str, int]]:
    """(text to hash, token count) per input: a string, a token-id array, or a list of either."""
    if isinstance(inputs, str):
        return [(inputs, len(inputs.split()))]
    if inputs and all(isinstance(i, int) for i in inputs):
        return [(_token_ids_text(inputs), len(inputs))]  # one input given as token ids
    return [(i, len(i.split())) if isinstance(i, str) else (_token_ids_text(i), len(i)) for i in inputs]


def _token_ids_text(ids: list[int]) -> str:
    return "tokens:" + ",".join(map(str, ids))


def mock_call_id(call_id: str, choice: int) -> str:
    """Choices are separate samples: with n > 1 each gets its own tool-call ids."""
    return call_id if choice == 0 else f"{call_id}_{choice}"


def to_mock_message(answer: MockAnswer, choice: int = 0) -> JSON:
    message: JSON = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.reasoning:
        message["reasoning_content"] = " ".join(answer.reasoning)
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": mock_call_id(c.id, choice), "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    return message


def _mock_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def to_mock_rerank(query: str, documents: list[Any], top_n: int | None = None) -> JSON:
    """Documents ordered by the share of the query's words they contain (ties: original order), scores in [0, 1].

    Words are runs of letters and digits, case-folded ("France?" matches "france"): lexical overlap, no model.
    """
    wanted = _mock_words(query)
    texts = [document.get("text", "") if isinstance(document, dict) else str(document) for document in documents]
    scored = []
    for index, text in enumerate(texts):
        score = len(wanted & _mock_words(text)) / len(wanted) if wanted else 0.0
        scored.append({"index": index, "relevance_score": round(score, 6)})
    scored.sort(key=lambda r: (-r["relevance_score"], r["index"]))
    results = scored[:top_n] if isinstance(top_n, int) and top_n > 0 else scored
    tokens = len(query.split()) + sum(len(text.split()) for text in texts)
    return {"id": f"rerank-mock{time.time_ns():x}", "results": results,
            "meta": {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": tokens}}}


def iter_mock_deltas(answer: MockAnswer, choice: int = 0) -> Iterator[JSON]:
    """One choice's deltas in order: reasoning words, content words, then each call's name and fragments.

    Never empty (an empty answer is one empty content delta); the caller adds `role` to the first.
    """
    if answer.reasoning:
        yield {"reasoning_content": answer.reasoning[0]}
        for word in answer.reasoning[1:]:
            yield {"reasoning_content": " " + word}
    words = answer.words
    if words:
        yield {"content": words[0]}
        for word in words[1:]:
            yield {"content": " " + word}
    for index, call in enumerate(answer.tool_calls):
        yield {"tool_calls": [{"index": index, "id": mock_call_id(call.id, choice), "type": "function",
                               "function": {"name": call.name, "arguments": ""}}]}
        for fragment in call.fragments:
            if fragment:
                yield {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
    if not (words or answer.reasoning or answer.tool_calls):
        yield {"content": ""}


class MockProvider:
    # RERANK: `rerank()` below (CONTRACT §10 lists the mock among the rerank models).
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA, RERANK})
    supported_params: ClassVar[frozenset[str] | None] = MOCK_CHAT_PARAMS

    def __init__(self, config: ProviderConfig) -> None:
        self._response = config.get("response")
        self._delay_ms = float(config.get("chunk_delay_ms", 0) or 0)

    def _plan(self, request: JSON, deployment: Deployment) -> MockAnswer:
        return plan_mock_answer(request, deployment.options.get("response") or self._response)

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        answer = self._plan(request, deployment)
        message = to_mock_message(answer)
        return {
            "id": f"chatcmpl-mock{time.time_ns():x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.model,
            "choices": [
                {"index": i, "message": message if i == 0 else to_mock_message(answer, i),
                 "finish_reason": answer.finish, "logprobs": None}
                for i in range(answer.n)
            ] if answer.n > 1 else [{"index": 0, "message": message, "finish_reason": answer.finish, "logprobs": None}],
            "usage": answer.usage,
        }

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        answer = self._plan(request, deployment)
        delay = float(deployment.options.get("chunk_delay_ms", self._delay_ms) or 0) / 1000
        n = answer.n
        if n == 1 and answer.words and not (answer.reasoning or answer.tool_calls):  # plain text: the load-test path
            words = answer.words
            yield {"choices": [{"index": 0, "delta": {"role": "assistant", "content": words[0]}, "finish_reason": None}]}
            for word in words[1:]:
                if delay:
                    await asyncio.sleep(delay)
                yield {"choices": [{"index": 0, "delta": {"content": " " + word}, "finish_reason": None}]}
            yield {"choices": [{"index": 0, "delta": {}, "finish_reason": answer.finish}]}
            yield {"choices": [], "usage": answer.usage}
            return
        if n == 1:
            deltas = iter_mock_deltas(answer)
            yield {"choices": [{"index": 0, "delta": {"role": "assistant", **next(deltas)}, "finish_reason": None}]}
            for delta in deltas:
                if delay:
                    await asyncio.sleep(delay)
                yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        else:  # choices interleave, each in its own chunk, as OpenAI sends them
            for step, deltas_by_choice in enumerate(zip(*(iter_mock_deltas(answer, i) for i in range(n)), strict=True)):
                if step and delay:
                    await asyncio.sleep(delay)
                for index, delta in enumerate(deltas_by_choice):
                    own = {"role": "assistant", **delta} if step == 0 else delta
                    yield {"choices": [{"index": index, "delta": own, "finish_reason": None}]}
        for index in range(n):
            yield {"choices": [{"index": index, "delta": {}, "finish_reason": answer.finish}]}
        yield {"choices": [], "usage": answer.usage}

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        inputs = to_mock_embedding_inputs(request["input"])
        dimensions = int(request.get("dimensions") or 16)
        tokens = sum(count for _, count in inputs)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": mock_embedding(text, dimensions)}
                for i, (text, _) in enumerate(inputs)
            ],
            "model": deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def rerank(self, request: JSON, deployment: Deployment) -> JSON:
        """Cohere-shaped rerank (`query`, `documents`, `top_n`) for `/v1/rerank` on a mock model."""
        return to_mock_rerank(request["query"], request["documents"], request.get("top_n"))

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return None

    async def aclose(self) -> None:
        return None
