"""A fake Mistral upstream (`/v1/chat/completions`, `/v1/embeddings`) in Mistral's wire format.

Like the real API it rejects tool-call ids that are not 9 alphanumerics (400),
sends each streamed tool call whole in one delta, puts usage on the last
stream chunk (which also carries the finish_reason), and answers embeddings
with an `id` (the SDK fails without one). Behaviour is chosen by model id:

  any name         echo "echo: <last user text>" (stream: one word per chunk)
  tools            two parallel tool calls with Mistral-made ids (stream: one chunk per call)
  replay           one tool call reusing the id of the first tool message in the request
  think            a reasoning answer: a `thinking` chunk, then text
  slow-<ms>        waits before answering
  fail-<status>    that status with Mistral's error body (422: FastAPI `detail`; 429: retry-after 0)
  midstream-error  two chunks, then an in-band error object
  no-id            (embeddings) a response without `id`
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

TOOL_CALLS = [
    {"id": "Wx1Ab2Cd3", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}, "index": 0},
    {"id": "Tm4Ef5Gh6", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}, "index": 1},
]
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
_VALID_ID = re.compile(r"[A-Za-z0-9]{9}")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if p.get("type") == "text")
    return ""


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def _error(status: int) -> Response:
    if status == 422:
        return _json({"detail": [{"loc": ["body", "messages"], "msg": "scripted validation failure",
                                  "type": "value_error"}]}, 422)
    if status == 429:
        return _json({"message": "Requests rate limit exceeded", "request_id": "r1"}, 429, {"retry-after": "0"})
    return _json({"object": "error", "message": f"scripted failure {status}", "type": "invalid_request_error",
                  "param": None, "code": None}, status)


def _bad_tool_id(messages: list[dict[str, Any]]) -> str | None:
    for m in messages:
        ids = [c.get("id", "") for c in m.get("tool_calls") or []] + ([m["tool_call_id"]] if "tool_call_id" in m else [])
        for call_id in ids:
            if not _VALID_ID.fullmatch(call_id):
                return call_id
    return None


def _answer(model: str, body: dict[str, Any], scripted: str | None = None) -> tuple[Any, list[dict[str, Any]], str]:
    """(content, tool calls, finish_reason) for a scripted model; a scripted text replaces the echo."""
    if scripted is not None:
        forced = body.get("tool_choice")
        if isinstance(forced, dict):  # with a named tool_choice the scripted text is the call's arguments
            return "", [{"id": "Fc0Rc3d01", "function": {"name": forced["function"]["name"], "arguments": scripted},
                         "index": 0}], "tool_calls"
        return scripted, [], "stop"
    if model == "tools":
        return "", TOOL_CALLS, "tool_calls"
    if model == "replay":
        first = next(m["tool_call_id"] for m in body["messages"] if m["role"] == "tool")
        return "", [{"id": first, "function": {"name": "again", "arguments": "{}"}, "index": 0}], "tool_calls"
    text = f"echo: {_last_user_text(body['messages'])}"
    if model == "think":
        return [{"type": "thinking", "thinking": [{"type": "text", "text": "pondering"}]},
                {"type": "text", "text": text}], [], "stop"
    return text, [], "stop"


def make_app(recorder: Recorder) -> Starlette:
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        model = body["model"]
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        if model.startswith("fail-"):
            return _error(int(model.split("-")[1]))
        bad = _bad_tool_id(body["messages"])
        if bad is not None:
            return _json({"object": "error", "message": f"Tool call id was {bad} but must be a-z, A-Z, 0-9, with a "
                          "length of 9.", "type": "invalid_request_message", "param": None, "code": "3280"}, 400)
        content, calls, finish = _answer(model, body, recorder.next_answer())
        if body.get("stream"):
            return StreamingResponse(_stream(model, content, calls, finish), media_type="text/event-stream")
        message = {"role": "assistant", "content": content, "tool_calls": calls or None, "prefix": False}
        return _json({"id": "cmpl-mi1", "object": "chat.completion", "created": 1700000000, "model": model,
                      "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": USAGE})

    async def _stream(model: str, content: Any, calls: list[dict[str, Any]], finish: str) -> AsyncIterator[bytes]:
        base = {"id": "cmpl-mi1", "object": "chat.completion.chunk", "created": 1700000000, "model": model}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, usage: Any = None) -> bytes:
            out: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if usage:
                out["usage"] = usage
            return b"data: " + orjson.dumps(out) + b"\n\n"

        yield chunk({"role": "assistant", "content": ""})
        if calls:
            for i, call in enumerate(calls):
                last = i == len(calls) - 1
                yield chunk({"tool_calls": [call]}, finish if last else None, USAGE if last else None)
        else:
            if isinstance(content, list):
                yield chunk({"content": content[:1]})
                content = content[1]["text"]
            for i, word in enumerate(content.split(" ")):
                yield chunk({"content": word if i == 0 else " " + word})
                if model == "midstream-error" and i == 1:
                    yield b'data: {"object":"error","message":"scripted mid-stream failure","type":"internal"}\n\n'
                    return
            yield chunk({"content": ""}, finish, USAGE)
        yield b"data: [DONE]\n\n"

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        model = body["model"]
        if model.startswith("fail-"):
            return _error(int(model.split("-")[1]))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        size = body.get("output_dimension") or 3
        data = [{"object": "embedding", "index": i, "embedding": [0.5 + i] + [0.125] * (size - 1)}
                for i in range(len(inputs))]
        result = {"id": "emb-mi1", "object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": 4, "total_tokens": 4, "completion_tokens": 0}}
        if model == "no-id":
            del result["id"]
        return _json(result)

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ])
