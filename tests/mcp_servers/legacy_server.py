"""A handshake-era MCP server (protocol 2025-06-18) over stdio, as servers built on pre-2026 SDKs behave.

Written by hand on purpose: the current SDK's server serves both eras, so it cannot stand in for a
server that knows nothing newer. It answers `server/discover` (2026-07-28) with "method not found",
so a client in `auto` mode falls back to the `initialize` handshake; it announces tool-list changes
with `notifications/tools/list_changed` on the session, the only way that era has.
"""

from __future__ import annotations

import json
import sys

VERSION = "2025-06-18"
tools = {"echo": "Echo the text back.", "grow": "Add a tool called `name` and announce it."}
negotiated: list[str] = []


def send(message: dict) -> None:  # type: ignore[type-arg]
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def schema(name: str) -> dict:  # type: ignore[type-arg]
    field = "name" if name == "grow" else "text"
    return {"type": "object", "properties": {field: {"type": "string"}}, "required": [field] if name != "echo" else []}


def call(name: str, arguments: dict) -> str:  # type: ignore[type-arg]
    if name == "grow":
        tools[arguments["name"]] = "grown at run time"
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        return f"added {arguments['name']}"
    if name == "echo":
        return str(arguments.get("text", "")) + f" (protocol {negotiated[-1] if negotiated else 'none'})"
    return name


def answer(request: dict) -> dict:  # type: ignore[type-arg]
    method, params = request.get("method"), request.get("params") or {}
    if method == "initialize":
        negotiated.append(VERSION)
        return {"protocolVersion": VERSION, "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "legacy-tools", "version": "0.9"}}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": [{"name": n, "description": d, "inputSchema": schema(n)} for n, d in tools.items()]}
    if method == "tools/call" and params.get("name") in tools:
        return {"content": [{"type": "text", "text": call(params["name"], params.get("arguments") or {})}],
                "isError": False}
    raise LookupError(method)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue  # notifications (notifications/initialized, cancellations)
        try:
            send({"jsonrpc": "2.0", "id": request["id"], "result": answer(request)})
        except LookupError:
            send({"jsonrpc": "2.0", "id": request["id"],
                  "error": {"code": -32601, "message": f"Method not found: {request.get('method')}"}})


if __name__ == "__main__":
    main()
