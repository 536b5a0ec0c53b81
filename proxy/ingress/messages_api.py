"""`POST /v1/messages` and `/v1/messages/count_tokens`: the Anthropic Messages API over any model.

The request is mapped to the gateway's OpenAI chat request (anthropic_messages.py) and
routed like a chat completion: its model's chain with retries and fallbacks. Per
deployment the router tries, an Anthropic upstream gets the client's body untouched
(only `model` becomes the upstream id) and its answer or event stream is relayed as is
(the `model` field aside, which names the public model as everywhere); any other
provider gets the translated request and its answer is mapped back. So a chain may mix
both. A request with a gateway extension field (`rag`, `mcp`, `structured_output`), or
one the key gate applies to (a virtual key; limits, budgets or the cache configured),
runs the pipeline, which works on OpenAI chat, so every deployment is translated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from proxy.errors import InvalidRequest, ProxyError, UpstreamError, anthropic_error_body
from proxy.ingress.anthropic_messages import (
    MessagesStreamState,
    dropped_fields,
    encode_events,
    end_events,
    estimate_input_tokens,
    from_openai_chunk,
    from_openai_response,
    start_events,
    to_openai_request,
)
from proxy.ingress.relay import endpoint, has_extensions, relay_mapped, stream_headers
from proxy.router import to_proxy_error
from proxy.schemas import CHAT_REQUEST, parse_json_object, validate
from proxy.streaming import StreamRelay
from translators.base import GATEWAY_FIELDS, JSON

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from proxy.app import Endpoint, Gateway
    from proxy.config import Deployment
    from proxy.router import Served

log = logging.getLogger("omni.ingress")

# Fields of a Messages body the count_tokens endpoint takes (it refuses max_tokens, stream, ...).
_COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


def _render(error: ProxyError, message: str) -> JSON:
    return anthropic_error_body(error, message)


def build(gateway: Gateway) -> Endpoint:
    return endpoint(gateway, "messages", messages, _render)


def build_count_tokens(gateway: Gateway) -> Endpoint:
    return endpoint(gateway, "messages", count_tokens, _render)


def to_openai_usage(usage: JSON | None) -> JSON:
    """An Anthropic usage block in the gateway's accounting form (prompt includes cache reads and writes)."""
    usage = usage or {}
    reads = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + reads + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reads}}


