"""Connections to the configured MCP servers, shared by every request of one gateway.

A server is started (stdio) or connected (HTTP, SSE, WebSocket) on first use,
and the protocol version is left to the SDK to negotiate (`Client(mode="auto")`:
the session-less 2026-07-28 protocol when the server speaks it, else the
initialize handshake). Each connection lives in one owner task, because the
SDK's anyio task groups must be entered and left by the same task; requests
only send through it. A connection whose transport ends (a stdio process that
died) is started again on the next use. Tool lists are cached for
`tools_ttl_s` and dropped on a `tools/list_changed`. Tool calls are bounded
per server (`max_concurrency`) and each by `timeout_s`; a failing call is a
result with `is_error`, never an exception, so the model can recover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from proxy.config import McpServerConfig
from proxy.errors import McpServerUnavailable
from proxy.mcp.tools import Catalog, ToolEntry, input_schema, public_name, result_text, truncate
from proxy.mcp.transports import open_transport

log = logging.getLogger("omni.mcp")

_CLIENT_NAME = "omni-llm"


@dataclass
class ToolOutcome:
    server: str
    name: str
    arguments: Any
    result: str
    is_error: bool
    duration_ms: float

    def trace(self) -> dict[str, Any]:
        return {"server": self.server, "name": self.name, "arguments": self.arguments, "result": self.result,
                "is_error": self.is_error, "duration_ms": self.duration_ms}


def _failure(exc: BaseException) -> str:
    """A connection failure in a few words (anyio wraps them in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ServerConnection:
    def __init__(self, cfg: McpServerConfig) -> None:
        self.cfg = cfg
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop: anyio.Event | None = None
        self._gone: anyio.Event | None = None
        self._connect_lock = asyncio.Lock()
        self._list_lock = asyncio.Lock()
        self._tools: list[ToolEntry] | None = None
        self._tools_at = 0.0
        self._validators: dict[str, Any] = {}
        self._slots = asyncio.Semaphore(cfg.max_concurrency)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._gone is not None and not self._gone.is_set()

    # -- connection ------------------------------------------------------------
    async def client(self) -> Any:
        if self.connected:
            return self._client
        async with self._connect_lock:
            if self.connected:
                return self._client
            await self._close_current()
            error: BaseException | None = None
            for attempt in range(self.cfg.max_retries + 1):
                if attempt:
                    await asyncio.sleep(0.1 * 2 ** (attempt - 1))
                try:
                    self._client = await self._start()
                    return self._client
                except Exception as exc:  # every transport fails its own way; all mean "unreachable"
                    error = exc
            raise McpServerUnavailable(
                f"MCP server '{self.cfg.name}' is unavailable: {_failure(error) if error else 'no connection'}")

    async def _start(self) -> Any:
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        stop, gone = anyio.Event(), anyio.Event()
        task = asyncio.get_running_loop().create_task(self._own(ready, stop, gone))
        try:
            async with asyncio.timeout(self.cfg.connect_timeout_s):
                client = await asyncio.shield(ready)
        except BaseException:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            if not ready.done():
                ready.cancel()
            raise
        self._task, self._stop, self._gone = task, stop, gone
        return client

    async def _own(self, ready: asyncio.Future[Any], stop: anyio.Event, gone: anyio.Event) -> None:
        """The owner task: enter the SDK client, keep it until asked to stop or the transport ends."""
        from mcp import Client
        from mcp_types import Implementation

        try:
            client = Client(open_transport(self.cfg, gone), cache=None, message_handler=self._on_message,
                            client_info=Implementation(name=_CLIENT_NAME, version="1"))
            async with client:
                if not ready.done():
                    ready.set_result(client)
                async with anyio.create_task_group() as tasks:

                    async def until(event: anyio.Event) -> None:
                        await event.wait()
                        tasks.cancel_scope.cancel()

                    tasks.start_soon(until, stop)
                    tasks.start_soon(until, gone)
                    tasks.start_soon(self._listen, client)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not stop.is_set():
                log.warning("MCP server '%s' connection ended: %s", self.cfg.name, _failure(exc))
        finally:
            gone.set()
            if not ready.done():
                ready.set_exception(ConnectionError("connection closed during start-up"))

    async def _listen(self, client: Any) -> None:
        """2026-07-28 servers announce tool-list changes on a `subscriptions/listen` stream."""
        caps = client.server_capabilities.tools
        if caps is None or not caps.list_changed:
            return
        try:
            async with client.listen(tools_list_changed=True) as events:
                async for _ in events:
                    self._drop_tools()
        except Exception:  # a handshake-era server (no listen) or a lost stream: the TTL still applies
            log.debug("MCP server '%s': no tools/list_changed stream", self.cfg.name, exc_info=True)

    async def _on_message(self, message: Any) -> None:
        """Handshake-era servers send `notifications/tools/list_changed` on the session."""
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self._drop_tools()

    def _drop_tools(self) -> None:
        self._tools = None

    async def _close_current(self) -> None:
        task, stop = self._task, self._stop
        self._client = self._task = self._stop = None
        if task is not None and stop is not None:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        async with self._connect_lock:
            await self._close_current()

    # -- tools -----------------------------------------------------------------
    async def tools(self) -> list[ToolEntry]:
        """The server's tools after `allowed_tools` (cached; raises McpServerUnavailable)."""
        tools = self._tools
        if tools is not None and time.monotonic() - self._tools_at < self.cfg.tools_ttl_s:
            return tools
        async with self._list_lock:
            if self._tools is not None and time.monotonic() - self._tools_at < self.cfg.tools_ttl_s:
                return self._tools
            client = await self.client()
            try:
                async with asyncio.timeout(self.cfg.connect_timeout_s):
                    listed = await self._list_all(client)
            except Exception as exc:
                raise McpServerUnavailable(
                    f"MCP server '{self.cfg.name}' could not list its tools: {_failure(exc)}") from None
            allowed = self.cfg.allowed_tools
            self._tools = [
                ToolEntry(self.cfg.name, tool.name, tool.description or "", input_schema(tool.input_schema),
                          public_name(self.cfg.name, tool.name))
                for tool in listed if allowed is None or tool.name in allowed
            ]
            self._tools_at = time.monotonic()
            self._validators.clear()
            return self._tools

    @staticmethod
    async def _list_all(client: Any) -> list[Any]:
        tools: list[Any] = []
        cursor = None
        for _ in range(100):  # a paginator that never ends cannot hang the request
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    def _invalid_arguments(self, entry: ToolEntry, arguments: Any) -> str | None:
        """Arguments checked against the tool's input schema before the server sees them."""
        if not isinstance(arguments, dict):
            return "arguments must be a JSON object"
        validator = self._validators.get(entry.name)
        if validator is None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                validator = Draft202012Validator(entry.parameters)
                Draft202012Validator.check_schema(entry.parameters)
            except SchemaError:
                validator = False  # the server's schema is broken: let the server judge
            self._validators[entry.name] = validator
        if validator is False:
            return None
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        return "invalid arguments: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5])

    async def call(self, entry: ToolEntry, arguments: Any) -> ToolOutcome:
        started = time.perf_counter()
        is_error = True
        problem = self._invalid_arguments(entry, arguments)
        if problem is not None:
            text = problem
        else:
            try:
                async with self._slots:
                    client = await self.client()  # a (re)start is bounded by connect_timeout_s, not the call's
                    async with asyncio.timeout(self.cfg.timeout_s):
                        result = await client.call_tool(entry.name, arguments)
                text = result_text(result.content, result.structured_content)
                is_error = bool(result.is_error)
            except TimeoutError:
                text = f"tool '{entry.name}' timed out after {self.cfg.timeout_s:g} s"
            except McpServerUnavailable as exc:
                text = exc.message
            except Exception as exc:  # the server failed or went away: the model is told, the loop goes on
                text = f"tool '{entry.name}' failed: {_failure(exc)}"
        duration = round((time.perf_counter() - started) * 1000, 3)
        # The usage log of tool calls: who ran what, how long, whether it failed (never arguments or results).
        log.info("mcp tool call server=%s tool=%s duration_ms=%.1f is_error=%s", self.cfg.name, entry.name,
                 duration, is_error)
        return ToolOutcome(self.cfg.name, entry.name, arguments, truncate(text, self.cfg.max_result_bytes),
                           is_error, duration)


class McpManager:
    """Every configured server's connection, by name."""

    def __init__(self, servers: Mapping[str, McpServerConfig]) -> None:
        self.servers = {name: ServerConnection(cfg) for name, cfg in servers.items()}
        self.on_close: list[Callable[[], Awaitable[None]]] = []  # e.g. the `/mcp` endpoint's session manager

    async def catalog(self, names: Iterable[str], only: set[str] | None = None, *,
                      skip_unavailable: bool = False) -> Catalog:
        """The tools of these servers (listed in parallel), filtered by tool name.

        A server that cannot be reached raises McpServerUnavailable — or, with
        `skip_unavailable` (listings), is left out and named in `catalog.unavailable`.
        """
        names = list(names)
        listed = await asyncio.gather(*(self.servers[n].tools() for n in names), return_exceptions=True)
        catalog = Catalog()
        for name, found in zip(names, listed):
            if isinstance(found, McpServerUnavailable) and skip_unavailable:
                catalog.unavailable[name] = found.message
                continue
            if isinstance(found, BaseException):
                raise found
            for entry in found:
                if only is None or entry.name in only or entry.public in only:
                    catalog.entries.setdefault(entry.public, entry)
        return catalog

    async def call(self, entry: ToolEntry, arguments: Any) -> ToolOutcome:
        return await self.servers[entry.server].call(entry, arguments)

    async def aclose(self) -> None:
        closers = [closer() for closer in self.on_close]
        await asyncio.gather(*closers, *(s.aclose() for s in self.servers.values()), return_exceptions=True)


def manager_for(gateway: Any) -> McpManager:
    """The gateway's one manager, built on the first request that uses MCP."""
    if gateway.mcp is None:
        gateway.mcp = McpManager(gateway.config.mcp_servers)
    return gateway.mcp  # type: ignore[no-any-return]
