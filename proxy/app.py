"""The Starlette app: OpenAI-wire routes over the router.

`create_app()` is the factory (uvicorn `--factory`, the CLI, Lambda). Importing
this module loads no config, does no I/O and imports no vendor SDK; `app` is
built on first attribute access for `uvicorn proxy.app:app`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import os
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.config import Config, load_config
from proxy.edge import edge_settings
from proxy.emf import EmfWriter
from proxy.endpoint import CLIENT_CLOSED, ClientGone, ClientWatch, Endpoint, read_body, send_stream  # noqa: F401 - re-exported
from proxy.errors import ANTHROPIC_PATHS, error_body_for
from proxy.errors import (
    InvalidRequest,
    ModelNotFound,
    NotFound,
    ProxyError,
    ServerShuttingDown,
    UpstreamTimeout,
)
from proxy.metrics import Metrics
from proxy.middleware import GatewayMiddleware, error_headers, send_json
from proxy.pipeline import ChatCall, compose_complete, compose_stream, steps_for
from proxy.router import ProviderPool, Router, Served, to_proxy_error
from proxy.routing import resolve_chain
from proxy.schemas import CHAT_REQUEST, EMBEDDING_REQUEST, parse_json_object, validate
from proxy.sse import encode_event
from proxy.streaming import Stream, StreamRelay, open_stream, relay
from proxy.tracing import tracing_from_env
from translators.base import JSON, Provider

_JSON = "application/json"
_FROM_ENV = object()  # Gateway(tracing=...) default: decide from the OTEL_* variables
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type=_JSON, headers=headers)


class Gateway:
    """Everything a request needs, built once per app."""

    def __init__(self, config: Config, router: Router | None = None, tracing: Any = _FROM_ENV) -> None:
        self.config = config
        self.pool = ProviderPool(config)
        self.router = router or Router(config, self.pool)
        self.metrics = Metrics([*config.models, *config.strategies], config.providers,
                               [(d.provider, d.model) for ds in config.models.values() for d in ds])
        self._secrets = config.secrets
        self.tracing = tracing_from_env(os.environ) if tracing is _FROM_ENV else tracing
        self.router.tracing = self.tracing
        self.emf = EmfWriter(config.metrics.namespace) if config.metrics.emf else None
        self.mcp: Any = None
        self.rag: Any = None  # proxy.rag.engine.RagEngine, built on the first request that uses RAG  # proxy.mcp.manager.McpManager, built on the first request that uses MCP
        # Keys, limits, budgets, cache, usage log (proxy/keys): built only when something of it is configured.
        self.gate: Any = None
        if config.server.api_keys or config.state is not None or config.limits.rpm or config.limits.tpm \
                or config.cache.enabled:
            from proxy.keys.gate import Gate

            self.gate = Gate(self)
        self.gate_all = self.gate is not None and self.gate.active  # else only virtual-key requests pass it

    # -- errors ----------------------------------------------------------------
    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    def render_error(self, error: ProxyError) -> JSON:
        body = error.to_dict()
        body["error"]["message"] = self.scrub(error.message)
        return body

    def error_response(self, error: ProxyError) -> Response:
        return _json(self.render_error(error), error.status, error.headers())

    def errors_rendered(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except ProxyError as error:
                request.state.log["error"] = self.scrub(error.message)
                return self.error_response(error)

        return wrapped

    # -- chat ------------------------------------------------------------------
    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = parse_json_object(await read_body(receive))
        validate(CHAT_REQUEST, body)
        call = self.chat_call(body, scope["state"])
        if body.get("stream"):
            await self._stream(receive, send, call, started)
            return
        served = await self.complete_chat(call)
        result = self.finish_chat(call, served)
        cost = self._account("chat", call.state, served, result.get("usage"), started)
        await send_json(send, result, headers=self._headers(served, started, cost) + call.headers)

    def chat_call(self, body: JSON, state: dict[str, Any]) -> ChatCall:
        """A validated chat request, its chain resolved (unknown models fail here, before any call)."""
        state["log"]["model"] = state["requested_model"] = body["model"]
        if self.tracing is not None:
            state["trace_attributes"] = self.tracing.request_attributes(body)
        return ChatCall(body, resolve_chain(self.config, body), state)

    def gated(self, state: dict[str, Any]) -> bool:
        """Whether a request passes the keys/limits/budget/cache gate: an ingress with a path of its own
        around the pipeline (e.g. a native pass-through) must take the pipeline instead (no bypass)."""
        return self.gate_all or "key" in state

    def _steps(self, call: ChatCall) -> list[Any]:
        """The request's pipeline steps, the keys gate outermost when it applies (checked before any is built)."""
        gated = self.gated(call.state)
        if gated:
            self.gate.permit(call.state, call.body)
        steps = steps_for(self, call.body)
        if gated:
            steps.insert(0, self.gate)
        return steps

    async def complete_chat(self, call: ChatCall) -> Served[JSON]:
        """The pipeline for a JSON answer, bounded by `request_timeout_s`."""
        steps = self._steps(call)
        run = compose_complete(steps, self._route_complete) if steps else self._route_complete
        return await self._bounded(run(call))  # type: ignore[no-any-return]

    async def open_chat(self, call: ChatCall) -> Served[Stream]:
        """The pipeline for a stream, up to its first chunk (so failures are still real statuses)."""
        steps = self._steps(call)
        run = compose_stream(steps, self._route_stream) if steps else self._route_stream
        served: Served[Stream] = await self._bounded(run(call))
        if call.extra:
            served.result[0][0].update(call.extra)
        return served

    def finish_chat(self, call: ChatCall, served: Served[JSON]) -> JSON:
        """The `chat.completion` as the client sees it: public model name, id, extension fields."""
        result = served.result
        result["model"] = served.deployment.name
        result.setdefault("object", "chat.completion")
        result.setdefault("created", int(time.time()))
        if not result.get("id"):
            result["id"] = f"chatcmpl-{call.state['request_id']}"
        if call.extra:
            result.update(call.extra)
        if self.tracing is not None:
            call.state["finish_reasons"] = [c.get("finish_reason") for c in result.get("choices") or ()]
            call.state.setdefault("trace_attributes", {}).update(self.tracing.output_attributes(result))
        return result

    async def _route_complete(self, call: ChatCall) -> Served[JSON]:
        return await self.router.run(call.chain, call.body, "chat", _chat)

    async def _route_stream(self, call: ChatCall) -> Served[Stream]:
        return await self.router.run(call.chain, call.body, "chat", self._open_with_timeout)

    async def _open_with_timeout(self, provider: Provider, req: JSON, deployment: Any) -> Stream:
        first_token_timeout = self.config.router.first_token_timeout_s
        try:
            async with asyncio.timeout(first_token_timeout):
                return await open_stream(provider, req, deployment)
        except TimeoutError:
            raise UpstreamTimeout(f"no first token within {first_token_timeout:g} s") from None

    async def _stream(self, receive: Receive, send: Send, call: ChatCall, started: float) -> None:
        served = await self.open_chat(call)
        first, rest = served.result
        provider = self.pool.get(served.deployment.provider)
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        state = call.state
        relay_state = StreamRelay(first[0].get("id") or f"chatcmpl-{state['request_id']}", served.deployment.name,
                                  include_usage)

        def on_done(done: StreamRelay, error: ProxyError | None) -> None:
            if error is not None:
                state["log"]["error"] = self.scrub(error.message)
            state["finish_reasons"] = done.finish_reasons
            status, usage = error.status if error else 200, done.usage
            if error is None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                status, usage = self._interrupted(state, done)
            self._account("chat", state, served, usage, started, status=status)

        limit = self.config.server.request_timeout_s  # covers the whole stream, not only its start
        deadline = asyncio.get_running_loop().time() + limit - (time.perf_counter() - started)
        frames = relay(relay_state, first, rest, lambda exc: to_proxy_error(provider, exc), self.render_error, on_done,
                       (deadline, limit))
        await send_stream(receive, send, frames, _SSE_HEADERS + self._headers(served, started, None) + call.headers)

    @staticmethod
    def _interrupted(state: dict[str, Any], done: StreamRelay) -> tuple[int, JSON]:
        """A relay cancelled by the client leaving (499) or by the end of the drain period (503).

        The log and metrics count what was relayed: the upstream's usage when it came,
        else one completion token per relayed chunk (`tokens_estimated`).
        """
        log = state["log"]
        log["relayed_chunks"] = done.relayed
        if not log.get("client_disconnected"):
            log["error"] = "server_shutting_down"
        if done.usage:
            return (CLIENT_CLOSED if log.get("client_disconnected") else ServerShuttingDown.status), done.usage
        log["tokens_estimated"] = True
        usage = {"prompt_tokens": 0, "completion_tokens": done.relayed}
        return (CLIENT_CLOSED if log.get("client_disconnected") else ServerShuttingDown.status), usage

    # -- embeddings -------------------------------------------------------------
    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = parse_json_object(await read_body(receive))
        validate(EMBEDDING_REQUEST, body)
        state = scope["state"]
        state["log"]["model"] = state["requested_model"] = body["model"]
        chain = resolve_chain(self.config, body)
        if self.gate_all or "key" in state:
            served: Served[JSON] = await self.gate.embed(
                state, body, chain, lambda: self._bounded(self.router.run(chain, body, "embedding", _embed)))
        else:
            served = await self._bounded(self.router.run(chain, body, "embedding", _embed))
        result = served.result
        result["model"] = served.deployment.name
        if body.get("encoding_format") == "base64":
            for item in result.get("data", []):
                if isinstance(item.get("embedding"), list):
                    vector = item["embedding"]
                    item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        cost = self._account("embeddings", state, served, result.get("usage"), started)
        await send_json(send, result, headers=self._headers(served, started, cost))

    # -- models, health, metrics ------------------------------------------------
    def _ready_models(self) -> list[JSON]:
        ready = {
            name: deployments[0].provider
            for name, deployments in self.config.models.items()
            if any(not self.config.providers[d.provider].not_ready for d in deployments)
        }
        data = [{"id": name, "object": "model", "created": 0, "owned_by": owner} for name, owner in ready.items()]
        data += [
            {"id": name, "object": "model", "created": 0, "owned_by": "omni-llm"}
            for name, members in self.config.strategies.items()
            if any(m in ready for m in members)
        ]
        return data

    async def list_models(self, request: Request) -> Response:
        data = self._ready_models()
        if "key" in request.scope["state"]:
            data = self.gate.visible_models(request.scope["state"], data)
        return _json({"object": "list", "data": data})

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for entry in self._ready_models():
            if entry["id"] == model_id:
                return _json(entry)
        provider, slash, upstream = model_id.partition("/")
        cfg = self.config.providers.get(provider)
        if slash and upstream and cfg is not None and not cfg.not_ready:
            return _json({"id": model_id, "object": "model", "created": 0, "owned_by": provider})
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(self.router.health), media_type="text/plain; version=0.0.4")

    # -- helpers ----------------------------------------------------------------
    async def _bounded(self, call: Awaitable[Any]) -> Any:
        limit = self.config.server.request_timeout_s
        try:
            async with asyncio.timeout(limit):
                return await call
        except TimeoutError:
            raise UpstreamTimeout(f"request did not complete within {limit:g} s") from None

    def _headers(self, served: Served[Any], started: float, cost: float | None) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-omni-provider", served.provider.name.encode()),
            (b"x-omni-upstream-model", served.deployment.model.encode()),
            (b"x-omni-latency-ms", str(round((time.perf_counter() - started) * 1000)).encode()),
            (b"x-omni-attempts", ", ".join(served.attempts).encode()),
            (b"x-omni-route-reason", served.reason.encode()),
        ]
        if cost is not None:
            headers.append((b"x-omni-cost-usd", f"{cost:.8f}".encode()))
        if served.dropped:
            headers.append((b"x-omni-dropped-params", ",".join(served.dropped).encode()))
        return headers

    def _account(
        self, route: str, state: dict[str, Any], served: Served[Any], usage: JSON | None, started: float,
        status: int = 200,
    ) -> float | None:
        deployment, provider = served.deployment, served.provider.name
        prompt = int((usage or {}).get("prompt_tokens") or 0)
        completion = int((usage or {}).get("completion_tokens") or 0)
        cost = deployment.cost(prompt, completion) if usage else None
        if "cache_hit" in state:
            cost = 0.0  # answered from the cache: nothing was spent upstream
        self.metrics.observe(route, deployment.name, provider, status, time.perf_counter() - started)
        self.metrics.account(deployment.name, provider, usage, cost)
        state["log"].update(
            model=deployment.name, provider=provider, upstream_model=deployment.model,
            prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, route_reason=served.reason,
        )
        return cost


