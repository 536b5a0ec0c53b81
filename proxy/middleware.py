"""Pure ASGI middleware: request id, CORS, authentication, body-size limit and stall timeout, header
sanitising, access log, last-resort 500.

One middleware, not a stack of `BaseHTTPMiddleware`s: it adds no task or
copy per request and keeps context variables intact.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from typing import Protocol

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.config import ServerConfig
from proxy.edge import BODY_COMPLETE
from proxy.errors import AuthenticationFailed, ProxyError, RequestTimeout, RequestTooLarge, error_body_for

access_log = logging.getLogger("omni.access")
log = logging.getLogger("omni")

# The console's static files (proxy/console) hold no data: the login page must load without a key.
_OPEN_PATHS = frozenset({"/health", "/ui", "/ui/", "/ui/index.html", "/ui/app.js", "/ui/style.css"})
_VIRTUAL = ProxyError("virtual key lookup pending")  # sentinel: `_check` needs the async key lookup


class VirtualKeys(Protocol):
    async def resolve(self, token: bytes) -> object: ...


def _presented(headers: dict[bytes, bytes]) -> bytes:
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return headers.get(b"x-api-key") or b""


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Bytes that must never reach a response header (header injection / a server that fails mid-write).
_BODY_STALLED = object()  # the cancel message of a body read's timer
_UNSAFE_HEADER = re.compile(rb"[\x00-\x1f\x7f]")


def safe_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Every response header value with control bytes percent-encoded (`\\r` -> `%0D`).

    Values can echo what a client sent (a `PROVIDER/MODEL` name, an unknown param's
    name): one check over all values, a rewrite only when something is found.
    """
    if not _UNSAFE_HEADER.search(b"".join([value for _, value in headers])):
        return headers
    return [(name, _UNSAFE_HEADER.sub(lambda m: b"%%%02X" % m[0][0], value)) for name, value in headers]


