"""`/mcp`: the gateway as one MCP server (streamable HTTP) exposing every configured server's tools.

Tools keep the `SERVER__TOOL` names of the chat loop and the `allowed_tools`
ceilings; calls go through the same connections, timeouts and truncation.
The gateway middleware authenticates first (same keys as every route), so
Claude Desktop/Code or any MCP client reaches the operator's servers only
with a gateway key; a virtual key sees and calls only its `mcp_servers`. Stateless (no session to keep per client): it serves the
session-less 2026-07-28 protocol and the handshake-era one alike. The SDK's
session manager runs in an owner task started on the first request and
stopped with the gateway's MCP connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from proxy.mcp.api import servers_for
from proxy.mcp.manager import McpManager, manager_for

log = logging.getLogger("omni.mcp")


def create_mcp_app(gateway: Any) -> GatewayMcpServer:
    return GatewayMcpServer(manager_for(gateway))


class GatewayMcpServer:
    def __init__(self, manager: McpManager) -> None:
        from mcp.server.lowlevel import Server
        from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager

        self.manager = manager
        server: Server[Any] = Server("omni-llm", version="1", on_list_tools=self._list_tools,
                                     on_call_tool=self._call_tool)
        self._sessions = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)
        self._asgi = StreamableHTTPASGIApp(self._sessions)
        self._started: asyncio.Future[None] | None = None
        self._stop: anyio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        manager.on_close.append(self.aclose)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            self._task = asyncio.get_running_loop().create_task(self._own(self._started))
        await asyncio.shield(self._started)
        await self._asgi(scope, receive, send)

    async def _own(self, started: asyncio.Future[None]) -> None:
        self._stop = anyio.Event()
        try:
            async with self._sessions.run():
                started.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    async def aclose(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _list_tools(self, ctx: Any, params: Any) -> Any:
        from mcp_types import ListToolsResult, Tool

        catalog = await self.manager.catalog(_servers(ctx, self.manager), skip_unavailable=True)
        for name, why in catalog.unavailable.items():
            log.warning("/mcp: server '%s' left out of the listing: %s", name, why)
        return ListToolsResult(tools=[Tool(name=e.public, description=e.description, input_schema=e.parameters)
                                      for e in catalog.entries.values()])

    async def _call_tool(self, ctx: Any, params: Any) -> Any:
        from mcp_types import CallToolResult, TextContent

        server = next((name for name in _servers(ctx, self.manager) if params.name.startswith(name + "__")), None)
        entry = None
        if server is not None:
            catalog = await self.manager.catalog([server], skip_unavailable=True)
            entry = catalog.entries.get(params.name)
            if entry is None and server in catalog.unavailable:
                return CallToolResult(content=[TextContent(type="text", text=catalog.unavailable[server])],
                                      is_error=True)
        if entry is None:
            return CallToolResult(content=[TextContent(type="text", text=f"unknown tool '{params.name}'")],
                                  is_error=True)
        outcome = await self.manager.call(entry, params.arguments or {})
        return CallToolResult(content=[TextContent(type="text", text=outcome.result)], is_error=outcome.is_error)


def _servers(ctx: Any, manager: McpManager) -> list[str]:
    """The servers this MCP request's gateway key may use (the transport hands over the HTTP request)."""
    return servers_for(getattr(getattr(ctx, "request", None), "scope", None), manager.servers)
