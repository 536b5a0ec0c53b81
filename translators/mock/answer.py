"""What the mock answers: a pure function of the request (same request, same answer).

`plan_mock_answer` decides, in this order:
1. the conversation ends with `tool` results -> text quoting them (JSON when a
   `response_format` asks for it, its strings carrying that quote);
2. `tools` with `tool_choice` naming one -> that call; `auto` (or absent) ->
   every tool the last user message names (by its full name, or the part
   after `SERVER__` for MCP tools); `required` -> those too, else the first
   tool; one call only with `parallel_tool_calls: false`; `none` -> no call;
3. a configured `response` (the model entry's or the provider's) -> that text,
   whatever the request asks for (a canned answer, also for testing how a
   client handles invalid JSON);
4. `response_format` `json_schema` -> a valid instance (translators.mock.schema);
   `json_object` -> an instance of a schema quoted in a system message (the
   structured-output `json_mode` method), else `{"answer": <last user message>}`;
5. else `You said: <last user message>`.
Then `stop` cuts the text, `max_tokens`/`max_completion_tokens` cut the visible
output (content words or tool-argument fragments; finish_reason `length`), and
`reasoning_effort` (not `none`) adds a short `reasoning_content`.

Tokens are counted offline and cheaply: a word (a run between single spaces)
is one token, in prompts and answers alike; a tool call's arguments are split
the same way, so its streamed fragments are its tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from proxy.errors import InvalidRequest
from translators.mock.schema import instance_of

JSON = dict[str, Any]


@dataclass(slots=True)
class MockToolCall:
    id: str
    name: str
    fragments: list[str]  # the arguments JSON text, split where the stream splits it

    @property
    def arguments(self) -> str:
        return "".join(self.fragments)


@dataclass(slots=True)
class MockAnswer:
    words: list[str]  # the content, split on single spaces (joined back with " ")
    finish: str
    usage: JSON
    tool_calls: list[MockToolCall] | tuple[()] = ()  # tuples: no allocation on the plain-text path
    reasoning: list[str] | tuple[()] = ()
    n: int = 1

    @property
    def content(self) -> str | None:
        return " ".join(self.words) if self.words or not self.tool_calls else None


def last_user_text(messages: list[JSON]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def count_prompt_tokens(messages: list[JSON]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict))
        for call in message.get("tool_calls") or ():
            total += len(str((call.get("function") or {}).get("arguments", "")).split()) + 1
    return max(total, 1)


# Request fields that can change the answer beyond the plain echo (the load-test path checks only these).
_SHAPING = frozenset({"tools", "response_format", "stop", "max_tokens", "max_completion_tokens",
                      "reasoning_effort", "n"})


def plan_mock_answer(request: JSON, fixed_response: str | None) -> MockAnswer:
    messages = request["messages"]
    if _SHAPING.isdisjoint(request) and messages[-1].get("role") != "tool":  # plain text: the hot path
        words = (fixed_response or f"You said: {last_user_text(messages)}").split(" ")
        prompt = count_prompt_tokens(messages)
        return MockAnswer(words, "stop", {"prompt_tokens": prompt, "completion_tokens": len(words),
                                          "total_tokens": prompt + len(words)})
    results = _trailing_tool_results(messages)
    text = _quote_tool_results(messages, results) if results else last_user_text(messages)
    calls = [] if results else _tool_calls(request, text, len(messages))
    words = []
    if not calls:
        # A configured `response` is the operator's canned answer: it wins over JSON too (so a
        # client's handling of invalid output can be tested against the mock).
        body = fixed_response or _json_answer(request, text)
        if body is None:
            body = text if results else f"You said: {text}"
        stop = request.get("stop")
        if stop:
            body = _cut_at_stop(body, stop)
        words = body.split(" ") if body else []
    finish = "tool_calls" if calls else "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(limit, int) and limit > 0:
        finish = _truncate(words, calls, limit) or finish
    reasoning = _reasoning(request.get("reasoning_effort"), text)
    completion = len(words) + sum(len(c.fragments) for c in calls) + len(reasoning)
    n = request.get("n")
    n = n if isinstance(n, int) and n > 1 else 1
    prompt = count_prompt_tokens(messages)
    usage: JSON = {"prompt_tokens": prompt, "completion_tokens": completion * n,
                   "total_tokens": prompt + completion * n}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": len(reasoning) * n}
    return MockAnswer(words, finish, usage, calls, reasoning, n)


def _trailing_tool_results(messages: list[JSON]) -> list[JSON]:
    results: list[JSON] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.append(message)
    return results[::-1]


def _quote_tool_results(messages: list[JSON], results: list[JSON]) -> str:
    names = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[call.get("id")] = (call.get("function") or {}).get("name")
    quotes = [f"{names.get(r.get('tool_call_id')) or 'the tool'} returned: {_text_of(r.get('content'))}"
              for r in results]
    return "Tool results: " + "; ".join(quotes)


def _tool_calls(request: JSON, text: str, turn: int) -> list[MockToolCall]:
    tools = [t["function"] for t in request.get("tools") or () if isinstance(t.get("function"), dict)]
    choice = request.get("tool_choice")
    if not tools or choice == "none":
        return []
    chosen: list[JSON]
    if isinstance(choice, dict):
        mode, allowed = _forced(choice, tools)
        if mode == "named":
            chosen = allowed
        else:
            chosen = _mentioned(allowed, text) or (allowed[:1] if mode == "required" else [])
    else:
        chosen = _mentioned(tools, text) or (tools[:1] if choice == "required" else [])
    if request.get("parallel_tool_calls") is False:
        chosen = chosen[:1]
    calls = []
    for index, tool in enumerate(chosen):
        arguments = json.dumps(instance_of(tool.get("parameters") or {"type": "object"}, text), ensure_ascii=False)
        seed = f"{turn}:{index}:{tool['name']}:{arguments}".encode()
        calls.append(MockToolCall(f"call_{hashlib.sha256(seed).hexdigest()[:24]}", tool["name"], _fragments(arguments)))
    return calls


def _forced(choice: JSON, tools: list[JSON]) -> tuple[str, list[JSON]]:
    """`{"type": "function", "function": {"name"}}` or `{"type": "allowed_tools", "allowed_tools": {mode, tools}}`."""
    if choice.get("type") == "allowed_tools":
        spec = choice.get("allowed_tools") or {}
        names = {(t.get("function") or {}).get("name") or t.get("name") for t in spec.get("tools") or ()}
        return str(spec.get("mode") or "auto"), [t for t in tools if t["name"] in names]
    name = (choice.get("function") or {}).get("name") or choice.get("name")
    named = [t for t in tools if t["name"] == name]
    if not named:
        raise InvalidRequest(f"tool_choice names '{name}', which is not one of the request's tools",
                             param="tool_choice")
    return "named", named


def _mentioned(tools: list[JSON], text: str) -> list[JSON]:
    lowered = text.lower()
    found = []
    for tool in tools:
        name = str(tool["name"])
        short = name.rsplit("__", 1)[-1]
        if any(re.search(rf"(?<![\w-]){re.escape(n.lower())}(?![\w-])", lowered) for n in {name, short} if n):
            found.append(tool)
    return found


def _json_answer(request: JSON, text: str) -> str | None:
    response_format = request.get("response_format")
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return json.dumps(instance_of(spec.get("schema") or {"type": "object"}, text), ensure_ascii=False)
    if kind == "json_object":
        schema = _schema_in_messages(request["messages"])
        value = instance_of(schema, text) if schema is not None else {"answer": text}
        return json.dumps(value, ensure_ascii=False)
    return None


def _schema_in_messages(messages: list[JSON]) -> JSON | None:
    """The first JSON Schema quoted in a system or developer message (how json_mode passes it)."""
    decoder = json.JSONDecoder()
    for message in messages:
        if message.get("role") not in ("system", "developer"):
            continue
        content = _text_of(message.get("content"))
        start = content.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(content, start)
            except ValueError:
                start = content.find("{", start + 1)
                continue
            if isinstance(value, dict) and ("properties" in value or "type" in value or "$defs" in value):
                return value
            start = content.find("{", start + 1)
    return None


def _cut_at_stop(text: str, stop: Any) -> str:
    if isinstance(stop, str):
        sequences = [stop]
    else:
        sequences = [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else []
    cut = len(text)
    for sequence in sequences:
        at = text.find(sequence) if sequence else -1
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def _truncate(words: list[str], calls: list[MockToolCall], limit: int) -> str | None:
    """Cut the visible output to `limit` tokens in place; 'length' when something was cut."""
    if len(words) > limit:
        del words[limit:]
        return "length"
    budget = limit
    for index, call in enumerate(calls):
        if len(call.fragments) > budget:
            del call.fragments[budget:]
            del calls[index + 1:]
            return "length"
        budget -= len(call.fragments)
    return None


def _reasoning(effort: Any, text: str) -> list[str]:
    if not isinstance(effort, str) or effort == "none":
        return []
    topic = text if len(text) <= 80 else text[:77] + "..."
    thought = f'The user wrote "{topic}". I will answer it directly and check the format asked for.'
    if effort == "high":
        thought += " Double-checking every requirement before answering."
    return thought.split(" ")


def _fragments(arguments: str) -> list[str]:
    """Split like the content stream: pieces at spaces that concatenate back to the text."""
    parts = arguments.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])]
