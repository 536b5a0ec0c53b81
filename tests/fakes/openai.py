"""A fake OpenAI Chat Completions / Embeddings upstream speaking the real wire format.

Behaviour is chosen by the requested model id, so end-to-end tests can script
it through the gateway's config:

  any name         echo "echo: <last user text>" (stream: one word per chunk)
  tools            two parallel tool calls (stream: OpenAI-style argument fragments)
  fail-<status>    that HTTP status with an OpenAI error body (429 adds retry-after: 0)
  leak-401         401 whose message echoes the Authorization header it received
  flaky-<n>        500 for the first n calls (per fake), then echo
  midstream-error  two chunks, then an in-band `data: {"error": ...}` frame
  drop             two chunks, then the connection breaks
  endless          streams one chunk every 50 ms for a long time (client-disconnect tests)
  slow-<ms>        waits before answering
  garbage          200 with a body that is not JSON
  scripted         the recorder's next scripted turn (text and/or tool calls; {"status": N} fails it)

A text scripted in `recorder.answers` replaces the echo (or, with a `tool_choice`
naming a function, is that call's arguments).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import Recorded, Recorder


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if p.get("type") == "text")
    return ""


def _error(status: int, message: str, etype: str = "server_error", headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": etype, "param": None, "code": None}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


TOOL_CALLS = [
    {"id": "call_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call_time_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
]


def _calls(turn: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": orjson.dumps(c.get("arguments", {})).decode()}}
            for c in turn.get("tool_calls") or []]


def make_app(recorder: Recorder) -> Starlette:
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        model = body.get("model", "")
        early = await _scenario(model, request)
        if early is not None:
            return early
        usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                 "prompt_tokens_details": {"cached_tokens": 2}}
        scripted = recorder.next_answer()
        forced = ((body.get("tool_choice") or {}).get("function") or {}).get("name") \
            if isinstance(body.get("tool_choice"), dict) else None
        if scripted is not None and forced:
            model_calls = [{"id": "call_forced_1", "type": "function",
                            "function": {"name": forced, "arguments": scripted}}]
        else:
            model_calls = TOOL_CALLS if model == "tools" else []
        preface = None  # text before the tool calls of a scripted turn
        if model == "scripted":
            turn = recorder.next_turn()
            if turn.get("status"):  # a scripted failure of this turn
                return _error(turn["status"], f"scripted failure {turn['status']}")
            preface, model_calls = turn.get("text"), _calls(turn)
            scripted = preface or ""
        if not body.get("stream"):
            if model_calls:
                message: dict[str, Any] = {"role": "assistant", "content": preface, "tool_calls": model_calls}
                finish = "tool_calls"
            else:
                text = scripted if scripted is not None else f"echo: {_last_user_text(body['messages'])}"
                message = {"role": "assistant", "content": text, "refusal": None}
                finish = "stop"
            return Response(orjson.dumps({
                "id": "chatcmpl-fake1", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage, "system_fingerprint": "fp_fake",
            }), media_type="application/json")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_stream(model, body, include_usage, usage, recorder, scripted, model_calls, preface),
                                 media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        early = await _scenario(body.get("model", ""), request)
        if early is not None:
            return early
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i, _ in enumerate(inputs):
            vector = [0.5 + i, -0.25, 0.125]
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack("<3f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        return Response(orjson.dumps({"object": "list", "data": data, "model": body["model"],
                                      "usage": {"prompt_tokens": 3, "total_tokens": 3}}), media_type="application/json")

    async def _scenario(model: str, request: Request) -> Response | None:
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        if model == "leak-401":
            return _error(401, f"Incorrect API key provided: {request.headers.get('authorization', '')}",
                          "invalid_request_error")
        if model.startswith("fail-"):
            status = int(model.split("-")[1])
            headers = {"retry-after": "0"} if status == 429 else None
            return _error(status, f"scripted failure {status}", "rate_limit_error" if status == 429 else "server_error",
                          headers)
        if model.startswith("flaky-"):
            if recorder.bump(model) <= int(model.split("-")[1]):
                return _error(500, "flaky upstream")
        if model == "garbage":
            return Response(b"<html>not json</html>", media_type="application/json")
        return None

    async def _stream(model: str, body: dict[str, Any], include_usage: bool, usage: dict[str, Any],
                      rec: Recorder, scripted: str | None, model_calls: list[dict[str, Any]],
                      preface: str | None = None) -> AsyncIterator[bytes]:
        base = {"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1700000000, "model": model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            out = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if include_usage:
                out["usage"] = None
            return _sse(out)

        try:
            yield chunk({"role": "assistant", "content": ""})
            if model_calls:
                for i, word in enumerate(preface.split(" ") if preface else []):
                    yield chunk({"content": word if i == 0 else " " + word})
                for i, call in enumerate(model_calls):
                    yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                 "function": {"name": call["function"]["name"], "arguments": ""}}]})
                    args = call["function"]["arguments"]
                    for part in (args[: len(args) // 2], args[len(args) // 2:]):
                        yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
                finish = "tool_calls"
            elif model == "endless":
                for i in range(2000):
                    yield chunk({"content": f"tick{i} "})
                    await asyncio.sleep(0.05)
                finish = "stop"
            else:
                text = scripted if scripted is not None else f"echo: {_last_user_text(body['messages'])}"
                words = text.split(" ")
                for i, word in enumerate(words):
                    yield chunk({"content": word if i == 0 else " " + word})
                    if model in ("midstream-error", "drop") and i == 1:
                        if model == "drop":
                            raise ConnectionResetError("scripted drop")
                        yield _sse({"error": {"message": "scripted mid-stream failure", "type": "server_error"}})
                        return
                finish = "stop"
            yield chunk({}, finish)
            if include_usage:
                yield _sse({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
        finally:
            rec.closed_streams += 1

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ])
