"""A fake Groq upstream: OpenAI wire format under `/openai/v1`, usage in `x_groq`.

Streams are data-only SSE ending with `data: [DONE]`; the first chunk carries
`x_groq.id`, the last one `x_groq.usage` (Groq's timing fields included), and
streamed tool calls arrive whole, all in one delta, as Groq sends them.
Behaviour is chosen by the requested model id:

  any name         echo "echo: <last user text>" (stream: one word per chunk); reasoning models add `reasoning`
  tools            two parallel tool calls
  fail-<status>    that HTTP status with a Groq error body (429 adds retry-after: 0)
  stream-error     two chunks, then a chunk whose `x_groq.error` says the stream stopped
  embed-*          (embeddings) float vectors
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import Recorded, Recorder

TOOL_CALLS = [
    {"id": "call_gq01", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
    {"id": "call_gq02", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}},
]
USAGE = {"queue_time": 0.01, "prompt_tokens": 11, "prompt_time": 0.002, "completion_tokens": 4,
         "completion_time": 0.003, "total_tokens": 15, "total_time": 0.005}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if p.get("type") == "text")
    return ""


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _error(status: int) -> Response:
    etype = "rate_limit_exceeded" if status == 429 else "invalid_request_error" if status < 500 else "internal_server_error"
    body = {"error": {"message": f"scripted failure {status}", "type": etype, "code": etype}}
    headers = {"retry-after": "0"} if status == 429 else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def make_app(recorder: Recorder) -> Starlette:
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        model = body["model"]
        if model.startswith("fail-"):
            return _error(int(model.split("-")[1]))
        scripted = recorder.next_answer()  # a text scripted in recorder.answers replaces the echo
        text = scripted if scripted is not None else f"echo: {_last_user_text(body['messages'])}"
        forced = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else None
        if scripted is not None and forced:  # a named tool_choice: the scripted text is the call's arguments
            model = "tools"
            calls = [{"id": "call_gqforced", "type": "function",
                      "function": {"name": forced["function"]["name"], "arguments": scripted}}]
        else:
            calls = TOOL_CALLS
        if body.get("stream"):
            return StreamingResponse(_stream(model, text, calls), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if model == "tools":
            message, finish = {"role": "assistant", "tool_calls": calls}, "tool_calls"
        elif "reason" in model:
            message["reasoning"] = "thinking it over"
        return Response(orjson.dumps({
            "id": "chatcmpl-gq1", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": USAGE, "system_fingerprint": "fp_gq", "x_groq": {"id": "req_gq1"},
        }), media_type="application/json")

    async def _stream(model: str, text: str, tool_calls: list[dict[str, Any]]) -> AsyncIterator[bytes]:
        base = {"id": "chatcmpl-gq1", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                "system_fingerprint": "fp_gq"}

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                         **extra})

        yield chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_gq1"})
        if model == "tools":
            calls = [{"index": i, **call} for i, call in enumerate(tool_calls)]
            yield chunk({"tool_calls": calls})
            finish = "tool_calls"
        else:
            if "reason" in model:
                yield chunk({"reasoning": "thinking it over"})
            for i, word in enumerate(text.split(" ")):
                yield chunk({"content": word if i == 0 else " " + word})
                if model == "stream-error" and i == 1:
                    yield chunk({}, "stop", x_groq={"id": "req_gq1", "error": "scripted stop"})
                    yield b"data: [DONE]\n\n"
                    return
            finish = "stop"
        yield chunk({}, finish, x_groq={"id": "req_gq1", "usage": USAGE})
        yield b"data: [DONE]\n\n"

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        if body["model"].startswith("fail-"):
            return _error(int(body["model"].split("-")[1]))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.25 + i, -0.5]} for i in range(len(inputs))]
        return Response(orjson.dumps({"object": "list", "data": data, "model": body["model"],
                                      "usage": {"prompt_tokens": 2, "total_tokens": 2}}), media_type="application/json")

    return Starlette(routes=[
        Route("/openai/v1/chat/completions", chat, methods=["POST"]),
        Route("/openai/v1/embeddings", embeddings, methods=["POST"]),
    ])
