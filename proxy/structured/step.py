"""The `structured_output` step: ask for the schema, validate, repair, fall back, or a 502.

JSON answers: the request is rewritten for the method (native `response_format`
json_schema, one forced tool, or json_object plus the schema in a system
message) and sent down the pipeline. An invalid answer is sent back to the
same deployment with its validation errors, up to `max_repairs` times; still
invalid, the next model of `call.chain` is asked; none left, a 502
`structured_output_invalid`. All of this happens before the first byte, and the
usage of every round is summed. Invalid output never goes through the router's
failure path, so it does not count against a deployment's health.

A round that ends in calls of other tools (the client's, or MCP's — this step
runs inside MCP's loop) is passed through unvalidated: only the final answer
is checked. With `method: tool` and other tools present, `tool_choice` is
`required` (any tool) rather than ours by name, so those tools stay callable; once their results are in the
conversation ours is forced, so the loop ends in the answer.

Streams cannot be repaired (the first byte is out): see `streaming.py`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import InvalidRequest, ProxyError, StructuredOutputInvalid
from proxy.pipeline import ChatCall, Complete, OpenStream, add_usage
from proxy.routing import Link
from proxy.structured.format import ITEMS_KEY
from proxy.structured.spec import Spec, parse_spec
from proxy.structured.streaming import structured_stream
from proxy.structured.validate import check_answer, strip_fences

if TYPE_CHECKING:
    from proxy.app import Gateway
    from proxy.router import Served
    from proxy.streaming import Stream

JSON = dict[str, Any]
REPAIRS_HEADER = b"x-omni-structured-repairs"
JSON_MODE_INSTRUCTION = (
    "Answer with one JSON value and nothing else (no prose, no code fence). It must validate against this "
    "JSON Schema:\n"
)
REPAIR_TEXT = "Your answer does not match the required JSON Schema:\n{errors}\nAnswer again with only the corrected JSON."
REPAIR_TOOL = "The arguments do not match the tool's JSON Schema:\n{errors}\nCall `{name}` again with corrected arguments."


def build(gateway: Gateway, value: Any, body: JSON) -> StructuredStep | None:
    spec = parse_spec(value)
    if spec is None:
        return None
    if body.get("n") not in (None, 1):
        raise InvalidRequest("structured_output answers one choice: n must be 1", param="n")
    if spec.method == "tool" and any(_tool_name(t) == spec.name for t in body.get("tools") or []):
        raise InvalidRequest(
            f"structured_output.name {spec.name!r} is also the name of one of the request's tools",
            param="structured_output.name",
        )
    return StructuredStep(spec, gateway)


def to_structured_request(body: JSON, spec: Spec) -> JSON:
    """The request as sent for `spec.method` (a new dict; the client's body is left as it was)."""
    out = dict(body)
    if spec.method == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": spec.name, "schema": spec.schema, "strict": spec.strict and spec.closed},
        }
    elif spec.method == "json_mode":
        out["response_format"] = {"type": "json_object"}
        messages = list(body["messages"])
        at = next(
            (i for i, m in enumerate(messages) if m.get("role") not in ("system", "developer")), len(messages)
        )
        text = JSON_MODE_INSTRUCTION + orjson.dumps(spec.schema).decode()
        messages.insert(at, {"role": "system", "content": text})
        out["messages"] = messages
    else:
        out.pop("response_format", None)
        tool = {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": "Give the answer as this function's arguments.",
                "parameters": spec.schema,
                "strict": spec.strict and spec.closed,
            },
        }
        others = list(body.get("tools") or [])
        out["tools"] = [*others, tool]
        # With tools of their own the model may call one of those first (`required`: any tool); once their results
        # are in the conversation, ours is forced, so a tool loop (MCP's, a client's) ends in the answer.
        answered = bool(body["messages"]) and body["messages"][-1].get("role") == "tool"
        named = {"type": "function", "function": {"name": spec.name}}
        out["tool_choice"] = "required" if others and not answered else named
    return out


