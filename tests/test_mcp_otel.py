"""One OpenTelemetry span per MCP tool call, a child of the request span (in-memory exporter, the demo model)."""

from __future__ import annotations

import os
import sys

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the `otel` extra is not installed")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from proxy.app import create_app  # noqa: E402
from proxy.config import parse_config  # noqa: E402
from proxy.otel import Tracing  # noqa: E402
from tests.mcp_servers import TOOLS_SERVER  # noqa: E402


async def test_each_tool_call_is_a_child_span_of_the_request() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = parse_config(f"""
providers: {{demo: {{type: mock}}}}
models: {{demo: {{provider: demo}}}}
mcp_servers:
  local: {{transport: stdio, command: "{sys.executable}", args: ["{TOOLS_SERVER}"]}}
""", dict(os.environ))
    app = create_app(config, tracing=Tracing(provider, {}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            response = await c.post("/v1/chat/completions", json={
                "model": "demo", "mcp": {"servers": ["local"]},
                "messages": [{"role": "user", "content": "please echo and fail"}]})
    finally:
        await app.state.gateway.mcp.aclose()
    assert response.status_code == 200, response.text
    assert sorted(t["name"] for t in response.json()["tool_trace"]) == ["echo", "fail"]
    spans = list(exporter.get_finished_spans())
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    tools = {s.name: s for s in spans if s.name.startswith("execute_tool ")}
    assert set(tools) == {"execute_tool local__echo", "execute_tool local__fail"}
    for span in tools.values():
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["omni_llm.mcp.server"] == "local"
    assert tools["execute_tool local__fail"].attributes["error.type"] == "tool_error"
    assert "error.type" not in tools["execute_tool local__echo"].attributes