async def _chat(provider: Provider, request: JSON, deployment: Any) -> JSON:
    return await provider.chat(request, deployment)


async def _embed(provider: Provider, request: JSON, deployment: Any) -> JSON:
    return await provider.embed(request, deployment)


class LazyEndpoint:
    """A POST route whose module is imported on its first request: `factory(gateway)` builds the ASGI app.

    Keeps `import proxy.app` (and start-up) free of ingress and extension modules.
    """

    def __init__(self, gateway: Gateway, target: str) -> None:
        self.gateway = gateway
        self.target = target
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            module, _, name = self.target.partition(":")
            self._app = getattr(importlib.import_module(module), name)(self.gateway)
        await self._app(scope, receive, send)


class Observed:
    """Traces and CloudWatch EMF lines around a model route; built only when either is on."""

    def __init__(self, app: ASGIApp, gateway: Gateway, operation: str) -> None:
        self.app = app
        self.gateway = gateway
        self.operation = operation
        self._types = {name: p.type for name, p in gateway.config.providers.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = [0]

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        tracing, emf = self.gateway.tracing, self.gateway.emf
        span = token = None
        if tracing is not None:
            span, token = tracing.start_request(scope, self.operation)
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            state = scope["state"]
            final = status[0] or 499  # no answer started: the client went away first
            if tracing is not None:
                tracing.end_request(span, token, state, final, self._types)  # type: ignore[arg-type]
            if emf is not None:
                emf.record(state, final, (time.perf_counter() - started) * 1000)


# More ingress APIs (CONTRACT §15, legacy completions): path -> "module:factory", POST only.
INGRESS_ROUTES = {
    "/messages": "proxy.ingress.messages_api:build",
    "/messages/count_tokens": "proxy.ingress.messages_api:build_count_tokens",
    "/responses": "proxy.ingress.responses_api:build",
    "/completions": "proxy.ingress.completions_api:build",
    "/invoke": "proxy.ingress.invoke_api:build",  # the seed API (CONTRACT §14)
}


# Cohere-compatible rerank (CONTRACT §10) on `mode: rerank` models; proxy/rerank.py loads on first use.
RERANK_ROUTE = "proxy.rerank:build"
_OPERATIONS = {"/embeddings": "embeddings", "/rerank": "rerank"}  # the trace operation of a hot route (else chat)


# The admin API of keys and usage (CONTRACT §12): master keys only; proxy/keys/admin.py loads on first use.
ADMIN_ROUTES = (
    ("/admin/keys", "POST", "proxy.keys.admin:create_key"),
    ("/admin/keys", "GET", "proxy.keys.admin:list_keys"),
    ("/admin/keys/{key_id}", "DELETE", "proxy.keys.admin:revoke_key"),
    ("/admin/usage", "GET", "proxy.keys.admin:usage"),
)


def lazy_route(target: str) -> Callable[[Request], Awaitable[Response]]:
    """A route handler (`module:function` taking the gateway and the request) imported on its first request,
    so extensions stay out of `import proxy.app`."""
    handler: Callable[..., Awaitable[Response]] | None = None

    async def endpoint(request: Request) -> Response:
        nonlocal handler
        if handler is None:
            module, _, name = target.partition(":")
            handler = getattr(importlib.import_module(module), name)
        return await handler(request.app.state.gateway, request)

    return endpoint


# The Lambda Web Adapter's default pass-through path for non-HTTP events (AWS_LWA_PASS_THROUGH_PATH).
EVENTS_PATH = "/events"


# OpenAI-compatible files and vector stores over the RAG engine (CONTRACT §10).
_RAG_ROUTES = (
    ("POST", "/files", "create_file"), ("GET", "/files", "list_files"), ("GET", "/files/{file_id}", "get_file"),
    ("GET", "/files/{file_id}/content", "file_content"), ("DELETE", "/files/{file_id}", "delete_file"),
    ("POST", "/vector_stores", "create_vector_store"), ("GET", "/vector_stores", "list_vector_stores"),
    ("GET", "/vector_stores/{vector_store_id}", "get_vector_store"),
    ("DELETE", "/vector_stores/{vector_store_id}", "delete_vector_store"),
    ("POST", "/vector_stores/{vector_store_id}/files", "create_vector_store_file"),
    ("GET", "/vector_stores/{vector_store_id}/files", "list_vector_store_files"),
    ("GET", "/vector_stores/{vector_store_id}/files/{file_id}", "get_vector_store_file"),
    ("DELETE", "/vector_stores/{vector_store_id}/files/{file_id}", "delete_vector_store_file"),
    ("POST", "/vector_stores/{vector_store_id}/search", "search_vector_store"),
)


def create_app(config: Config | None = None, tracing: Any = _FROM_ENV) -> Starlette:
    """`tracing`: a `proxy.otel.Tracing` (tests pass one with an in-memory exporter); default from OTEL_*."""
    config = config or load_config()
    gateway = Gateway(config, tracing=tracing)

    async def not_found(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            error: ProxyError = InvalidRequest(f"Method {request.method} is not allowed on {request.url.path}",
                                               status=405, code="method_not_allowed")
        else:
            error = NotFound(f"Unknown route: {request.method} {request.url.path}")
        if request.url.path.startswith(ANTHROPIC_PATHS):  # Anthropic clients get Anthropic's error shape
            return _json(error_body_for(request.url.path, error), error.status)
        return gateway.error_response(error)

    hot: dict[str, ASGIApp] = {"/chat/completions": Endpoint(gateway, "chat", gateway.chat_completions),
                                               "/embeddings": Endpoint(gateway, "embeddings", gateway.embeddings)}
    hot.update({path: LazyEndpoint(gateway, target) for path, target in INGRESS_ROUTES.items()})
    hot["/rerank"] = LazyEndpoint(gateway, RERANK_ROUTE)
    if gateway.tracing is not None or gateway.emf is not None:
        hot = {path: Observed(app, gateway, _OPERATIONS.get(path, "chat"))  # type: ignore[misc]
               for path, app in hot.items()}
    # POSTs to these skip Starlette entirely (the middleware dispatches them); other
    # methods reach the same endpoints through Starlette's router, which answers 405.
    fast_routes = {prefix + path: endpoint for path, endpoint in hot.items() for prefix in ("/v1", "")}
    fast_routes["/v2/rerank"] = hot["/rerank"]  # the Cohere v2 SDK's path (its base_url is the gateway root)
    routes = [Route(path, endpoint, methods=["POST"]) for path, endpoint in fast_routes.items()]
    routes += [
        Route(prefix + path, gateway.errors_rendered(handler), methods=["GET"])
        for path, handler in (("/models", gateway.list_models), ("/models/{model_id:path}", gateway.get_model))
        for prefix in ("/v1", "")
    ]
    routes += [Route("/health", gateway.health, methods=["GET"]), Route("/metrics", gateway.metrics_endpoint, methods=["GET"])]
    # MCP (CONTRACT §11): the tool listing, and the gateway as one MCP server (streamable HTTP, gateway auth).
    routes += [Route(prefix + "/mcp/tools", gateway.errors_rendered(lazy_route("proxy.mcp.api:list_tools")),
                     methods=["GET"]) for prefix in ("/v1", "")]
    routes += [Route("/mcp", LazyEndpoint(gateway, "proxy.mcp.server:create_mcp_app"), methods=["GET", "POST", "DELETE"])]
    routes += [Route(path, gateway.errors_rendered(lazy_route(target)), methods=[method])
               for path, method, target in ADMIN_ROUTES]
    # The web console (proxy/console, loaded on first use): static pages plus its health JSON.
    routes += [Route(path, gateway.errors_rendered(lazy_route(target)), methods=["GET"])
               for path, target in (("/ui", "proxy.console.routes:static"), ("/ui/{name}", "proxy.console.routes:static"),
                                    ("/admin/health", "proxy.console.routes:health"))]
    routes += [
        Route(prefix + path, gateway.errors_rendered(lazy_route(f"proxy.rag.api:{name}")), methods=[method])
        for method, path, name in _RAG_ROUTES
        for prefix in ("/v1", "")
    ]

    # S3-triggered ingestion (docs/rag.md): the Lambda Web Adapter posts non-HTTP events to its pass-through
    # path with no key, so inside Lambda the route is open (an event is only a hint, checked against S3:
    # proxy/rag/s3events.py); anywhere else it takes the gateway's key like every route.
    events_path = os.environ.get("AWS_LWA_PASS_THROUGH_PATH") or EVENTS_PATH
    in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("AWS_LWA_PASS_THROUGH_PATH"))
    routes += [Route(events_path, gateway.errors_rendered(lazy_route("proxy.rag.s3events:events_route")),
                     methods=["POST"])]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if gateway.gate is not None:
            await gateway.gate.start()  # with Redis: listen for other instances' cooldowns
        shared, sharing = None, None
        if config.state is not None and config.state.redis_url:  # routing figures shared by every instance
            from proxy.keys.redis import connect
            from proxy.shared_routing import SharedRouting

            shared = SharedRouting(gateway.router.stats, connect(config.state.redis_url))
            sharing = asyncio.get_running_loop().create_task(shared.run())
        yield edge_settings(config.server)  # read by `serve`'s HTTP protocol (proxy/edge.py)
        if sharing is not None and shared is not None:
            sharing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sharing
            await shared.aclose()
        if gateway.gate is not None:
            await gateway.gate.aclose()
        await gateway.pool.aclose()
        if gateway.tracing is not None:
            gateway.tracing.shutdown()
        if gateway.mcp is not None:
            await gateway.mcp.aclose()
        if gateway.rag is not None:
            await gateway.rag.aclose()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(GatewayMiddleware, server=config.server, fast_routes=fast_routes,
                               virtual_keys=gateway.gate.keys if gateway.gate is not None else None,
                               open_paths=(events_path,) if in_lambda else ())],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `uvicorn proxy.app:app`: built from the resolved config on first access
        return create_app()
    raise AttributeError(name)
