"""Pure ASGI middleware: request id, authentication, body-size limit, access log, last-resort 500.

One middleware, not a stack of `BaseHTTPMiddleware`s: it adds no task or
copy per request and keeps context variables intact.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import AuthenticationFailed, ProxyError, RequestTooLarge

access_log = logging.getLogger("omni.access")
log = logging.getLogger("omni")

_OPEN_PATHS = frozenset({"/health"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def error_response_parts(error: ProxyError, request_id: str) -> tuple[dict[str, Any], list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(error.to_dict())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        *((k.encode(), v.encode()) for k, v in error.headers().items()),
    ]
    return {"type": "http.response.start", "status": error.status, "headers": headers}, headers, body


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, api_keys: tuple[str, ...], max_request_bytes: int) -> None:
        self.app = app
        self._keys = [k.encode() for k in api_keys if k]
        self._max = max_request_bytes

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
        status_holder = [0]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            error = self._check(scope, headers)
            if error is not None:
                await self._send_error(send, error, request_id)
                status_holder[0] = error.status
                return
            await self.app(scope, self._limited(receive, headers), send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if status_holder[0] == 0:
                await self._send_error(send, ProxyError("The server had an error processing the request."), request_id)
                status_holder[0] = 500
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

    def _check(self, scope: Scope, headers: dict[bytes, bytes]) -> ProxyError | None:
        if self._keys and scope["path"] not in _OPEN_PATHS and scope["method"] != "OPTIONS":
            presented = headers.get(b"x-api-key") or b""
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                presented = auth[7:].strip()
            # Compare against every key so timing does not reveal which (or whether one) matched.
            matched = False
            for key in self._keys:
                matched |= hmac.compare_digest(presented, key)
            if not matched:
                which = "Incorrect API key provided." if presented else "Missing API key: send 'Authorization: Bearer KEY'."
                return AuthenticationFailed(which)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max:
            return RequestTooLarge(f"Request body exceeds the limit of {self._max} bytes.")
        return None

    def _limited(self, receive: Receive, headers: dict[bytes, bytes]) -> Receive:
        if b"content-length" in headers:
            return receive  # already checked; the server enforces the declared length
        limit = self._max
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            return message

        return receive_limited

    @staticmethod
    async def _send_error(send: Send, error: ProxyError, request_id: str) -> None:
        start, _, body = error_response_parts(error, request_id)
        await send(start)
        await send({"type": "http.response.body", "body": body})
