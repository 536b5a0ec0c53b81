"""`structured_output` with `mcp` through the real server: tool rounds pass, the final answer is validated.

The keyless `demo` model calls the MCP tool the user names, then answers the schema with the tool's result.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.proxy_server import RunningProxy, run_proxy, sse_events

pytest.importorskip("mcp", reason="the mcp extra is not installed: MCP cannot run")

CONFIG = """
server:
  api_keys: []
providers:
  demo: {type: mock}
models:
  demo: {provider: demo, model: mock-1}
mcp_servers:
  calc: {transport: stdio, command: python, args: ["docs/examples/mcp/calc_server.py"]}
"""
QUESTION = "How many words are in this sentence? Use calc__word_count."
BODY = {
    "model": "demo",
    "mcp": {"servers": ["calc"]},
    "messages": [{"role": "user", "content": QUESTION}],
    "structured_output": {"format": {"answer": "string", "confidence": "low|high"}},
}


@pytest.fixture(scope="module")
def proxy() -> Iterator[RunningProxy]:
    with run_proxy(CONFIG) as running:
        yield running


def test_final_answer_validated_after_the_tool_round(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions", json=BODY, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    message = answer["choices"][0]["message"]
    assert message["parsed"]["answer"].startswith("Tool results: calc__word_count returned: 9")
    assert message["parsed"]["confidence"] in ("low", "high")
    assert orjson.loads(message["content"]) == message["parsed"]
    assert [t["name"] for t in answer["tool_trace"]] == ["word_count"]
    assert response.headers.get_list("x-omni-structured-repairs") == ["0"]


def test_method_tool_forces_the_answer_once_tool_results_are_in(proxy: RunningProxy) -> None:
    body = {**BODY, "structured_output": {**BODY["structured_output"], "method": "tool"}}
    response = httpx.post(proxy.v1 + "/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert set(choice["message"]["parsed"]) == {"answer", "confidence"}
    assert [t["name"] for t in answer["tool_trace"]] == ["word_count"]


def test_streamed(proxy: RunningProxy) -> None:
    with httpx.stream(
        "POST", proxy.v1 + "/chat/completions", json={**BODY, "stream": True}, timeout=60
    ) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert any(c.get("tool_trace") for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert orjson.loads(text)["answer"].startswith("Tool results: calc__word_count returned: 9")
