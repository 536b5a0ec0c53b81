"""The cache key, the stream recorder and replay, the in-memory LRU (CONTRACT §12)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy.keys.cache import NOT_IN_KEY, MemoryCache, StreamRecorder, cache_key, to_chunks

BASE: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}

# Every field that can change the answer, each with a value that differs from BASE's.
IN_KEY: list[tuple[str, Any]] = [
    ("model", "other"),
    ("messages", [{"role": "user", "content": "hello"}]),
    ("messages", [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "required"),
    ("parallel_tool_calls", False),
    ("response_format", {"type": "json_object"}),
    ("temperature", 0.3),
    ("top_p", 0.5),
    ("max_tokens", 5),
    ("max_completion_tokens", 5),
    ("n", 2),
    ("stop", ["\n"]),
    ("seed", 7),
    ("presence_penalty", 0.5),
    ("frequency_penalty", 0.5),
    ("logit_bias", {"50256": -100}),
    ("logprobs", True),
    ("top_logprobs", 2),
    ("reasoning_effort", "low"),
    ("modalities", ["text"]),
    ("structured_output", {"schema": {"type": "object"}}),
    ("rag", {"collection": "handbook"}),
    ("mcp", {"servers": ["files"]}),
    ("fallbacks", ["other"]),
    ("some_vendor_extension", {"x": 1}),
]


@pytest.mark.parametrize("field, value", IN_KEY)
def test_every_parameter_that_changes_the_answer_is_in_the_key(field: str, value: Any) -> None:
    assert cache_key({**BASE, field: value}, "ns") != cache_key(BASE, "ns")


@pytest.mark.parametrize("field, value", [
    ("stream", True), ("stream_options", {"include_usage": True}), ("cache", {"ttl_s": 5}), ("user", "u-1"),
    ("metadata", {"team": "a"}), ("store", True),
])
def test_delivery_fields_are_not_in_the_key(field: str, value: Any) -> None:
    assert field in NOT_IN_KEY
    assert cache_key({**BASE, field: value}, "ns") == cache_key(BASE, "ns")


def test_key_is_a_hash_not_the_payload_and_is_order_independent() -> None:
    key = cache_key({**BASE, "temperature": 0.1, "top_p": 0.9}, "ns")
    assert "hi" not in key and key.startswith("omni:cache:v1:ns:") and len(key.rsplit(":", 1)[1]) == 64
    assert key == cache_key({"top_p": 0.9, "temperature": 0.1, **BASE}, "ns")


def test_namespaces_isolate() -> None:
    assert cache_key(BASE, "key_a") != cache_key(BASE, "key_b")


COMPLETION = {
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
         "finish_reason": "tool_calls"},
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


def test_a_completion_replays_as_chunks_and_records_back() -> None:
    chunks = to_chunks(copy.deepcopy(COMPLETION))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hello there"}
    assert chunks[-1] == {"choices": [], "usage": COMPLETION["usage"]}
    recorder = StreamRecorder()
    for chunk in chunks:
        recorder.add(chunk)
    assert recorder.complete
    assert recorder.completion() == COMPLETION


def test_recorder_joins_deltas_and_knows_an_unfinished_stream() -> None:
    recorder = StreamRecorder()
    recorder.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}}]})
    recorder.add({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]})
    assert not recorder.complete
    recorder.add({"choices": [{"index": 0, "delta": {"content": "llo", "tool_calls": [
        {"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": "stop"}]})
    message = recorder.completion()["choices"][0]["message"]
    assert recorder.complete and message["content"] == "Hello"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{\"a\": 1}"}


async def test_memory_cache_is_a_bounded_lru_with_ttl() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    assert await cache.get("a") == b"1"  # a is now the most recent
    await cache.set("c", b"3", 60)
    assert await cache.get("b") is None and await cache.get("a") == b"1" and len(cache) == 2
    await cache.set("d", b"4", 0)  # already expired
    assert await cache.get("d") is None
