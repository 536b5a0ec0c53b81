"""A real MCP server for the tests, on the SDK's server API (MCPServer).

    python tools_server.py                               # stdio
    python tools_server.py --http PORT [--token TOKEN]   # streamable HTTP on 127.0.0.1:PORT/mcp
    python tools_server.py --sse PORT                    # the deprecated HTTP+SSE transport (/sse)
    python tools_server.py --ws PORT                     # JSON-RPC text frames over a WebSocket (subprotocol mcp)

With --token every HTTP request must carry `Authorization: Bearer TOKEN`
(discovery, tools/list and tools/call alike), else 401.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("test-tools")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def fail(reason: str = "it failed") -> str:
    """Always fails with the given reason."""
    raise ToolError(f"tool failure: {reason}")


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def big(size: int) -> str:
    """Return `size` bytes of text."""
    return "x" * size


@server.tool(name="dotted.name")
def dotted() -> str:
    """A tool whose name has a character vendors refuse."""
    return "dotted"


@server.tool()
def pid() -> str:
    """The server process id (restart tests)."""
    return str(os.getpid())


@server.tool()
def crash() -> str:
    """Exit the server process at once."""
    os._exit(3)


_in_flight = {"now": 0, "most": 0}


@server.tool()
async def hold(seconds: float) -> int:
    """Sleep; answer the most calls this process ever had in flight at once."""
    _in_flight["now"] += 1
    _in_flight["most"] = max(_in_flight["most"], _in_flight["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        _in_flight["now"] -= 1
    return _in_flight["most"]


@server.tool()
async def grow(name: str, ctx: Context, notify: bool = True) -> str:
    """Add a tool called `name` (announced with tools/list_changed unless notify is false)."""
    server.add_tool(lambda: name, name=name, description="grown at run time")
    if notify:
        await ctx.notify_tools_changed()
    return f"added {name}"


async def _serve_websocket(port: int) -> None:
    import anyio
    import mcp_types
    from mcp.shared.message import SessionMessage
    from websockets.asyncio.server import serve

    lowlevel = server._lowlevel_server

    async def connection(ws: Any) -> None:
        to_server, read = anyio.create_memory_object_stream[Any](0)
        write, from_server = anyio.create_memory_object_stream[Any](0)

        async def reader() -> None:
            async with to_server:
                async for frame in ws:
                    await to_server.send(SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(frame)))

        async def writer() -> None:
            async with from_server:
                async for message in from_server:
                    await ws.send(message.message.model_dump_json(by_alias=True, exclude_unset=True))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reader)
            tasks.start_soon(writer)
            await lowlevel.run(read, write, lowlevel.create_initialization_options())
            tasks.cancel_scope.cancel()

    async with serve(connection, "127.0.0.1", port, subprotocols=["mcp"]):  # type: ignore[list-item]
        await asyncio.Future()


def _http_app(token: str | None) -> Any:
    app = server.streamable_http_app(host="127.0.0.1")
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"error": "unauthorized"}'})
            return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int)
    parser.add_argument("--token")
    parser.add_argument("--sse", type=int)
    parser.add_argument("--ws", type=int)
    args = parser.parse_args()
    import uvicorn

    if args.http is not None:
        uvicorn.run(_http_app(args.token), host="127.0.0.1", port=args.http, log_level="warning")
    elif args.sse is not None:
        uvicorn.run(server.sse_app(host="127.0.0.1"), host="127.0.0.1", port=args.sse, log_level="warning")
    elif args.ws is not None:
        asyncio.run(_serve_websocket(args.ws))
    else:
        server.run()


if __name__ == "__main__":
    main()
