"""`POST /invoke`: the seed API as a thin adapter onto the chat pipeline (no second pipeline).

A JSON answer is mapped by `proxy.ingress.invoke`; with `model_config.stream: true`
the answer is the chat completions SSE stream itself (CONTRACT §14), so the
seed's streaming clients and OpenAI's parse the same events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proxy.errors import ProxyError
from proxy.ingress.invoke import from_chat_completion, seed_error_body, to_chat_request
from proxy.middleware import error_headers, send_json
from proxy.schemas import CHAT_REQUEST, parse_json_object, validate

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from proxy.app import Gateway


class InvokeEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from proxy.app import ClientGone

        started = time.perf_counter()
        state = scope["state"]
        try:
            await self._invoke(scope, receive, send, started)
        except ProxyError as error:
            message = self.gateway.scrub(error.message)
            fields = state["log"]
            fields["error"] = message
            self.gateway.metrics.observe("invoke", fields.get("model", ""), fields.get("provider", ""), error.status,
                                         time.perf_counter() - started)
            body = seed_error_body(error, state["request_id"], message, fields.get("provider"),
                                   state.get("requested_model") or fields.get("model"))
            await send_json(send, body, error.status, error_headers(error))
        except ClientGone:
            pass

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        from proxy.app import read_body

        gateway = self.gateway
        seed = parse_json_object(await read_body(receive))
        body, options = to_chat_request(seed, gateway.config)
        validate(CHAT_REQUEST, body)
        call = gateway.chat_call(body, scope["state"])
        if body.get("stream"):
            await gateway._stream(receive, send, call, started)
            return
        served = await gateway.complete_chat(call)
        completion = gateway.finish_chat(call, served)
        cost = gateway._account("invoke", call.state, served, completion.get("usage"), started)
        answer = from_chat_completion(completion, options, served.provider.name, cost, started,
                                      call.state["request_id"])
        await send_json(send, answer, headers=gateway._headers(served, started, cost) + call.headers)


def build(gateway: Gateway) -> InvokeEndpoint:
    return InvokeEndpoint(gateway)
