"""The HTTP/1.1 protocol `omni-llm serve` runs: uvicorn's httptools protocol with slow-client defences.

uvicorn bounds the idle time between keep-alive requests, but not how long a
client may take to send its request headers, and its `limit_concurrency`
answers 503 to every request over the limit — `/health` included. Here:

- the request line and headers must arrive within `server.header_timeout_s`
  of the connection opening (or of the previous response, on keep-alive):
  else 408 (or a silent close when nothing was sent) — slowloris;
- with more than `server.max_connections` connections open, the one that has
  waited longest for its headers (or sat idle longest) is closed to make room,
  so trickling sockets cannot starve real requests or `/health`; with none to
  shed, the new connection is closed. The limit is also capped below the
  process's file-descriptor limit (which `serve` raises to its hard limit).

A stalled request *body* is the middleware's job (408 JSON, `body_timeout_s`). The protocol marks a
request whose body arrived whole before the app ran (`BODY_COMPLETE` in its scope: a small request
in one packet, the usual case), so the middleware arms no stall timer for it.
Settings reach the protocol through the lifespan state (`EDGE_STATE_KEY`),
which uvicorn hands every protocol instance. The protocol class lives in
`proxy.edge_protocol` (it imports uvicorn; the app, and Lambda, need not).
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from proxy.config import ServerConfig

EDGE_STATE_KEY = "omni_llm_edge"
BODY_COMPLETE = "omni_llm.body_complete"  # scope key: the request body is already buffered in full
PROTOCOL = "proxy.edge_protocol:GuardedHttpToolsProtocol"
_FD_RESERVE = 64  # descriptors kept for upstream connections, logs, config reads


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (what the image/host allows); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def edge_settings(server: ServerConfig) -> dict[str, Any]:
    """The protocol's settings, for the lifespan state."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    max_connections = server.max_connections
    if soft != resource.RLIM_INFINITY:
        max_connections = max(1, min(max_connections, soft - _FD_RESERVE))
    return {EDGE_STATE_KEY: (server.header_timeout_s, max_connections)}
