"""A fake Bedrock runtime speaking the real wire format: Converse JSON, ConverseStream as
AWS binary event-stream frames (CRCs that botocore verifies), InvokeModel embeddings,
and errors named by the `x-amzn-ErrorType` header. The SigV4 signature is not checked.

Behaviour is chosen by the model id in the path (`/model/{id}/converse[-stream]|invoke`):

  any name             echo "echo: <last user text>" (stream: one word per delta); usage with cache tokens
  tools                text + two parallel toolUse blocks (stream: input as JSON fragments)
  *reasoning*          reasoningContent (text + signature), then text
  max-tokens           stopReason max_tokens;  guardrail: stopReason guardrail_intervened
  fail-<status>        that HTTP status with the matching Bedrock exception (429 adds x-amz-retry-after: 0)
  leak-403             403 whose message echoes the X-Amz-Security-Token it received
  midstream-<name>     two text deltas, then a `<name>` exception frame (e.g. throttlingException)
  endless              a text delta every 20 ms for a long time (client-disconnect tests)
  scripted             the recorder's next scripted turn (text and/or toolUse blocks)
  *titan-embed-text*   Titan embeddings (one text per call);  cohere.embed*: Cohere batch embeddings

`POST /rerank` is the `bedrock-agent-runtime` Rerank operation: the model is the id at the
end of `rerankingConfiguration.bedrockRerankingConfiguration.modelConfiguration.modelArn`
(`fail-<status>` as above); results are `{"index", "relevanceScore"}` best first (the share
of the query's words each text contains, times 0.8), cut to `numberOfResults`; a model id
containing `paged` answers two results per page with a `nextToken`.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import Recorded, Recorder

ERROR_TYPES = {
    400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
    408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
    500: "InternalServerException", 503: "ServiceUnavailableException",
}
USAGE = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 13, "cacheReadInputTokens": 2, "cacheWriteInputTokens": 1}
TOOL_USES = [
    {"toolUseId": "tooluse_weather_1", "name": "get_weather", "input": {"city": "Paris"}},
    {"toolUseId": "tooluse_time_2", "name": "get_time", "input": {"tz": "CET"}},
]


def _header(name: str, value: str) -> bytes:
    key, val = name.encode(), value.encode()
    return bytes([len(key)]) + key + b"\x07" + struct.pack(">H", len(val)) + val


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude + prelude CRC, headers, payload, message CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(body).encode())


def exception(kind: str, body: dict[str, Any]) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, json.dumps(body).encode())


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    kind = ERROR_TYPES.get(status, "InternalServerException")
    all_headers = {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                   "x-amzn-RequestId": "req-error-1", **(headers or {})}
    return Response(json.dumps({"message": message}), status_code=status, media_type="application/json",
                    headers=all_headers)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        texts = [b["text"] for b in message["content"] if "text" in b]
        if message["role"] == "user" and texts:
            return " ".join(texts)
    return ""


def _content(model: str, body: dict[str, Any], scripted: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """(content blocks, stopReason) the scenario answers with; a scripted text replaces the echo.

    With a forced tool (`toolChoice.tool`) the scripted text is that toolUse's input.
    """
    if scripted is not None:
        forced = ((body.get("toolConfig") or {}).get("toolChoice") or {}).get("tool")
        if forced:
            return [{"toolUse": {"toolUseId": "tooluse_forced1", "name": forced["name"],
                                 "input": json.loads(scripted)}}], "tool_use"
        return [{"text": scripted}], "end_turn"
    if model == "tools":
        return [{"text": "Checking."}, *({"toolUse": use} for use in TOOL_USES)], "tool_use"
    text = [{"text": f"echo: {_last_user_text(body['messages'])}"}]
    if "reasoning" in model:
        thought = {"reasoningContent": {"reasoningText": {"text": "Let me think.", "signature": "sig-abc"}}}
        return [thought, *text], "end_turn"
    stop = {"max-tokens": "max_tokens", "guardrail": "guardrail_intervened"}.get(model, "end_turn")
    return text, stop


def _scripted(turn: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    blocks: list[dict[str, Any]] = [{"text": turn["text"]}] if turn.get("text") else []
    blocks += [{"toolUse": {"toolUseId": c["id"], "name": c["name"], "input": c.get("arguments", {})}}
               for c in turn.get("tool_calls") or []]
    return blocks, "tool_use" if turn.get("tool_calls") else "end_turn"


def _stream_events(model: str, blocks: list[dict[str, Any]], stop: str) -> list[bytes]:
    frames = [event("messageStart", {"role": "assistant"})]
    for index, block in enumerate(blocks):
        if "text" in block:
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                delta = {"text": word if i == 0 else " " + word}
                frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        elif "toolUse" in block:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            args = json.dumps(use["input"])
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": part}}}))
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"]["reasoningText"]
            for delta in ({"text": reasoning["text"]}, {"signature": reasoning["signature"]}):
                frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"reasoningContent": delta}}))
        frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(event("messageStop", {"stopReason": stop}))
    frames.append(event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 42}}))
    return frames


def make_app(recorder: Recorder) -> Starlette:
    async def record(request: Request) -> tuple[str, Any]:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        path = request.scope.get("raw_path", request.url.path.encode()).decode()
        recorder.requests.append(Recorded("POST", path, dict(request.headers), body))
        return unquote(request.path_params["model_id"]), body

    def scripted_error(model: str, request: Request) -> Response | None:
        if model == "leak-403":
            token = request.headers.get("x-amz-security-token", "")
            return _error(403, f"The security token included in the request is invalid: {token}")
        if model.startswith("fail-"):
            status = int(model.split("-")[1])
            return _error(status, f"scripted failure {status}", {"x-amz-retry-after": "0"} if status == 429 else None)
        return None

    async def converse(request: Request) -> Response:
        model, body = await record(request)
        early = scripted_error(model, request)
        if early is not None:
            return early
        blocks, stop = _scripted(recorder.next_turn()) if model == "scripted" else \
            _content(model, body, recorder.next_answer())
        answer = {"output": {"message": {"role": "assistant", "content": blocks}}, "stopReason": stop,
                  "usage": USAGE, "metrics": {"latencyMs": 42}}
        return Response(json.dumps(answer), media_type="application/json", headers={"x-amzn-RequestId": "req-1"})

    async def converse_stream(request: Request) -> Response:
        model, body = await record(request)
        early = scripted_error(model, request)
        if early is not None:
            return early
        return StreamingResponse(stream(model, body), media_type="application/vnd.amazon.eventstream")

    async def stream(model: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        try:
            if model == "endless":
                yield event("messageStart", {"role": "assistant"})
                for i in range(2000):
                    yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"tick{i} "}})
                    await asyncio.sleep(0.02)
                return
            turn = _scripted(recorder.next_turn()) if model == "scripted" else None
            frames = _stream_events(model, *(turn or _content(model, body, recorder.next_answer())))
            if model.startswith("midstream-"):
                frames = frames[:3] + [exception(model.split("-", 1)[1], {"message": "scripted mid-stream failure"})]
            for data in frames:
                yield data
        finally:
            recorder.closed_streams += 1

    async def invoke(request: Request) -> Response:
        model, body = await record(request)
        early = scripted_error(model, request)
        if early is not None:
            return early
        if "titan-embed" in model:
            size = body.get("dimensions", 3)
            vector = [len(body["inputText"]) / 10] + [0.5] * (size - 1)
            answer = {"embedding": vector, "inputTextTokenCount": len(body["inputText"].split())}
            return Response(json.dumps(answer), media_type="application/json")
        if model.startswith("cohere.embed"):
            vectors = [[len(t) / 10, -0.5, 0.25] for t in body["texts"]]
            answer = {"id": "emb-1", "embeddings": {"float": vectors}, "texts": body["texts"],
                      "response_type": "embeddings_by_type"}
            headers = {"X-Amzn-Bedrock-Input-Token-Count": str(sum(len(t.split()) for t in body["texts"]))}
            return Response(json.dumps(answer), media_type="application/json", headers=headers)
        return _error(400, f"model {model} does not support InvokeModel here")

    async def rerank(request: Request) -> Response:
        body = json.loads(await request.body())
        recorder.requests.append(Recorded("POST", request.url.path, dict(request.headers), body))
        settings = body["rerankingConfiguration"]["bedrockRerankingConfiguration"]
        model = settings["modelConfiguration"]["modelArn"].rsplit("foundation-model/", 1)[-1]
        early = scripted_error(model, request)
        if early is not None:
            return early
        query = body["queries"][0]["textQuery"]["text"]
        texts = [s["inlineDocumentSource"]["textDocument"]["text"] for s in body["sources"]]
        wanted = set(re.findall(r"\w+", query.lower()))
        scored = sorted(({"index": i, "relevanceScore": round(0.8 * len(wanted & set(re.findall(r"\w+", t.lower())))
                                                              / max(1, len(wanted)), 6)} for i, t in enumerate(texts)),
                        key=lambda r: (-r["relevanceScore"], r["index"]))[: settings.get("numberOfResults") or len(texts)]
        answer: dict[str, Any] = {"results": scored}
        if "paged" in model:
            start = int(body.get("nextToken") or 0)
            answer = {"results": scored[start:start + 2]}
            if start + 2 < len(scored):
                answer["nextToken"] = str(start + 2)
        return Response(json.dumps(answer), media_type="application/json", headers={"x-amzn-RequestId": "req-rr"})

    return Starlette(routes=[
        Route("/rerank", rerank, methods=["POST"]),
        Route("/model/{model_id:path}/converse", converse, methods=["POST"]),
        Route("/model/{model_id:path}/converse-stream", converse_stream, methods=["POST"]),
        Route("/model/{model_id:path}/invoke", invoke, methods=["POST"]),
    ])
