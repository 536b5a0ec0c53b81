"""A real MCP server for the tests, on the SDK's server API (MCPServer).

    python tools_server.py                               # stdio
    python tools_server.py --http PORT [--token TOKEN]   # streamable HTTP on 127.0.0.1:PORT/mcp

With --token every HTTP request must carry `Authorization: Bearer TOKEN`
(discovery, tools/list and tools/call alike), else 401.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from mcp.server.mcpserver import MCPServer
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
    args = parser.parse_args()
    if args.http is None:
        server.run()
        return
    import uvicorn

    uvicorn.run(_http_app(args.token), host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
