"""A fake Anthropic Messages upstream speaking the real wire format (https://docs.anthropic.com/en/api/messages-streaming).

JSON bodies; streams are SSE with an `event:` line per event (the SDK ignores
data-only events), a `ping`, usage split between `message_start` and
`message_delta`, and `event: error` frames. Accepts the key as
`Authorization: Bearer` (what SDK 2.x sends) or `x-api-key`. It rejects, like
the real API, bodies that break its rules (unknown top-level keys, roles that
do not alternate, empty text blocks, orphan tool results, a thinking budget
not below max_tokens), so translator bugs surface as 400s.

Behaviour is chosen by the requested model id:

  any name         "echo: <last user text>" (stream: one word per delta)
  tools            text, then two tool_use blocks (stream: their input deltas interleave)
  thinking         signed thinking + redacted_thinking + text + one tool_use
  refusal / max    stop_reason refusal / max_tokens
  fail-<status>    that HTTP status with an Anthropic error body (429 adds retry-after: 7)
  midstream-error  a text delta, then `event: error` overloaded_error
  truncated        two text deltas, then the stream ends without message_stop
  garbage          200 with a body that is not JSON
  slow-<ms>        waits before answering
  scripted         the recorder's next scripted turn (text and/or tool_use blocks)

`POST /v1/messages/count_tokens` answers `{"input_tokens": 40 + number of messages}`.

A text scripted in `recorder.answers` (tests/fakes/server.py) replaces the echo (with a
`tool_choice` naming a tool, it is that tool_use's input).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import Recorded, Recorder

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
TOP_LEVEL_KEYS = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
                  "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config",
                  "service_tier", "container", "cache_control"}
COUNT_KEYS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"}
USAGE = {"input_tokens": 10, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 5}
TOOL_USES = [{"type": "tool_use", "id": "toolu_weather_1", "name": "get_weather", "input": {"city": "Paris"}},
             {"type": "tool_use", "id": "toolu_time_2", "name": "get_time", "input": {"tz": "CET"}}]
THINKING = [{"type": "thinking", "thinking": "Let me think.", "signature": "sig-1=="},
            {"type": "redacted_thinking", "data": "REDACTED=="}]


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
                         "request_id": "req_fake"})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json",
                    headers=headers)


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m["role"] == "user":
            c = m["content"]
            return c if isinstance(c, str) else " ".join(b["text"] for b in c if b["type"] == "text")
    return ""


def validate(body: dict[str, Any]) -> str | None:
    """The first rule of the real API this body breaks, or None."""
    extra = sorted(set(body) - TOP_LEVEL_KEYS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    if not 0 <= body.get("temperature", 0) <= 1:
        return "temperature: Input should be less than or equal to 1"
    budget = (body.get("thinking") or {}).get("budget_tokens")
    if budget is not None and not 1024 <= budget < body["max_tokens"]:
        return "thinking.budget_tokens: must be >= 1024 and less than max_tokens"
    previous_tool_ids: set[str] = set()
    for i, message in enumerate(body.get("messages") or []):
        if i and message["role"] == body["messages"][i - 1]["role"]:
            return "messages: roles must alternate between \"user\" and \"assistant\""
        blocks = message["content"] if isinstance(message["content"], list) else [{"type": "text", "text": "x"}]
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                return f"messages.{i}: text content blocks must be non-empty"
            if block["type"] == "tool_use" and not re.fullmatch(r"[a-zA-Z0-9_-]+", block["id"]):
                return f"messages.{i}: tool_use.id: String should match pattern"
            if block["type"] == "tool_result" and block["tool_use_id"] not in previous_tool_ids:
                return f"messages.{i}: unexpected tool_use_id found in tool_result blocks"
        previous_tool_ids = {b["id"] for b in blocks if b["type"] == "tool_use"}
    return None


def plan(model: str, body: dict[str, Any], scripted: str | None = None) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """(content blocks, stop_reason, usage) of the scripted answer."""
    usage: dict[str, Any] = {**USAGE, "output_tokens": 7}
    if scripted is not None:
        forced = body.get("tool_choice") or {}
        if forced.get("type") == "tool":
            use = {"type": "tool_use", "id": "toolu_forced_1", "name": forced["name"], "input": orjson.loads(scripted)}
            return [use], "tool_use", usage
        return [{"type": "text", "text": scripted}], "end_turn", usage
    if model == "tools":
        return [{"type": "text", "text": "Let me check."}, *TOOL_USES], "tool_use", usage
    if model == "thinking":
        usage["output_tokens_details"] = {"thinking_tokens": 4}
        return [*THINKING, {"type": "text", "text": "Checking."}, TOOL_USES[0]], "tool_use", usage
    stop = {"refusal": "refusal", "max": "max_tokens"}.get(model, "end_turn")
    return [{"type": "text", "text": f"echo: {last_user_text(body['messages'])}"}], stop, usage


def scripted(turn: dict[str, Any]) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": turn["text"]}] if turn.get("text") else []
    blocks += [{"type": "tool_use", "id": c["id"], "name": c["name"], "input": c.get("arguments", {})}
               for c in turn.get("tool_calls") or []]
    return blocks, "tool_use" if turn.get("tool_calls") else "end_turn", {**USAGE, "output_tokens": 7}


def make_app(recorder: Recorder) -> Starlette:
    async def messages(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        model = body.get("model", "")
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        if not (request.headers.get("x-api-key") or request.headers.get("authorization", "").startswith("Bearer ")):
            return _error(401, "x-api-key header is required")
        if model.startswith("fail-"):
            status = int(model.split("-")[1])
            return _error(status, f"scripted failure {status}", {"retry-after": "7"} if status == 429 else None)
        problem = validate(body)
        if problem:
            return _error(400, problem)
        if model == "garbage":
            return Response(b"<html>not json</html>", media_type="application/json")
        blocks, stop, usage = scripted(recorder.next_turn()) if model == "scripted" else \
            plan(model, body, recorder.next_answer())
        if body.get("stream"):
            return StreamingResponse(stream(model, blocks, stop, usage), media_type="text/event-stream")
        return Response(orjson.dumps({
            "id": "msg_fake1", "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop, "stop_sequence": None, "usage": usage,
        }), media_type="application/json")

    async def count_tokens(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        extra = sorted(set(body) - COUNT_KEYS)
        if extra:
            return _error(400, f"{extra[0]}: Extra inputs are not permitted")
        return Response(orjson.dumps({"input_tokens": 40 + len(body.get("messages") or [])}),
                        media_type="application/json")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]),
                             Route("/v1/messages/count_tokens", count_tokens, methods=["POST"])])


async def stream(model: str, blocks: list[dict[str, Any]], stop: str,
                 usage: dict[str, Any]) -> AsyncIterator[bytes]:
    yield _event("message_start", {"message": {
        "id": "msg_fake1", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**USAGE, "output_tokens": 1}}})
    yield _event("ping", {})
    tool_halves: list[list[bytes]] = []
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            yield _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            for i, word in enumerate(block["text"].split(" ")):
                text = word if i == 0 else " " + word
                yield _event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}})
                if model == "midstream-error" and i == 1:
                    yield _event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                    return
                if model == "truncated" and i == 1:
                    return  # the body ends cleanly, but the message never does
            yield _event("content_block_stop", {"index": index})
        elif block["type"] == "thinking":
            yield _event("content_block_start", {"index": index, "content_block": {
                "type": "thinking", "thinking": "", "signature": ""}})
            yield _event("content_block_delta", {"index": index, "delta": {
                "type": "thinking_delta", "thinking": block["thinking"]}})
            yield _event("content_block_delta", {"index": index, "delta": {
                "type": "signature_delta", "signature": block["signature"]}})
            yield _event("content_block_stop", {"index": index})
        elif block["type"] == "redacted_thinking":
            yield _event("content_block_start", {"index": index, "content_block": block})
            yield _event("content_block_stop", {"index": index})
        else:  # tool_use: all blocks opened first, their input deltas interleaved, then closed
            yield _event("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
            args = orjson.dumps(block["input"]).decode()
            tool_halves.append([_event("content_block_delta", {"index": index, "delta": {
                "type": "input_json_delta", "partial_json": part}}) for part in (args[: len(args) // 2],
                                                                                   args[len(args) // 2:])])
    for half in (0, 1):  # first halves of every call, then second halves
        for halves in tool_halves:
            yield halves[half]
    for index, block in enumerate(blocks):
        if block["type"] == "tool_use":
            yield _event("content_block_stop", {"index": index})
    yield _event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"output_tokens": usage["output_tokens"]}})
    yield _event("message_stop", {})