async def messages(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    from proxy.app import read_body, send_stream
    from proxy.middleware import send_json

    started = time.perf_counter()
    body = parse_json_object(await read_body(receive))
    request = to_openai_request(body)
    validate(CHAT_REQUEST, request)
    call = gateway.chat_call(request, scope["state"])
    message_id = f"msg_{scope['state']['request_id']}"
    # The native pass-through skips the pipeline: not for extensions, nor when keys/limits/budgets/cache apply.
    native = None if has_extensions(request) or gateway.gated(call.state) else {
        k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    if not request.get("stream"):
        if native is None:
            served = await gateway.complete_chat(call)
            kind, answer = "openai", gateway.finish_chat(call, served)
        else:
            served = await gateway._bounded(gateway.router.run(call.chain, request, "chat", _either(native)))
            kind, answer = served.result
        _note_dropped(served, kind, body)
        if kind == "anthropic":
            result = {**answer, "model": served.deployment.name}
        else:
            result = {**from_openai_response(answer, served.deployment.name, message_id), **call.extra}
        cost = gateway._account("messages", call.state, served, to_openai_usage(result.get("usage")), started)
        await send_json(send, result, headers=gateway._headers(served, started, cost) + call.headers)
        return
    stream: Any
    if native is None:
        opened = await gateway.open_chat(call)
        kind, stream = "openai", opened.result
    else:
        either = _either_stream(gateway, native)
        opened = await gateway._bounded(gateway.router.run(call.chain, request, "chat", either))
        kind, stream = opened.result
    _note_dropped(opened, kind, body)
    provider = gateway.pool.get(opened.deployment.provider)
    state = call.state

    def on_error(exc: BaseException) -> ProxyError:
        return to_proxy_error(provider, exc)

    def on_done(usage: JSON | None, error: ProxyError | None) -> None:
        if error is not None:
            state["log"]["error"] = gateway.scrub(error.message)
        gateway._account("messages", state, opened, usage, started, status=error.status if error else 200)

    if kind == "anthropic":
        frames = _relay_native(stream, opened.deployment.name, gateway, on_error, on_done)
    else:
        first, rest = stream
        relay_state = StreamRelay(message_id, opened.deployment.name, False)
        encoder = MessagesEncoder(MessagesStreamState(message_id, opened.deployment.name, extra=call.extra), gateway)
        frames = relay_mapped(relay_state, first, rest, encoder, on_error,
                              lambda done, error: on_done(done.usage, error))
    await send_stream(receive, send, frames, stream_headers(gateway, opened, started, call.headers))


def _note_dropped(served: Served[Any], kind: str, body: JSON) -> None:
    """Passed through, nothing was dropped; translated, what the mapping leaves out was too."""
    served.dropped = [] if kind == "anthropic" else dropped_fields(body) + served.dropped


def _upstream_body(native: JSON, deployment: Deployment) -> JSON:
    return {**native, "model": deployment.model}


def _either(native: JSON) -> Any:
    async def operation(provider: Any, prepared: JSON, deployment: Deployment) -> tuple[str, JSON]:
        passthrough = getattr(provider, "messages", None)
        if passthrough is not None:
            return "anthropic", await passthrough(_upstream_body(native, deployment), deployment)
        return "openai", await provider.chat(prepared, deployment)

    return operation


def _either_stream(gateway: Gateway, native: JSON) -> Any:
    async def operation(provider: Any, prepared: JSON, deployment: Deployment) -> tuple[str, Any]:
        passthrough = getattr(provider, "messages_stream", None)
        if passthrough is not None:
            body = {k: v for k, v in native.items() if k != "stream"}
            return "anthropic", await passthrough(_upstream_body(body, deployment), deployment)
        return "openai", await gateway._open_with_timeout(provider, prepared, deployment)

    return operation


class MessagesEncoder:
    def __init__(self, state: MessagesStreamState, gateway: Gateway) -> None:
        self.state = state
        self.gateway = gateway

    def start(self) -> bytes:
        return encode_events(start_events(self.state))

    def chunk(self, chunk: JSON) -> bytes:
        return encode_events(from_openai_chunk(chunk, self.state))

    def end(self, usage: JSON | None) -> bytes:
        return encode_events(end_events(self.state, usage))

    def error(self, error: ProxyError) -> bytes:
        return encode_events([("error", anthropic_error_body(error, self.gateway.scrub(error.message)))])


async def _relay_native(events: AsyncIterator[list[JSON]], model: str, gateway: Gateway, on_error: Any,
                        on_done: Any) -> AsyncGenerator[bytes, None]:
    """An Anthropic upstream's events, relayed as they came (message_start names the public model)."""
    usage: JSON = {}
    error: ProxyError | None = None
    stopped = False
    try:
        async for batch in events:
            for event in batch:
                kind = event.get("type")
                stopped = stopped or kind in ("message_stop", "error")
                if kind == "message_start":
                    message = event.get("message") or {}
                    message["model"] = model
                    usage.update({k: v for k, v in (message.get("usage") or {}).items() if v or k not in usage})
                elif kind == "message_delta":
                    usage.update({k: v for k, v in (event.get("usage") or {}).items() if v or k not in usage})
                elif kind == "error":
                    error = to_proxy_error(None, _event_error(event))
            yield encode_events([(str(event.get("type")), event) for event in batch])
        if not stopped:
            raise UpstreamError("upstream stream ended before the answer was complete")
    except Exception as exc:
        error = on_error(exc)
        yield encode_events([("error", anthropic_error_body(error, gateway.scrub(error.message)))])
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        on_done(to_openai_usage(usage), error)


def _event_error(event: JSON) -> ProxyError:
    from translators.anthropic.response import from_anthropic_error_event

    return from_anthropic_error_event(event.get("error") or {})


async def count_tokens(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """Anthropic upstreams count (their endpoint); other models get an offline estimate, no upstream call."""
    from proxy.app import read_body
    from proxy.middleware import send_json
    from proxy.routing import resolve_model

    body = parse_json_object(await read_body(receive))
    request = to_openai_request(body)  # validates the shape the same way /v1/messages does
    scope["state"]["log"]["model"] = request["model"]
    deployment = resolve_model(gateway.config, request["model"])[0][1][0]
    provider_config = gateway.config.providers[deployment.provider]
    if provider_config.type == "anthropic" and not provider_config.not_ready:
        counted: JSON | None = None
        provider = None
        try:
            provider = gateway.pool.get(deployment.provider)
            counted = await gateway._bounded(provider.count_tokens(  # type: ignore[attr-defined]
                {**{k: body[k] for k in _COUNT_FIELDS if k in body}, "model": deployment.model}, deployment))
        except Exception as exc:  # SDK missing, no counting endpoint, or it failed: the estimate is the answer
            log.info("count_tokens: upstream count failed (%s), estimating", to_proxy_error(provider, exc).message)
        if isinstance(counted, dict) and isinstance(counted.get("input_tokens"), int):
            await send_json(send, {"input_tokens": counted["input_tokens"]})
            return
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: Field required", param="messages")
    await send_json(send, {"input_tokens": estimate_input_tokens(body)}, headers=[(b"x-omni-token-count", b"estimate")])

