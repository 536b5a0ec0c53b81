"""Every ingress runs the chat pipeline: an extension step sees the translated request, and what it adds to
the answer reaches the client in the ingress's own shape (JSON and streams)."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from proxy.app import create_app
from proxy.config import parse_config
from proxy.pipeline import ChatCall

CONFIG = """
providers:
  demo: {type: mock}
models:
  demo: {provider: demo, model: mock-1}
"""


class Marking:
    """Appends a user turn naming the step (the mock echoes the last user message) and adds `marks` to the answer."""

    def __init__(self, seen: list[dict[str, Any]]) -> None:
        self.seen = seen

    def _mark(self, call: ChatCall) -> None:
        self.seen.append(dict(call.body))
        call.body["messages"] = [*call.body["messages"], {"role": "user", "content": "marked"}]
        call.extra["marks"] = ["m"]

    async def complete(self, call: ChatCall, nxt: Any) -> Any:
        self._mark(call)
        return await nxt(call)

    async def stream(self, call: ChatCall, nxt: Any) -> Any:
        self._mark(call)
        served = await nxt(call)
        first, rest = served.result

        async def passed() -> AsyncIterator[Any]:
            async for item in rest:
                yield item

        served.result = (first, passed())
        return served


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = []
    module = types.ModuleType("tests_ingress_step")
    module.build = lambda gateway, value, body: Marking(log)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_ingress_step", module)
    monkeypatch.setattr("proxy.pipeline.STEPS", (("rag", "tests_ingress_step:build"),))
    return log


async def _post(path: str, body: dict[str, Any]) -> httpx.Response:
    app = create_app(parse_config(CONFIG, dict(os.environ)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post(path, json=body)


def _events(response: httpx.Response) -> list[Any]:
    return [orjson.loads(line[6:]) for line in response.text.split("\n")
            if line.startswith("data: ") and line != "data: [DONE]"]


MESSAGES = {"model": "demo", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], "rag": {}}
RESPONSES = {"model": "demo", "input": "hi", "rag": {}}
COMPLETIONS = {"model": "demo", "prompt": "hi", "max_tokens": 50, "rag": {}}


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_run_the_pipeline(seen: list[dict[str, Any]], stream: bool) -> None:
    response = await _post("/v1/messages", {**MESSAGES, "stream": stream})
    assert response.status_code == 200, response.text
    assert seen[0]["messages"] == [{"role": "user", "content": "hi"}] and "max_tokens" in seen[0]
    if stream:
        events = _events(response)
        assert events[0]["message"]["marks"] == ["m"]
        text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    else:
        assert response.json()["marks"] == ["m"]
        text = response.json()["content"][0]["text"]
    assert "marked" in text


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_run_the_pipeline(seen: list[dict[str, Any]], stream: bool) -> None:
    response = await _post("/v1/responses", {**RESPONSES, "stream": stream})
    assert response.status_code == 200, response.text
    final = _events(response)[-1]["response"] if stream else response.json()
    assert final["marks"] == ["m"] and "marked" in final["output"][0]["content"][0]["text"]


@pytest.mark.parametrize("stream", [False, True])
async def test_completions_run_the_pipeline(seen: list[dict[str, Any]], stream: bool) -> None:
    response = await _post("/v1/completions", {**COMPLETIONS, "stream": stream})
    assert response.status_code == 200, response.text
    if stream:
        events = _events(response)
        text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
        assert events[0]["marks"] == ["m"] and all("marks" not in e for e in events[1:])
    else:
        text = response.json()["choices"][0]["text"]
        assert response.json()["marks"] == ["m"]
    assert "marked" in text and len(seen) == 1
