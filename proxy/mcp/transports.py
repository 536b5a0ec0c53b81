"""The SDK transport for each configured server, and the one the SDK no longer ships (websocket).

Every transport is an async context manager yielding the SDK's (read, write)
stream pair. The read side is wrapped so the connection manager learns when
the server went away (a stdio process that died, a socket closed) and can
start it again on the next use.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from proxy.config import McpServerConfig

# Long-lived streams (SSE, a server holding a response open) may be silent this long.
_READ_TIMEOUT_S = 300.0


class WatchedReadStream:
    """The SDK's read stream, setting `gone` when it ends (EOF, closed, broken)."""

    def __init__(self, inner: Any, gone: anyio.Event) -> None:
        self._inner = inner
        self._gone = gone

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._gone.set()
            raise

    def __aiter__(self) -> WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> WatchedReadStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:  # e.g. `last_context`, read duck-typed by the dispatcher
        return getattr(self._inner, name)


@asynccontextmanager
async def open_transport(cfg: McpServerConfig, gone: anyio.Event) -> AsyncIterator[tuple[Any, Any]]:
    async with AsyncExitStack() as stack:
        read, write = await stack.enter_async_context(_transport(cfg, stack))
        yield WatchedReadStream(read, gone), write


def _transport(cfg: McpServerConfig, stack: AsyncExitStack) -> Any:
    if cfg.transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # `python` is the gateway's own interpreter: servers written with the `mcp` SDK (installed by the
        # gateway's `mcp` extra) start without knowing where the gateway's virtualenv lives.
        command = sys.executable if cfg.command in ("python", "python3") else cfg.command
        params = StdioServerParameters(command=command, args=list(cfg.args), env=dict(cfg.env) or None, cwd=cfg.cwd)
        return stdio_client(params, errlog=sys.stderr)
    if cfg.transport == "streamable_http":
        return _streamable_http(cfg)
    if cfg.transport == "sse":
        from mcp.client.sse import sse_client

        return sse_client(cfg.url, headers=dict(cfg.headers), timeout=cfg.timeout_s, sse_read_timeout=_READ_TIMEOUT_S)
    return websocket_client(cfg.url, dict(cfg.headers), cfg.timeout_s)


@asynccontextmanager
async def _streamable_http(cfg: McpServerConfig) -> AsyncIterator[tuple[Any, Any]]:
    import logging

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per tool call is noise in the gateway's log

    # The headers (a bearer token) go on the client itself, so every request carries them:
    # discovery, tools/list and tools/call alike.
    timeout = httpx2.Timeout(cfg.timeout_s, read=_READ_TIMEOUT_S)
    async with httpx2.AsyncClient(headers=dict(cfg.headers), timeout=timeout) as http:
        async with streamable_http_client(cfg.url, http_client=http) as streams:
            yield streams


@asynccontextmanager
async def websocket_client(url: str, headers: dict[str, str], timeout_s: float) -> AsyncIterator[tuple[Any, Any]]:
    """JSON-RPC messages as text frames over a WebSocket with subprotocol `mcp` (the seeds' transport)."""
    import mcp_types
    from mcp.shared.message import SessionMessage
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    to_session, read = anyio.create_memory_object_stream[Any](0)
    write, from_session = anyio.create_memory_object_stream[Any](0)
    async with connect(url, subprotocols=["mcp"], additional_headers=headers,  # type: ignore[list-item]
                       open_timeout=timeout_s) as ws:

        async def reader() -> None:
            async with to_session:
                try:
                    async for frame in ws:
                        try:
                            message = mcp_types.jsonrpc_message_adapter.validate_json(frame, by_name=False)
                        except ValueError as exc:
                            await to_session.send(exc)
                            continue
                        await to_session.send(SessionMessage(message))
                except ConnectionClosed:
                    pass

        async def writer() -> None:
            async with from_session:
                async for item in from_session:
                    await ws.send(item.message.model_dump_json(by_alias=True, exclude_unset=True))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reader)
            tasks.start_soon(writer)
            try:
                yield read, write
            finally:
                tasks.cancel_scope.cancel()
