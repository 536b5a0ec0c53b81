"""The connection manager against real MCP server processes: every transport, restarts, list changes, limits."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from proxy.config import McpServerConfig
from proxy.errors import McpServerUnavailable
from proxy.mcp.manager import McpManager
from tests.mcp_servers import LEGACY_SERVER, TOOLS_SERVER, http_server


def stdio(name: str = "local", **options: object) -> McpServerConfig:
    return McpServerConfig(name, "stdio", command=sys.executable, args=(TOOLS_SERVER,), **options)  # type: ignore[arg-type]


async def call(manager: McpManager, server: str, tool: str, **arguments: object) -> tuple[str, bool]:
    catalog = await manager.catalog([server])
    outcome = await manager.call(catalog.entries[f"{server}__{tool}"], arguments)
    return outcome.result, outcome.is_error


@pytest.mark.parametrize("transport", ["stdio", "http", "sse", "ws"])
async def test_every_transport_lists_and_calls(transport: str) -> None:
    if transport == "stdio":
        manager = McpManager({"s": stdio("s")})
        await _add_and_fail(manager)
        return
    kind = {"http": "streamable_http", "sse": "sse", "ws": "websocket"}[transport]
    with http_server(transport=transport) as url:
        await _add_and_fail(McpManager({"s": McpServerConfig("s", kind, url=url)}))


async def _add_and_fail(manager: McpManager) -> None:
    try:
        assert await call(manager, "s", "add", a=1, b=2.5) == ("3.5", False)
        result, is_error = await call(manager, "s", "fail", reason="bad input")
        assert is_error and "bad input" in result
    finally:
        await manager.aclose()


async def test_bearer_token_reaches_every_request_and_a_wrong_one_is_unavailable() -> None:
    with http_server(token="right-token-0123") as url:
        good = McpServerConfig("good", "streamable_http", url=url, headers={"Authorization": "Bearer right-token-0123"})
        bad = McpServerConfig("bad", "streamable_http", url=url, headers={"Authorization": "Bearer wrong"},
                              max_retries=0)
        manager = McpManager({"good": good, "bad": bad})
        try:
            assert "good__echo" in (await manager.catalog(["good"])).entries
            assert await call(manager, "good", "echo", text="hi") == ("hi", False)
            with pytest.raises(McpServerUnavailable, match="'bad'"):
                await manager.catalog(["bad"])
        finally:
            await manager.aclose()


async def test_a_dead_stdio_server_is_started_again() -> None:
    manager = McpManager({"local": stdio()})
    try:
        first, _ = await call(manager, "local", "pid")
        result, is_error = await call(manager, "local", "crash")
        assert is_error and "crash" in result
        second, _ = await call(manager, "local", "pid")
        assert second != first
        os.kill(int(second), signal.SIGKILL)  # killed while idle: noticed, restarted on next use
        connection = manager.servers["local"]
        while connection.connected:
            await asyncio.sleep(0.01)
        third, is_error = await call(manager, "local", "pid")
        assert not is_error and third not in (first, second)
    finally:
        await manager.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(int(third), 0)


async def test_list_changed_refreshes_the_cached_tool_list() -> None:
    manager = McpManager({"local": stdio(tools_ttl_s=3600)})
    try:
        assert await call(manager, "local", "grow", name="sprout") == ("added sprout", False)
        while "local__sprout" not in (await manager.catalog(["local"])).entries:
            await asyncio.sleep(0.01)
        await call(manager, "local", "grow", name="silent", notify=False)
        assert "local__silent" not in (await manager.catalog(["local"])).entries
    finally:
        await manager.aclose()


async def test_a_handshake_era_server_negotiates_down_and_its_list_changed_refreshes() -> None:
    legacy = McpServerConfig("old", "stdio", command=sys.executable, args=(LEGACY_SERVER,), tools_ttl_s=3600)
    manager = McpManager({"old": legacy})
    try:
        assert await call(manager, "old", "echo", text="hi") == ("hi (protocol 2025-06-18)", False)
        assert "old__sprout" not in (await manager.catalog(["old"])).entries
        assert await call(manager, "old", "grow", name="sprout") == ("added sprout", False)
        async with asyncio.timeout(10):  # dropped by the session notification, listed again
            while "old__sprout" not in (await manager.catalog(["old"])).entries:
                await asyncio.sleep(0.01)
    finally:
        await manager.aclose()


async def test_tool_list_ttl_expires() -> None:
    manager = McpManager({"local": stdio(tools_ttl_s=0.001)})
    try:
        await call(manager, "local", "grow", name="quiet", notify=False)
        await asyncio.sleep(0.01)
        assert "local__quiet" in (await manager.catalog(["local"])).entries
    finally:
        await manager.aclose()


async def test_concurrency_is_bounded_per_server() -> None:
    manager = McpManager({"local": stdio(max_concurrency=2)})
    try:
        catalog = await manager.catalog(["local"])
        outcomes = await asyncio.gather(*(manager.call(catalog.entries["local__hold"], {"seconds": 0.3})
                                          for _ in range(5)))
        assert max(int(o.result) for o in outcomes) == 2
    finally:
        await manager.aclose()


async def test_arguments_are_checked_against_the_input_schema_before_the_call() -> None:
    manager = McpManager({"local": stdio()})
    try:
        result, is_error = await call(manager, "local", "add", a="one")
        assert is_error and result.startswith("invalid arguments:")
        assert "'b' is a required property" in result and "a: 'one' is not of type 'number'" in result
    finally:
        await manager.aclose()


async def test_unreachable_servers_fail_fast_with_their_name() -> None:
    manager = McpManager({
        "cmd": McpServerConfig("cmd", "stdio", command="/nonexistent/server", max_retries=0),
        "exits": McpServerConfig("exits", "stdio", command=sys.executable, args=("-c", "pass"), max_retries=1),
        "port": McpServerConfig("port", "streamable_http", url="http://127.0.0.1:1/mcp", max_retries=0),
    })
    for name in ("cmd", "exits", "port"):
        with pytest.raises(McpServerUnavailable, match=f"MCP server '{name}'") as info:
            await manager.catalog([name])
        assert info.value.status == 502 and info.value.code == "mcp_server_unavailable"
    await manager.aclose()
