"""A mock LLM upstream fast enough never to be the bottleneck: raw asyncio + httptools, pre-serialised bodies.

Serves OpenAI `/v1/chat/completions` and Anthropic `/v1/messages`, non-stream and
N-chunk SSE (with usage), keep-alive. Streams have a content-length; for the
upstream model `bench-chunked` the OpenAI stream comes chunked, one chunk per event. Usage: python -m bench.mock_upstream PORT [CHUNKS]
"""

from __future__ import annotations

import asyncio
import json
import sys

import httptools

OPENAI_JSON = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}).encode()

ANTHROPIC_JSON = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "bench",
    "content": [{"type": "text", "text": "Hello from the benchmark upstream."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
}).encode()


def openai_stream(chunks: int) -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "bench"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}]}
               for i in range(chunks)]
    events += [{**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}}]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def chunked(body: bytes, content_type: bytes) -> bytes:
    """The stream as real upstreams frame it: one HTTP chunk per SSE event (all in one write here)."""
    events = [event + b"\n\n" for event in body.split(b"\n\n") if event]
    return (b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n")


def anthropic_stream(chunks: int) -> bytes:
    def event(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    out = [event("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "bench", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}})]
    out += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": f" tok{i}"}}) for i in range(chunks)]
    out += [event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": chunks}}),
            event("message_stop", {"type": "message_stop"})]
    return b"".join(out)


def response(body: bytes, content_type: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\nconnection: keep-alive\r\n\r\n" + body)


class Upstream(asyncio.Protocol):
    def __init__(self, responses: dict[tuple[bytes, bool], bytes]) -> None:
        self.responses = responses
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        stream = b'"stream":true' in self.body or b'"stream": true' in self.body
        key = (b"anthropic" if self.url.endswith(b"/messages") else b"openai", stream)
        if stream and b"bench-chunked" in self.body:
            key = (b"openai-chunked", True)
        self.transport.write(self.responses[key])  # type: ignore[attr-defined]
        self.body = b""


async def serve(port: int, chunks: int) -> None:
    responses = {
        (b"openai", False): response(OPENAI_JSON, b"application/json"),
        (b"openai", True): response(openai_stream(chunks), b"text/event-stream"),
        (b"openai-chunked", True): chunked(openai_stream(chunks), b"text/event-stream"),
        (b"anthropic", False): response(ANTHROPIC_JSON, b"application/json"),
        (b"anthropic", True): response(anthropic_stream(chunks), b"text/event-stream"),
    }
    server = await asyncio.get_running_loop().create_server(lambda: Upstream(responses), "127.0.0.1", port, backlog=1024)
    print(f"mock upstream on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20))