class StructuredStep:
    def __init__(self, spec: Spec, gateway: Gateway | None = None) -> None:
        self.spec = spec
        self.gateway = gateway

    async def complete(self, call: ChatCall, nxt: Complete) -> Served[JSON]:
        spec, chain = self.spec, call.chain
        body = to_structured_request(call.body, spec)
        usage: JSON | None = None
        attempts: list[str] = []
        failures: list[str] = []  # "model: errors" per model that answered invalidly
        spent: list[tuple[Served[JSON], JSON | None]] = []  # every round's usage, accounted if all fail
        repairs = 0
        start = 0
        while start < len(chain):
            try:
                served = await nxt(replace(call, body=body, chain=chain[start:]))
            except ProxyError as error:
                if not failures:
                    raise
                failures.append(f"later models failed: {error.message}")
                break
            at = _served_link(chain, start, served)
            pinned: list[Link] = [(chain[at][0], (served.deployment,))]
            messages = body["messages"]
            for round_ in range(spec.max_repairs + 1):
                usage = add_usage(usage, served.result.get("usage"))
                spent.append((served, served.result.get("usage")))
                attempts += served.attempts
                verdict = self._check(served.result)
                if verdict is None:  # a tool round (client or MCP tools): not the final answer
                    return self._decorated(call, served, usage, attempts, None)
                errors = verdict[1]
                if not errors:
                    self._finish(served.result, verdict[0], verdict[2])
                    return self._decorated(call, served, usage, attempts, repairs)
                if round_ == spec.max_repairs:
                    failures.append(f"{served.deployment.name}: " + "; ".join(errors))
                    break
                repairs += 1
                messages = [*messages, *self._repair_turns(served.result, errors)]
                try:
                    served = await nxt(replace(call, body={**body, "messages": messages}, chain=pinned))
                except ProxyError as error:
                    failures.append(
                        f"{served.deployment.name}: "
                        + "; ".join(errors)
                        + f" (repair failed: {error.message})"
                    )
                    break
            start = at + 1
        self._account_spent(spent)
        raise StructuredOutputInvalid(
            f"no model produced output valid against the structured_output schema (repairs: {repairs}): "
            + " | ".join(failures)
        )

    def _account_spent(self, spent: list[tuple[Served[JSON], JSON | None]]) -> None:
        """Tokens of answers that were all invalid are still spent: into the metrics, per model that spent them."""
        if self.gateway is None:
            return
        for served, usage in spent:
            if usage:
                deployment = served.deployment
                prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
                self.gateway.metrics.account(
                    deployment.name, served.provider.name, usage, deployment.cost(prompt, completion)
                )

    async def stream(self, call: ChatCall, nxt: OpenStream) -> Served[Stream]:
        served = await nxt(replace(call, body=to_structured_request(call.body, self.spec)))
        first, rest = served.result
        served.result = structured_stream(self.spec, first, rest)
        call.headers.append((REPAIRS_HEADER, b"0"))
        return served

    # -- one answer ---------------------------------------------------------------
    def _check(self, result: JSON) -> tuple[Any, list[str], str] | None:
        """(parsed, errors, answer text) of the answer; None for a round that called other tools."""
        choice = (result.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or []
        text = message.get("content")
        if self.spec.method == "tool":
            ours = [c for c in calls if (c.get("function") or {}).get("name") == self.spec.name]
            if ours:
                text = ours[0]["function"].get("arguments")
            elif calls:
                return None
        elif calls and choice.get("finish_reason") == "tool_calls":
            return None
        parsed, errors = check_answer(text, self.spec.validator, self.spec.wrapped)
        if errors and message.get("refusal"):
            errors = [f"$: the model refused: {message['refusal']}"]
        return parsed, errors, text or ""

    def _finish(self, result: JSON, parsed: Any, text: str) -> None:
        """`message.content` the JSON text (unwrapped for a top-level array), `message.parsed` the value."""
        choice = result["choices"][0]
        message = choice["message"]
        if self.spec.wrapped:
            parsed = parsed[ITEMS_KEY]
            text = orjson.dumps(parsed).decode()
        else:
            text = strip_fences(text)
        message["content"] = text
        message["parsed"] = parsed
        if self.spec.method == "tool":
            message.pop("tool_calls", None)
            choice["finish_reason"] = "stop"

    def _repair_turns(self, result: JSON, errors: list[str]) -> list[JSON]:
        """The bad answer and what is wrong with it, as a follow-up turn to the same deployment."""
        message = (result.get("choices") or [{}])[0].get("message") or {}
        listed = "\n".join(f"- {e}" for e in errors)
        ours = [
            c
            for c in message.get("tool_calls") or []
            if (c.get("function") or {}).get("name") == self.spec.name
        ]
        if self.spec.method == "tool" and ours:
            call = {
                "id": ours[0].get("id") or "call_structured",
                "type": "function",
                "function": ours[0]["function"],
            }
            return [
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "content": REPAIR_TOOL.format(errors=listed, name=self.spec.name),
                },
            ]
        answer = message.get("content") or ""
        return [
            {"role": "assistant", "content": answer if answer.strip() else "(no answer)"},
            {"role": "user", "content": REPAIR_TEXT.format(errors=listed)},
        ]

    def _decorated(
        self,
        call: ChatCall,
        served: Served[JSON],
        usage: JSON | None,
        attempts: list[str],
        repairs: int | None,
    ) -> Served[JSON]:
        if usage is not None:
            served.result["usage"] = usage
        served.attempts = attempts
        if repairs is not None:
            call.headers.append((REPAIRS_HEADER, str(repairs).encode()))
        return served


def _served_link(chain: list[Any], start: int, served: Served[Any]) -> int:
    """Which link of `chain[start:]` the router ended up serving from (it may have fallen through)."""
    for i in range(start, len(chain)):
        if chain[i][0] == served.deployment.name:
            return i
    return start


def _tool_name(tool: Any) -> str | None:
    return ((tool or {}).get("function") or {}).get("name") if isinstance(tool, dict) else None
