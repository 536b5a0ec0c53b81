"""The chat pipeline: steps compose around the router in order, only when their field is present."""

from __future__ import annotations

import sys
import types
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from proxy.app import create_app
import os

from proxy.config import parse_config
from proxy.pipeline import ChatCall, add_usage, compose_complete
from proxy.streaming import StreamRelay

CONFIG = """
providers:
  demo: {type: mock}
models:
  demo: {provider: demo, model: mock-1, response: "plain answer"}
"""


class Tagging:
    """A step that rewrites the request on the way in and decorates the answer on the way out."""

    def __init__(self, tag: str, log: list[str]) -> None:
        self.tag, self.log = tag, log

    async def complete(self, call: ChatCall, nxt: Any) -> Any:
        self.log.append(f"in:{self.tag}")
        call.body["messages"] = [*call.body["messages"], {"role": "user", "content": self.tag}]
        served = await nxt(call)
        self.log.append(f"out:{self.tag}")
        call.extra.setdefault("tags", []).append(self.tag)
        call.headers.append((b"x-test-step", self.tag.encode()))
        return served

    async def stream(self, call: ChatCall, nxt: Any) -> Any:
        served = await nxt(call)
        first, rest = served.result

        async def traced() -> AsyncIterator[Any]:
            yield {"choices": [], "tool_trace": [{"name": self.tag}]}
            async for item in rest:
                yield item

        call.extra["tags"] = [self.tag]
        served.result = (first, traced())
        return served


@pytest.fixture
def step_module(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    log: list[str] = []
    module = types.ModuleType("tests_fake_step")
    module.build = lambda gateway, value, body: None if value.get("enabled") is False else Tagging(value["tag"], log)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_fake_step", module)
    monkeypatch.setattr("proxy.pipeline.STEPS", (("rag", "tests_fake_step:build"), ("mcp", "tests_fake_step:build")))
    return log


async def _post(body: dict[str, Any]) -> httpx.Response:
    app = create_app(parse_config(CONFIG, dict(os.environ)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post("/v1/chat/completions", json=body)


async def test_steps_wrap_the_router_outermost_first(step_module: list[str]) -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}],
            "rag": {"tag": "a"}, "mcp": {"tag": "b"}}
    response = await _post(body)
    assert response.status_code == 200, response.text
    assert step_module == ["in:a", "in:b", "out:b", "out:a"]
    assert response.json()["tags"] == ["b", "a"]
    assert response.headers.get_list("x-test-step") == ["b", "a"]


async def test_a_step_turned_off_or_absent_is_not_built(step_module: list[str]) -> None:
    response = await _post({"model": "demo", "messages": [{"role": "user", "content": "hi"}],
                            "rag": {"tag": "a", "enabled": False}})
    assert response.status_code == 200
    assert step_module == []
    assert "tags" not in response.json()


async def test_stream_gets_extra_on_first_chunk_and_side_chunks(step_module: list[str]) -> None:
    response = await _post({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                            "rag": {"tag": "a"}})
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    import orjson

    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["tags"] == ["a"] and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    side = [c for c in chunks if not c["choices"]]
    assert side == [{"id": chunks[0]["id"], "object": "chat.completion.chunk", "created": chunks[0]["created"],
                     "model": "demo", "choices": [], "tool_trace": [{"name": "a"}]}]


async def test_compose_with_no_steps_is_the_innermost_call() -> None:
    async def inner(call: ChatCall) -> Any:
        return "routed"

    assert compose_complete([], inner) is inner


def test_add_usage_sums_rounds_and_details() -> None:
    a = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
         "completion_tokens_details": {"reasoning_tokens": 1}}
    b = {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5,
         "completion_tokens_details": {"reasoning_tokens": 2}, "prompt_tokens_details": {"cached_tokens": 1}}
    assert add_usage(a, b) == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                               "completion_tokens_details": {"reasoning_tokens": 3},
                               "prompt_tokens_details": {"cached_tokens": 1}}
    assert add_usage(None, b) == b and add_usage(a, None) == a


def test_relay_drops_choice_less_chunks_without_side_fields() -> None:
    relay = StreamRelay("id1", "m", include_usage=False)
    assert relay.frame({"choices": [], "something": 1}) is None
    assert relay.frame({"choices": [], "tool_trace": []}) is not None
