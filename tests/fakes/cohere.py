"""A fake Cohere v2 upstream (`POST /v2/chat`, `/v2/embed`, `/v2/rerank`) speaking the real wire format.

Streams are SSE with `event:` lines and JSON `data:` whose `type` the SDK
discriminates on (https://docs.cohere.com/reference/chat-stream); errors are
`{"id": ..., "message": ...}` bodies. Behaviour is chosen by the model id:

  any name         "echo: <last user text>" (stream: one word per content-delta)
  tools            a tool plan, then two tool calls (stream: argument fragments)
  think            a thinking block, then text
  length           finish_reason MAX_TOKENS
  fail-<status>    that HTTP status with a Cohere error body (429 adds retry-after: 0)
  midstream-error  two content deltas, then message-end with finish_reason ERROR
  drop             two content deltas, then the connection breaks
  garbage          200 with a body that is not JSON

Rerank (https://docs.cohere.com/reference/rerank) scores each document by the share
of the query's words it contains, times 0.9 (so a test can tell it from the mock),
and answers `{"id", "results": [{"index", "relevance_score"}], "meta"}` best first,
cut to `top_n`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import Recorded, Recorder

USAGE = {"billed_units": {"input_tokens": 5, "output_tokens": 2}, "tokens": {"input_tokens": 70, "output_tokens": 2},
         "cached_tokens": 1}
TOOL_PLAN = "I will look up the weather and the time."
TOOL_CALLS = [
    {"id": "get_weather_0abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "get_time_1def", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if p.get("type") == "text")
    return ""


def _error(status: int, message: str) -> Response:
    headers = {"retry-after": "0"} if status == 429 else None
    body = {"id": "err-1", "message": message}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _event(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _scenario(model: str) -> Response | None:
    if model.startswith("fail-"):
        status = int(model.split("-")[1])
        return _error(status, f"scripted failure {status}")
    if model == "garbage":
        return Response(b"<html>not json</html>", media_type="application/json")
    return None


def _message(model: str, body: dict[str, Any], scripted: str | None = None) -> tuple[dict[str, Any], str]:
    if scripted is not None:  # a text scripted in recorder.answers replaces the echo
        call = _forced_call(body, scripted)
        if call is not None:
            return {"role": "assistant", "tool_calls": [call]}, "TOOL_CALL"
        return {"role": "assistant", "content": [{"type": "text", "text": scripted}]}, "COMPLETE"
    if model == "tools":
        return {"role": "assistant", "tool_plan": TOOL_PLAN, "tool_calls": TOOL_CALLS}, "TOOL_CALL"
    content = [{"type": "text", "text": f"echo: {last_user_text(body['messages'])}"}]
    if model == "think":
        content.insert(0, {"type": "thinking", "thinking": "Let me think."})
    return {"role": "assistant", "content": content}, "MAX_TOKENS" if model == "length" else "COMPLETE"


def _forced_call(body: dict[str, Any], scripted: str) -> dict[str, Any] | None:
    """Cohere has no named tool_choice: REQUIRED with a single tool forces that one (its arguments: the script)."""
    tools = body.get("tools") or []
    if body.get("tool_choice") != "REQUIRED" or len(tools) != 1:
        return None
    return {"id": "forced_0abc", "type": "function",
            "function": {"name": tools[0]["function"]["name"], "arguments": scripted}}


async def _stream(model: str, body: dict[str, Any], recorder: Recorder, scripted: str | None = None) -> AsyncIterator[bytes]:
    try:
        yield _event({"type": "message-start", "id": "c1", "delta": {"message": {
            "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}})
        finish = "COMPLETE"
        forced = _forced_call(body, scripted) if scripted is not None else None
        if model == "tools" or forced:
            for part in (TOOL_PLAN[:10], TOOL_PLAN[10:]):
                yield _event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": part}}})
            for i, call in enumerate([forced] if forced else TOOL_CALLS):
                start = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
                yield _event({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": start}}})
                args = call["function"]["arguments"]
                for part in (args[: len(args) // 2], args[len(args) // 2:]):
                    yield _event({"type": "tool-call-delta", "index": i,
                                  "delta": {"message": {"tool_calls": {"function": {"arguments": part}}}}})
                yield _event({"type": "tool-call-end", "index": i})
            finish = "TOOL_CALL"
        else:
            if model == "think":
                yield _event({"type": "content-start", "index": 0,
                              "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}})
                yield _event({"type": "content-delta", "index": 0,
                              "delta": {"message": {"content": {"thinking": "Let me think."}}}})
                yield _event({"type": "content-end", "index": 0})
            yield _event({"type": "content-start", "index": 1,
                          "delta": {"message": {"content": {"type": "text", "text": ""}}}})
            text = scripted if scripted is not None else f"echo: {last_user_text(body['messages'])}"
            words = text.split(" ")
            for i, word in enumerate(words):
                text = word if i == 0 else " " + word
                yield _event({"type": "content-delta", "index": 1, "delta": {"message": {"content": {"text": text}}}})
                if i == 1 and model == "drop":
                    raise ConnectionResetError("scripted drop")
                if i == 1 and model == "midstream-error":
                    yield _event({"type": "message-end", "delta": {"finish_reason": "ERROR",
                                                                   "error": "scripted mid-stream failure"}})
                    return
            yield _event({"type": "content-end", "index": 1})
            finish = "MAX_TOKENS" if model == "length" else "COMPLETE"
        yield _event({"type": "message-end", "delta": {"finish_reason": finish, "usage": USAGE}})
    finally:
        recorder.closed_streams += 1


def make_app(recorder: Recorder) -> Starlette:
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        model = body.get("model", "")
        early = _scenario(model)
        if early is not None:
            return early
        if body.get("stream"):
            return StreamingResponse(_stream(model, body, recorder, recorder.next_answer()),
                                     media_type="text/event-stream")
        message, finish = _message(model, body, recorder.next_answer())
        return Response(orjson.dumps({"id": "c1", "finish_reason": finish, "message": message, "usage": USAGE}),
                        media_type="application/json")

    async def embed(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        early = _scenario(body.get("model", ""))
        if early is not None:
            return early
        size = body.get("output_dimension") or 3
        vectors = [([0.5 + i, -0.25, 0.125] * size)[:size] for i, _ in enumerate(body["texts"])]
        return Response(orjson.dumps({
            "id": "e1", "response_type": "embeddings_by_type", "texts": body["texts"],
            "embeddings": {"float": vectors},
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 3}},
        }), media_type="application/json")

    async def rerank(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        early = _scenario(body.get("model", ""))
        if early is not None:
            return early
        results = rerank_scores(body["query"], body["documents"])[: body.get("top_n") or len(body["documents"])]
        return Response(orjson.dumps({
            "id": "rr-1", "results": results,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        }), media_type="application/json")

    return Starlette(routes=[
        Route("/v2/chat", chat, methods=["POST"]),
        Route("/v2/embed", embed, methods=["POST"]),
        Route("/v2/rerank", rerank, methods=["POST"]),
    ])


def rerank_scores(query: str, documents: list[str]) -> list[dict[str, Any]]:
    """Best first: 0.9 x the share of the query's words a document contains (ties: original order)."""
    wanted = set(re.findall(r"\w+", query.lower()))
    scored = [{"index": i, "relevance_score": round(0.9 * len(wanted & set(re.findall(r"\w+", d.lower())))
                                                    / max(1, len(wanted)), 6)} for i, d in enumerate(documents)]
    return sorted(scored, key=lambda r: (-r["relevance_score"], r["index"]))
