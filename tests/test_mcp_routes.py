"""`GET /v1/mcp/tools` and `/mcp` (the gateway as one MCP server, used here with the SDK's own client)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.mcp_servers import TOOLS_SERVER, http_server
from tests.proxy_server import RunningProxy, run_proxy

GATEWAY_KEY = "gw-key-0123456789"
MCP_TOKEN = "mcp-bearer-token-0123456789"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    stdio = f'transport: stdio, command: "{sys.executable}", args: ["{TOOLS_SERVER}"]'
    state = tmp_path_factory.mktemp("mcp-state") / "state.db"
    with http_server(MCP_TOKEN) as url, run_proxy(f"""
server:
  api_keys: ["{GATEWAY_KEY}"]
state: {{database: "sqlite:///{state}"}}
providers:
  demo: {{type: mock}}
models:
  demo: {{provider: demo}}
mcp_servers:
  local: {{{stdio}, max_result_bytes: 50}}
  remote: {{transport: streamable_http, url: "{url}", headers: {{Authorization: "Bearer {MCP_TOKEN}"}},
           allowed_tools: [add, echo]}}
  nowhere: {{transport: stdio, command: /nonexistent/mcp-server, max_retries: 0}}
""") as running:
        yield running


AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


def test_tool_listing_shape_names_and_allowed_tools(proxy: RunningProxy) -> None:
    assert httpx.get(proxy.v1 + "/mcp/tools").status_code == 401
    response = httpx.get(proxy.v1 + "/mcp/tools", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    names = [item["function"]["name"] for item in body["data"]]
    assert "local__dotted_name" in names and "local__add" in names
    assert [n for n in names if n.startswith("remote__")] == ["remote__echo", "remote__add"]
    add = next(item for item in body["data"] if item["function"]["name"] == "remote__add")
    assert add == {"type": "function", "server": "remote", "function": {
        "name": "remote__add", "description": "Add two numbers.", "parameters": add["function"]["parameters"]}}
    assert add["function"]["parameters"]["type"] == "object"
    assert set(add["function"]["parameters"]["properties"]) == {"a", "b"}
    assert [u["server"] for u in body["unavailable"]] == ["nowhere"]
    assert MCP_TOKEN not in response.text
    assert httpx.get(proxy.url + "/mcp/tools", headers=AUTH, timeout=30).json()["data"] == body["data"]


def test_mcp_endpoint_needs_the_gateway_key(proxy: RunningProxy) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    response = httpx.post(proxy.url + "/mcp", json=body, headers={"accept": "application/json, text/event-stream"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_mcp_endpoint_with_the_sdk_client(proxy: RunningProxy, mode: str) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers=AUTH, timeout=30) as http:
        async with Client(streamable_http_client(proxy.url + "/mcp", http_client=http), mode=mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert {"local__add", "local__dotted_name", "remote__add", "remote__echo"} <= set(tools)
            assert "remote__big" not in tools
            assert tools["local__add"].input_schema["required"] == ["a", "b"]
            added = await client.call_tool("remote__add", {"a": 2, "b": 5})
            assert (added.content[0].text, added.is_error) == ("7.0", False)  # type: ignore[union-attr]
            failed = await client.call_tool("local__fail", {"reason": "nope"})
            assert failed.is_error and "nope" in failed.content[0].text  # type: ignore[union-attr]
            big = await client.call_tool("local__big", {"size": 80})
            assert big.content[0].text == "x" * 50 + "\n[truncated 30 bytes]"  # type: ignore[union-attr]
            unknown = await client.call_tool("local__missing", {})
            assert unknown.is_error


async def test_a_virtual_key_sees_and_calls_only_its_mcp_servers(proxy: RunningProxy) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    created = httpx.post(proxy.url + "/admin/keys", headers=AUTH, json={"name": "remote-only", "mcp_servers": ["remote"]})
    assert created.status_code == 200, created.text
    key = {"authorization": f"Bearer {created.json()['key']}"}
    listing = httpx.get(proxy.v1 + "/mcp/tools", headers=key, timeout=30).json()
    assert {item["server"] for item in listing["data"]} == {"remote"} and "unavailable" not in listing
    async with httpx2.AsyncClient(headers=key, timeout=30) as http:
        async with Client(streamable_http_client(proxy.url + "/mcp", http_client=http)) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == {"remote__add", "remote__echo"}
            assert (await client.call_tool("remote__add", {"a": 1, "b": 2})).is_error is False
            refused = await client.call_tool("local__add", {"a": 1, "b": 2})
            assert refused.is_error and "unknown tool" in refused.content[0].text  # type: ignore[union-attr]


def test_stdio_servers_stop_with_the_gateway() -> None:
    import os

    stdio = f'transport: stdio, command: "{sys.executable}", args: ["{TOOLS_SERVER}"]'
    with run_proxy(f"providers: {{demo: {{type: mock}}}}\nmodels: {{demo: {{provider: demo}}}}\n"
                   f"mcp_servers: {{local: {{{stdio}}}}}\n") as running:
        answer = httpx.post(running.v1 + "/chat/completions", timeout=60, json={
            "model": "demo", "mcp": {"servers": ["local"]}, "messages": [{"role": "user", "content": "pid please"}]})
        assert answer.status_code == 200, answer.text
        pid = int(answer.json()["tool_trace"][0]["result"])
        os.kill(pid, 0)  # alive while the gateway runs
    assert running.process.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