async def send_json(send: Send, obj: object, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole JSON response in two ASGI messages."""
    body = orjson.dumps(obj)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += headers
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def error_headers(error: ProxyError) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in error.headers().items()]


_EXPOSE = b"x-request-id, x-omni-provider, x-omni-upstream-model, x-omni-latency-ms, x-omni-cost-usd, " \
          b"x-omni-dropped-params, x-omni-attempts, x-omni-route-reason, x-omni-structured-repairs"
_PREFLIGHT_MAX_AGE = b"600"


class GatewayMiddleware:
    """The one layer in front of every route.

    Also CORS (origins from `server.cors_origins`; `*` allows any) and, for
    speed, the dispatch of POSTs to the hot routes (`fast_routes`, exact paths),
    which skip Starlette's routing and exception layers.
    """

    def __init__(self, app: ASGIApp, server: ServerConfig, fast_routes: dict[str, ASGIApp] | None = None,
                 virtual_keys: VirtualKeys | None = None, open_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self._open = _OPEN_PATHS | frozenset(open_paths)  # plus e.g. the S3 events route (no key)
        self._keys = [k.encode() for k in server.api_keys if k]
        # Virtual keys (proxy/keys) are looked up only for a token that is no master key and looks like one.
        self._virtual = virtual_keys
        self._max = server.max_request_bytes
        self._any_origin = "*" in server.cors_origins
        self._origins = frozenset(o.encode() for o in server.cors_origins)
        self._fast = fast_routes or {}
        self._body_timeout = server.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["log"] = log_fields = {}
        state["headers"] = headers
        status_holder = [0]
        # Headers every answer carries; steps may add to it (rate-limit headers, also on errors).
        state["response_headers"] = extra = [(b"x-request-id", request_id.encode())]
        origin = headers.get(b"origin")
        if origin is not None:
            extra += self._cors(origin)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = safe_headers([*message.get("headers", []), *extra])
            await send(message)

        try:
            if origin is not None and scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                await self._preflight(send_wrapper, origin, headers)
                return
            error = self._check(scope, headers)
            if error is _VIRTUAL:
                error = await self._check_virtual(state, headers)
            if error is not None:
                await send_json(send_wrapper, error_body_for(scope["path"], error, request_id), error.status,
                                error_headers(error))
                return
            route = self._fast.get(scope["path"]) if scope["method"] == "POST" else None
            await (route or self.app)(scope, self._guarded(scope, receive, headers), send_wrapper)
        except ProxyError as error:  # from the body reader (413, 408) under a route that does not render it
            if status_holder[0] == 0:
                log_fields["error"] = error.message
                await send_json(send_wrapper, error_body_for(scope["path"], error), error.status, error_headers(error))
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if status_holder[0] == 0:
                error = ProxyError("The server had an error processing the request.")
                await send_json(send_wrapper, error_body_for(scope["path"], error, request_id), error.status)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                entry = {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status_holder[0],
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    **log_fields,
                }
                access_log.info(orjson.dumps(entry).decode())

    # -- CORS ---------------------------------------------------------------------
    def _allowed(self, origin: bytes) -> bytes | None:
        if self._any_origin:
            return b"*"
        return origin if origin in self._origins else None

    def _cors(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        allowed = self._allowed(origin)
        if allowed is None:
            return [(b"vary", b"Origin")]
        return [(b"access-control-allow-origin", allowed), (b"access-control-expose-headers", _EXPOSE),
                (b"vary", b"Origin")]

    async def _preflight(self, send: Send, origin: bytes, headers: dict[bytes, bytes]) -> None:
        if self._allowed(origin) is None:
            status, body, allow = 400, b"Disallowed CORS origin", []
        else:
            status, body = 200, b"OK"
            allow = [(b"access-control-allow-methods", b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
                     (b"access-control-max-age", _PREFLIGHT_MAX_AGE)]
            requested = headers.get(b"access-control-request-headers")
            if requested:
                allow.append((b"access-control-allow-headers", requested))
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()), *allow]})
        await send({"type": "http.response.body", "body": body})

    def _check(self, scope: Scope, headers: dict[bytes, bytes]) -> ProxyError | None:
        if self._keys and scope["path"] not in self._open and scope["method"] != "OPTIONS":
            presented = headers.get(b"x-api-key") or b""
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                presented = auth[7:].strip()
            # Compare against every key so timing does not reveal which (or whether one) matched.
            matched = False
            for key in self._keys:
                matched |= hmac.compare_digest(presented, key)
            if not matched:
                if self._virtual is not None and presented.startswith(b"sk-omni-"):
                    return _VIRTUAL
                which = "Incorrect API key provided." if presented else "Missing API key: send 'Authorization: Bearer KEY'."
                return AuthenticationFailed(which)
        elif self._virtual is not None and scope["path"] not in self._open and scope["method"] != "OPTIONS":
            # No master keys (an open, loopback gateway) but a `state` section: virtual keys still identify.
            if _presented(headers).startswith(b"sk-omni-"):
                return _VIRTUAL
        return self._check_size(headers)

    def _check_size(self, headers: dict[bytes, bytes]) -> ProxyError | None:
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max:
            return RequestTooLarge(f"Request body exceeds the limit of {self._max} bytes.")
        return None

    async def _check_virtual(self, state: dict[str, object], headers: dict[bytes, bytes]) -> ProxyError | None:
        assert self._virtual is not None
        try:
            state["key"] = await self._virtual.resolve(_presented(headers))
        except ProxyError as error:
            return error
        return self._check_size(headers)

    def _guarded(self, scope: Scope, receive: Receive, headers: dict[bytes, bytes]) -> Receive:
        """`receive` with the body-size limit (for chunked bodies; a declared length was checked) and a
        stall timeout on each body read (408); once the body is complete, `receive` as it is."""
        length = headers.get(b"content-length")
        if length == b"0" or (length is None and b"transfer-encoding" not in headers):
            return receive  # no body to wait for
        if length is not None and scope.get(BODY_COMPLETE):
            return receive  # `omni-llm serve`'s protocol already holds the whole (declared, checked) body
        limit = self._max if length is None else None
        timeout = self._body_timeout
        seen = 0
        complete = False

        async def receive_guarded() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()
            # A bare timer, not asyncio.timeout(): half the CPU on the hot path (~1.5 vs ~3.5 µs).
            task = asyncio.current_task()
            timer = asyncio.get_running_loop().call_later(timeout, task.cancel, _BODY_STALLED)  # type: ignore[union-attr]
            try:
                message = await receive()
            except asyncio.CancelledError as exc:
                if exc.args[:1] != (_BODY_STALLED,):
                    raise
                task.uncancel()  # type: ignore[union-attr]
                raise RequestTimeout(f"The request body stalled for more than {timeout:g} s.") from None
            finally:
                timer.cancel()
            if message["type"] == "http.request":
                complete = not message.get("more_body")
                if limit is not None:
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            return message

        return receive_guarded
