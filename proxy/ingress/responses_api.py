"""`POST /v1/responses`: the OpenAI Responses API (stateless) over any model, through the chat pipeline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proxy.errors import ProxyError
from proxy.ingress.relay import endpoint, relay_mapped, render_openai, stream_headers
from proxy.ingress.responses import (
    ResponsesStreamState,
    dropped_fields,
    encode_events,
    end_events,
    error_events,
    from_openai_chunk,
    from_openai_response,
    skeleton,
    start_events,
    to_openai_request,
)
from proxy.router import to_proxy_error
from proxy.schemas import CHAT_REQUEST, parse_json_object, validate
from proxy.streaming import StreamRelay
from translators.base import JSON

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from proxy.app import Endpoint, Gateway


def build(gateway: Gateway) -> Endpoint:
    return endpoint(gateway, "responses", responses, render_openai)


async def responses(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    from proxy.app import read_body, send_stream
    from proxy.middleware import send_json

    started = time.perf_counter()
    body = parse_json_object(await read_body(receive))
    request = to_openai_request(body)
    validate(CHAT_REQUEST, request)
    call = gateway.chat_call(request, scope["state"])
    response_id = f"resp_{scope['state']['request_id']}"
    if not request.get("stream"):
        served = await gateway.complete_chat(call)
        served.dropped = dropped_fields(body) + served.dropped
        completion = gateway.finish_chat(call, served)
        result = from_openai_response(completion, body, response_id, served.deployment.name)
        result.update(call.extra)
        cost = gateway._account("responses", call.state, served, completion.get("usage"), started)
        await send_json(send, result, headers=gateway._headers(served, started, cost) + call.headers)
        return
    opened = await gateway.open_chat(call)
    opened.dropped = dropped_fields(body) + opened.dropped
    first, rest = opened.result
    provider = gateway.pool.get(opened.deployment.provider)
    state = call.state
    response = skeleton(body, response_id, opened.deployment.name, int(time.time()))
    response.update(call.extra)
    encoder = ResponsesEncoder(ResponsesStreamState(response), gateway)

    def on_done(done: StreamRelay, error: ProxyError | None) -> None:
        if error is not None:
            state["log"]["error"] = gateway.scrub(error.message)
        gateway._account("responses", state, opened, done.usage, started, status=error.status if error else 200)

    frames = relay_mapped(StreamRelay(response_id, opened.deployment.name, False), first, rest, encoder,
                          lambda exc: to_proxy_error(provider, exc), on_done)
    await send_stream(receive, send, frames, stream_headers(gateway, opened, started, call.headers))


class ResponsesEncoder:
    def __init__(self, state: ResponsesStreamState, gateway: Gateway) -> None:
        self.state = state
        self.gateway = gateway

    def start(self) -> bytes:
        return encode_events(start_events(self.state))

    def chunk(self, chunk: JSON) -> bytes:
        return encode_events(from_openai_chunk(chunk, self.state))

    def end(self, usage: JSON | None) -> bytes:
        return encode_events(end_events(self.state, usage))

    def error(self, error: ProxyError) -> bytes:
        return encode_events(error_events(self.state, error, self.gateway.scrub(error.message)))
