"""What the gateway adds per MCP tool call, beyond the tool's own time.

    .venv/bin/python -m bench.mcp_bench [--calls 400]

Against tests/mcp_servers/tools_server.py (its `echo` tool: no work of its own),
over stdio and over streamable HTTP on 127.0.0.1, on one warm connection:

- direct: `Client.call_tool` of the `mcp` SDK — the tool call itself (the
  transport, the server, the SDK), what any MCP client pays;
- manager: the gateway's call path on the same connection (schema check of the
  arguments, per-server concurrency slot, timeout, result text, truncation, the
  trace entry);
- cpu: the same two paths with a tool that answers instantly in-process (no
  transport, no server): the gateway's own work alone, the least noisy figure;
- loop: one whole tool round of the chat step (`McpStep.complete` with a model
  that answers instantly: one MCP call, then text) — argument parsing, the
  follow-up messages, `tool_trace`, usage — per tool call.

Direct and gateway calls alternate so load on the box hits both alike; the
figures are medians, and "added" is the gateway's path minus the direct call.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.config import McpServerConfig
from proxy.mcp.manager import McpManager
from proxy.mcp.step import McpStep
from proxy.pipeline import ChatCall
from tests.mcp_servers import TOOLS_SERVER, http_server


class _Served:
    def __init__(self, result: dict[str, Any]) -> None:
        self.result, self.attempts = result, []


def _model(turns: list[dict[str, Any]]) -> Callable[[ChatCall], Awaitable[_Served]]:
    """A model that answers at once: the turns in order, again and again."""
    counter = iter(range(10**9))

    async def nxt(call: ChatCall) -> _Served:
        turn = turns[next(counter) % len(turns)]
        return _Served({"choices": [{"index": 0, "message": dict(turn), "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    return nxt


async def measure(cfg: McpServerConfig, calls: int) -> dict[str, float]:
    manager = McpManager({cfg.name: cfg})
    try:
        catalog = await manager.catalog([cfg.name])
        entry = catalog.entries[f"{cfg.name}__echo"]
        client = await manager.servers[cfg.name].client()
        step = McpStep(manager, [cfg.name], None, True, 5)
        call_turn = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": entry.public, "arguments": '{"text": "hi"}'}}]}
        nxt = _model([call_turn, {"role": "assistant", "content": "done"}])
        direct: list[float] = []
        managed: list[float] = []
        loop: list[float] = []
        for i in range(calls + 20):
            t0 = time.perf_counter()
            await client.call_tool("echo", {"text": "hi"})
            t1 = time.perf_counter()
            await manager.call(entry, {"text": "hi"})
            t2 = time.perf_counter()
            await step.complete(ChatCall({"model": "m", "messages": [{"role": "user", "content": "x"}]}, [], {}),
                                nxt)  # type: ignore[arg-type]
            t3 = time.perf_counter()
            if i >= 20:  # warm-up: imports, validators, connection pools
                direct.append(t1 - t0)
                managed.append(t2 - t1)
                loop.append(t3 - t2)
        med = {name: statistics.median(v) * 1000 for name, v in
               (("direct", direct), ("manager", managed), ("loop", loop))}
        return {**med, "manager_added": med["manager"] - med["direct"], "loop_added": med["loop"] - med["direct"]}
    finally:
        await manager.aclose()


async def measure_cpu(calls: int) -> dict[str, float]:
    """The gateway's own work per call with a tool that answers instantly (no transport, no server)."""
    from mcp_types import CallToolResult, TextContent, Tool

    class Instant:
        async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
            return CallToolResult(content=[TextContent(type="text", text=arguments["text"])])

        async def list_tools(self, cursor: str | None = None) -> Any:
            schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
            return type("Page", (), {"tools": [Tool(name="echo", input_schema=schema)], "next_cursor": None})()

    manager = McpManager({"cpu": McpServerConfig("cpu", "stdio", command="unused")})
    connection = manager.servers["cpu"]
    instant = Instant()

    async def client() -> Instant:
        return instant

    connection.client = client  # type: ignore[method-assign]
    entry = (await manager.catalog(["cpu"])).entries["cpu__echo"]
    step = McpStep(manager, ["cpu"], None, True, 5)
    nxt = _model([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": entry.public, "arguments": '{"text": "hi"}'}}]},
        {"role": "assistant", "content": "done"}])
    for _ in range(50):
        await manager.call(entry, {"text": "hi"})
    t0 = time.perf_counter()
    for _ in range(calls):
        await manager.call(entry, {"text": "hi"})
    t1 = time.perf_counter()
    for _ in range(calls):
        await step.complete(ChatCall({"model": "m", "messages": [{"role": "user", "content": "x"}]}, [], {}),
                            nxt)  # type: ignore[arg-type]
    t2 = time.perf_counter()
    return {"manager": (t1 - t0) / calls * 1000, "loop": (t2 - t1) / calls * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    rows = []
    stdio = McpServerConfig("bench", "stdio", command=sys.executable, args=(TOOLS_SERVER,))
    rows.append(("stdio", asyncio.run(measure(stdio, args.calls))))
    with http_server() as url:
        http = McpServerConfig("bench", "streamable_http", url=url)
        rows.append(("streamable HTTP", asyncio.run(measure(http, args.calls))))
    cpu = asyncio.run(measure_cpu(args.calls * 10))
    print(f"Gateway work per tool call, tool answering instantly (mean of {args.calls * 10}, ms): "
          f"call path {cpu['manager']:.3f}, whole tool round of the loop {cpu['loop']:.3f}\n")
    print(f"MCP tool call, median of {args.calls} (ms)\n")
    print("| transport | direct SDK call | gateway call path | added | whole tool round of the loop | added |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['direct']:.3f} | {r['manager']:.3f} | {r['manager_added']:.3f} | {r['loop']:.3f} "
              f"| {r['loop_added']:.3f} |")


if __name__ == "__main__":
    main()
