"""uvicorn's httptools protocol with the slow-client defences described in `proxy.edge`."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.config import ServerConfig
from proxy.edge import BODY_COMPLETE, EDGE_STATE_KEY

_TIMEOUT_BODY = b'{"error":{"message":"The request headers were not received in time.","type":"invalid_request_error","param":null,"code":"request_timeout"}}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        defaults = ServerConfig()
        self._header_timeout, self._max_connections = app_state.get(
            EDGE_STATE_KEY, (defaults.header_timeout_s, defaults.max_connections))
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # waiting for a request's headers (new or keep-alive)
        self._begun = False  # some bytes of the current request arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()
        if len(self.connections) > self._max_connections:
            self._shed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        self._wait_for_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.scope[BODY_COMPLETE] = True  # type: ignore[literal-required]
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._waiting_since = self.loop.time()  # idle keep-alive: uvicorn's own timer closes it

    # -- internals -------------------------------------------------------------
    def _wait_for_headers(self) -> None:
        if self._header_timer is None:
            self._waiting_since = self.loop.time()
            self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def _stop_waiting(self) -> None:
        self._begun = False
        self._waiting_since = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            if self._begun:
                self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

    def _shed(self) -> None:
        """Over the limit: close the connection that has waited longest for headers (else this one)."""
        victim: GuardedHttpToolsProtocol = self
        oldest = self._waiting_since
        for conn in self.connections:
            since = getattr(conn, "_waiting_since", None)
            if since is not None and conn is not self and (oldest is None or since < oldest):
                victim, oldest = conn, since
        victim._stop_waiting()
        victim.transport.close()
