"""The `mcp` chat field: offer the servers' tools, run the tool loop (CONTRACT §11).

Each round is one `nxt` call — through the rest of the pipeline and the
router, so fallbacks apply per round. The MCP calls of one turn run in
parallel, each with its server's timeout; their results (errors included, as
`is_error` results) go back to the model as tool messages, and the model is
asked again, up to `max_iterations` rounds of execution. A forcing
`tool_choice` applies to the first round only (left on, it would force a tool
again on every follow-up and the loop could never end). A client tool call
ends the loop: the turn is returned with the client's calls only.

Streams are one assistant message: text deltas are relayed as they arrive
(rounds joined by a blank line, as the JSON answer joins them), MCP tool-call
deltas are held back and executed at the end of their round, each result
reported as it completes in a choice-less chunk carrying `tool_trace`, and
the next round continues the same stream. Usage is summed over the rounds
and reported once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import InvalidRequest
from proxy.mcp.manager import McpManager, ToolOutcome, manager_for
from proxy.mcp.tools import Catalog
from proxy.pipeline import ChatCall, Complete, OpenStream, add_usage
from translators.base import JSON

if TYPE_CHECKING:
    from proxy.router import Served
    from proxy.streaming import Item, Stream

_KEYS = {"servers", "tools", "auto_invoke", "max_iterations", "enabled"}
_MAX_ITERATIONS = 100
_ROUND_SEPARATOR = "\n\n"
# Message fields of an assistant turn that must be replayed with its tool calls (thinking signatures).
_REPLAYED = ("reasoning_content", "thinking_blocks")


def build(gateway: Any, value: Any, body: JSON) -> McpStep | None:
    if value is False or (isinstance(value, dict) and value.get("enabled") is False):
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise InvalidRequest("'mcp' must be an object", param="mcp")
    for key in value:
        if key not in _KEYS:
            raise InvalidRequest(f"unknown field 'mcp.{key}'", param=f"mcp.{key}")
    configured = gateway.config.mcp_servers
    servers = value.get("servers")
    if servers is None:
        servers = list(configured)
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise InvalidRequest("'mcp.servers' must be a list of server names", param="mcp.servers")
    unknown = [s for s in servers if s not in configured]
    if unknown:
        names = ", ".join(configured) or "none are configured"
        raise InvalidRequest(f"unknown MCP server '{unknown[0]}' (configured: {names})", param="mcp.servers")
    if not servers:
        raise InvalidRequest("no MCP server to use: 'mcp.servers' is empty or none are configured",
                             param="mcp.servers")
    tools = value.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
        raise InvalidRequest("'mcp.tools' must be a list of tool names", param="mcp.tools")
    auto_invoke = value.get("auto_invoke", True)
    if not isinstance(auto_invoke, bool):
        raise InvalidRequest("'mcp.auto_invoke' must be true or false", param="mcp.auto_invoke")
    iterations = value.get("max_iterations", 5)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations <= _MAX_ITERATIONS:
        raise InvalidRequest(f"'mcp.max_iterations' must be an integer from 1 to {_MAX_ITERATIONS}",
                             param="mcp.max_iterations")
    if (body.get("n") or 1) > 1:
        raise InvalidRequest("'mcp' runs one conversation: 'n' must be 1", param="n")
    return McpStep(manager_for(gateway), list(dict.fromkeys(servers)), set(tools) if tools is not None else None,
                   auto_invoke, iterations, getattr(gateway, "tracing", None))


class McpStep:
    def __init__(self, manager: McpManager, servers: list[str], tools: set[str] | None, auto_invoke: bool,
                 max_iterations: int, tracing: Any = None) -> None:
        self.manager = manager
        self.tracing = tracing  # proxy.otel.Tracing when traces are on: one span per tool call
        self.servers = servers
        self.tools = tools
        self.auto_invoke = auto_invoke
        self.max_iterations = max_iterations

    async def _offer(self, call: ChatCall) -> Catalog:
        """Discover the tools (502 `mcp_server_unavailable` if a server cannot be reached) and offer them."""
        catalog = await self.manager.catalog(self.servers, self.tools)
        offered = [*(call.body.get("tools") or []), *catalog.functions()]
        if offered:
            call.body = {**call.body, "tools": offered}
        return catalog

    # -- JSON ------------------------------------------------------------------
    async def complete(self, call: ChatCall, nxt: Complete) -> Served[JSON]:
        catalog = await self._offer(call)
        if not self.auto_invoke:
            return await nxt(call)
        messages = list(call.body["messages"])
        texts: list[str] = []
        trace: list[JSON] = []
        usage: JSON | None = None
        attempts: list[str] = []
        rounds = 0
        while True:
            served = await nxt(replace(call, body=_round_body(call.body, messages, rounds)))
            result = served.result
            usage = add_usage(usage, result.get("usage"))
            attempts += served.attempts
            choice = result["choices"][0]
            message = choice.setdefault("message", {"role": "assistant", "content": None})
            if message.get("content"):
                texts.append(message["content"])
            mine, theirs = _split_calls(message.get("tool_calls") or [], catalog)
            if not mine:
                break
            if rounds >= self.max_iterations:
                _end_turn(message, choice, theirs, "length")
                break
            outcomes = await asyncio.gather(*(self._run(catalog, c) for c in mine))
            trace += [o.trace() for o in outcomes]
            if theirs:
                _end_turn(message, choice, theirs, "tool_calls")
                break
            messages += _follow_up(message, mine, outcomes)
            rounds += 1
        message["content"] = _ROUND_SEPARATOR.join(texts) if texts else message.get("content")
        if usage:
            result["usage"] = usage
        served.attempts = attempts
        call.extra["tool_trace"] = trace
        return served

    async def _run(self, catalog: Catalog, tool_call: JSON) -> ToolOutcome:
        function = tool_call.get("function") or {}
        entry = catalog.entries[function.get("name")]
        raw = function.get("arguments") or "{}"
        try:
            arguments = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            return ToolOutcome(entry.server, entry.name, raw, "arguments are not valid JSON", True, 0.0)
        if self.tracing is None:
            return await self.manager.call(entry, arguments)
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": entry.public,
                      "gen_ai.tool.call.id": str(tool_call.get("id") or ""), "omni_llm.mcp.server": entry.server,
                      "omni_llm.mcp.tool": entry.name}
        with self.tracing.span(f"execute_tool {entry.public}", attributes) as span:
            outcome = await self.manager.call(entry, arguments)
            if outcome.is_error:
                span.set_attribute("error.type", "tool_error")
            return outcome

    # -- stream ----------------------------------------------------------------
    async def stream(self, call: ChatCall, nxt: OpenStream) -> Served[Stream]:
        catalog = await self._offer(call)
        if not self.auto_invoke:
            return await nxt(call)
        messages = list(call.body["messages"])
        served = await nxt(replace(call, body=_round_body(call.body, messages, 0)))
        first, rest = served.result
        opening = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        served.result = ([opening], self._rounds(call, nxt, catalog, messages, first, rest))
        return served

    async def _rounds(self, call: ChatCall, nxt: OpenStream, catalog: Catalog, messages: list[JSON],
                      first: list[JSON], rest: AsyncIterator[Item]) -> AsyncIterator[JSON]:
        usage: JSON | None = None
        rounds = 0
        wrote_text = False
        chunks = _flatten(first, rest)
        try:
            while True:
                turn = _StreamTurn(catalog, separate=wrote_text)
                async for chunk in chunks:
                    out = turn.feed(chunk)
                    if out is not None:
                        yield out
                await chunks.aclose()
                usage = add_usage(usage, turn.usage)
                wrote_text = wrote_text or turn.wrote_text
                if not turn.mine:
                    yield _finish(turn.finish or "stop")
                    break
                if rounds >= self.max_iterations:
                    yield _finish("tool_calls" if turn.theirs else "length")
                    break
                outcomes: list[ToolOutcome | None] = [None] * len(turn.mine)
                async for index, outcome in self._run_all(catalog, turn.mine):
                    outcomes[index] = outcome
                    yield {"choices": [], "tool_trace": [outcome.trace()]}
                if turn.theirs:
                    yield _finish("tool_calls")
                    break
                assistant = {"role": "assistant", "content": "".join(turn.texts) or None}
                messages += _follow_up(assistant, turn.mine, outcomes)  # type: ignore[arg-type]
                rounds += 1
                served = await nxt(replace(call, body=_round_body(call.body, messages, rounds)))
                chunks = _flatten(*served.result)
            if usage:
                yield {"choices": [], "usage": usage}
        finally:
            await chunks.aclose()

    async def _run_all(self, catalog: Catalog, calls: list[JSON]) -> AsyncIterator[tuple[int, ToolOutcome]]:
        """The calls of one turn in parallel, each yielded as it completes."""
        async def indexed(i: int, tool_call: JSON) -> tuple[int, ToolOutcome]:
            return i, await self._run(catalog, tool_call)

        tasks = [asyncio.ensure_future(indexed(i, c)) for i, c in enumerate(calls)]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                task.cancel()


class _StreamTurn:
    """One round of a stream: relays text and client tool calls, holds back the MCP ones."""

    def __init__(self, catalog: Catalog, separate: bool) -> None:
        self.catalog = catalog
        self.separate = separate  # the text of an earlier round was sent: start with the separator
        self.texts: list[str] = []
        self.calls: dict[int, JSON] = {}  # upstream index -> accumulated MCP call
        self.client_index: dict[int, int] = {}  # upstream index -> index as the client sees it
        self.kinds: dict[int, bool] = {}  # upstream index -> is an MCP call
        self.finish: str | None = None
        self.usage: JSON | None = None

    @property
    def wrote_text(self) -> bool:
        return bool(self.texts)

    @property
    def mine(self) -> list[JSON]:
        return [self.calls[i] for i in sorted(self.calls)]

    @property
    def theirs(self) -> bool:
        return bool(self.client_index)

    def feed(self, chunk: JSON) -> JSON | None:
        usage = chunk.pop("usage", None)
        if usage:
            self.usage = usage
        choices = chunk.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        delta = dict(choice.get("delta") or {})
        delta.pop("role", None)
        relayed = [c for c in (self._hold(c) for c in delta.pop("tool_calls", None) or []) if c is not None]
        if relayed:
            delta["tool_calls"] = relayed
        content = delta.pop("content", None)
        if content:
            self.texts.append(content)
            if self.separate:
                content, self.separate = _ROUND_SEPARATOR + content, False
            delta["content"] = content
        if not delta:
            return None
        return {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}

    def _hold(self, delta: JSON) -> JSON | None:
        """Accumulate an MCP call's delta (None), or re-index a client call's delta for the client."""
        index = delta.get("index", 0)
        function = delta.get("function") or {}
        if index not in self.kinds:
            self.kinds[index] = function.get("name") in self.catalog.entries
            if not self.kinds[index]:
                self.client_index[index] = len(self.client_index)
        if not self.kinds[index]:
            return {**delta, "index": self.client_index[index]}
        call = self.calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if delta.get("id"):
            call["id"] = delta["id"]
        if function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] += function.get("arguments") or ""
        return None


def _round_body(body: JSON, messages: list[JSON], rounds: int) -> JSON:
    out = {**body, "messages": list(messages)}
    if rounds and out.get("tool_choice") not in (None, "auto", "none"):
        out["tool_choice"] = "auto"  # forcing a tool again on the follow-up would never let the model answer
    return out


def _split_calls(calls: list[JSON], catalog: Catalog) -> tuple[list[JSON], list[JSON]]:
    mine = [c for c in calls if (c.get("function") or {}).get("name") in catalog.entries]
    return mine, [c for c in calls if c not in mine]


def _end_turn(message: JSON, choice: JSON, theirs: list[JSON], no_client_calls: str) -> None:
    if theirs:
        message["tool_calls"] = theirs
        choice["finish_reason"] = "tool_calls"
    else:
        message.pop("tool_calls", None)
        choice["finish_reason"] = no_client_calls


def _follow_up(message: JSON, calls: list[JSON], outcomes: list[ToolOutcome]) -> list[JSON]:
    """The assistant turn that asked for the calls, then one tool message per result."""
    turn: JSON = {"role": "assistant", "content": message.get("content") or None, "tool_calls": calls}
    turn.update({k: message[k] for k in _REPLAYED if message.get(k)})
    results = [{"role": "tool", "tool_call_id": c.get("id") or "",
                "content": f"Error: {o.result}" if o.is_error else (o.result or "(no output)")}
               for c, o in zip(calls, outcomes)]
    return [turn, *results]


def _finish(reason: str) -> JSON:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


async def _flatten(first: list[JSON], rest: AsyncIterator[Item]) -> AsyncIterator[JSON]:
    """One round's chunks one by one (translators may yield a read's chunks as a list)."""
    try:
        for chunk in first:
            yield chunk
        async for item in rest:
            if type(item) is list:
                for chunk in item:
                    yield chunk
            else:
                yield item  # type: ignore[misc]
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
