"""A fake Gemini API / Vertex AI upstream speaking the REST wire format google-genai uses.

Paths: Gemini API `/v1/models/{m}:{method}`, Vertex project mode
`/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{m}:{method}`,
Vertex express `/v1beta1/publishers/google/models/{m}:{method}`; methods
generateContent, streamGenerateContent (`?alt=sse`: data-only events, no
terminator), batchEmbedContents, embedContent, predict. Also an OAuth token
endpoint (`POST /token`, for authorized-user credential files whose
`token_uri` points here) and `GET /images/dot.png`.

Behaviour is chosen by the model id:

  any name         echo "echo: <last user text>" (stream: one word per chunk);
                   after function responses: "results: <name>=<response json>; …"
  tools            a text part then two parallel function calls, the first with a thoughtSignature
                   (stream: text, then one call per chunk)
  thinker          a thought part then text; thoughtsTokenCount reported
  safety / length  finishReason SAFETY / MAX_TOKENS
  blocked          no candidates, promptFeedback.blockReason SAFETY
  odd-finish       finishReason MALFORMED_FUNCTION_CALL
  fail-<status>    that status with Google's error body (429 adds retry-after: 0)
  leak-401         401 whose message echoes the x-goog-api-key it received
  midstream-error  two chunks, then `data: {"error": {...}}`
  slow-<ms>        waits before answering
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qsl
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import Recorded, Recorder

PATH = re.compile(
    r"^/(?P<version>v1|v1beta|v1beta1)/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?"
    r"(?:publishers/google/)?models/(?P<model>[^:/]+):(?P<method>\w+)$"
)
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
SIGNATURE = "c2lnbmF0dXJlLW9mLWEtdGhvdWdodC+/Pz8="  # standard base64 with '+' and '/'
TOKEN = "ya29.from-token-endpoint"
# A 1x1 PNG.
DOT_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
USAGE = {"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12, "cachedContentTokenCount": 2}


def google_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _last_turn(body: dict[str, Any]) -> str:
    contents = body.get("contents") or []
    parts = contents[-1].get("parts", []) if contents else []
    responses = [p.get("functionResponse") or p.get("function_response") for p in parts]
    if any(responses):
        return "results: " + "; ".join(f"{r['name']}={orjson.dumps(r['response']).decode()}" for r in responses if r)
    return "echo: " + " ".join(p["text"] for p in parts if "text" in p)


def _candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return candidate


def _response(candidates: list[dict[str, Any]], usage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"candidates": candidates, "modelVersion": "gemini-fake-001", "responseId": "resp-1", **extra}
    if usage:
        out["usageMetadata"] = usage
    return out


TOOL_PARTS = [
    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE},
    {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
]


def plan(model: str, body: dict[str, Any], scripted: str | None = None) -> list[dict[str, Any]]:
    """The scenario as the list of streamed chunks; a non-stream answer merges them.

    A scripted text (`recorder.answers`) replaces the echo.
    """
    if model == "tools":
        return [_response([_candidate([{"text": "Let me check."}])]),
                _response([_candidate([TOOL_PARTS[0]])]),
                _response([_candidate([TOOL_PARTS[1]], "STOP")], USAGE)]
    if model == "blocked":
        return [{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}]
    if model == "thinker":
        usage = {**USAGE, "thoughtsTokenCount": 5, "totalTokenCount": 17}
        return [_response([_candidate([{"text": "Pondering.", "thought": True}])]),
                _response([_candidate([{"text": "42"}], "STOP")], usage)]
    finish = {"safety": "SAFETY", "length": "MAX_TOKENS", "odd-finish": "MALFORMED_FUNCTION_CALL"}.get(model, "STOP")
    calling = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {})
    if scripted is not None and calling.get("mode") == "ANY" and calling.get("allowedFunctionNames"):
        call = {"functionCall": {"name": calling["allowedFunctionNames"][0], "args": orjson.loads(scripted)}}
        return [_response([_candidate([call], "STOP")], USAGE)]
    words = (scripted if scripted is not None else _last_turn(body)).split(" ")
    chunks = [_response([_candidate([{"text": w if i == 0 else " " + w}])]) for i, w in enumerate(words)]
    chunks[-1]["candidates"][0]["finishReason"] = finish
    chunks[-1]["usageMetadata"] = USAGE
    return chunks


def merge(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    if not chunks[0].get("candidates"):
        return chunks[0]
    parts: list[dict[str, Any]] = []
    for chunk in chunks:
        for part in chunk["candidates"][0]["content"]["parts"]:
            if "text" in part and parts and "text" in parts[-1] and part.get("thought") == parts[-1].get("thought"):
                parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
            else:
                parts.append(part)
    last = chunks[-1]
    return _response([_candidate(parts, last["candidates"][0].get("finishReason"))], last.get("usageMetadata"))


def embeddings(method: str, body: dict[str, Any]) -> dict[str, Any]:
    def vector(i: int) -> list[float]:
        return [0.5 + i, -0.25, 0.125]

    if method == "predict":
        return {"predictions": [{"embeddings": {"values": vector(i), "statistics": {"token_count": 3, "truncated": False}}}
                                for i, _ in enumerate(body["instances"])], "metadata": {"billableCharacterCount": 5}}
    if method == "embedContent":
        return {"embedding": {"values": vector(0)}}
    return {"embeddings": [{"values": vector(i)} for i, _ in enumerate(body["requests"])]}


def make_app(recorder: Recorder) -> Starlette:
    async def model_call(request: Request) -> Response:
        match = PATH.match(request.url.path)
        if match is None:
            return google_error(404, f"unknown path {request.url.path}")
        body = orjson.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body, request.url.query))
        model, method = match["model"], match["method"]
        early = await _scenario(model, request)
        if early is not None:
            return early
        if method in ("batchEmbedContents", "embedContent", "predict"):
            return Response(orjson.dumps(embeddings(method, body)), media_type="application/json")
        chunks = plan(model, body, recorder.next_answer())
        if method == "generateContent":
            return Response(orjson.dumps(merge(chunks)), media_type="application/json")
        if method == "streamGenerateContent" and request.query_params.get("alt") == "sse":
            return StreamingResponse(_stream(model, chunks, recorder), media_type="text/event-stream")
        return google_error(400, f"unsupported method {method} ({request.url.query})")

    async def _scenario(model: str, request: Request) -> Response | None:
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        if model == "leak-401":
            return google_error(401, f"API key not valid: {request.headers.get('x-goog-api-key', '')}")
        if model.startswith("fail-"):
            status = int(model.split("-")[1])
            return google_error(status, f"scripted failure {status}", {"retry-after": "0"} if status == 429 else None)
        return None

    async def _stream(model: str, chunks: list[dict[str, Any]], rec: Recorder) -> AsyncIterator[bytes]:
        try:
            for i, chunk in enumerate(chunks):
                yield b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
                if model == "midstream-error" and i == 1:
                    error = {"error": {"code": 500, "message": "scripted mid-stream failure", "status": "INTERNAL"}}
                    yield b"data: " + orjson.dumps(error) + b"\r\n\r\n"
                    return
        finally:
            rec.closed_streams += 1

    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        recorder.requests.append(Recorded("POST", "/token", dict(request.headers), form))
        return Response(orjson.dumps({"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
                        media_type="application/json")

    async def image(request: Request) -> Response:
        return Response(DOT_PNG, media_type="image/png")

    return Starlette(routes=[
        Route("/token", token, methods=["POST"]),
        Route("/images/dot.png", image, methods=["GET"]),
        Route("/{path:path}", model_call, methods=["POST"]),
    ])
