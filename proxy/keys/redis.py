"""The Redis connection shared by limits, budgets, cache and deployment health (extra `redis`)."""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

from proxy.errors import ServiceUnavailable

PREFIX = "omni:"


MAX_CONNECTIONS = 64
WAIT_FOR_CONNECTION_S = 5.0


def connect(url: str) -> Any:
    """A redis-py asyncio client; connects on first command. A burst waits for one of the pool's
    connections (BlockingConnectionPool) instead of failing with "too many connections"."""
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:
        raise RuntimeError("state.redis_url is set: pip install 'omni-llm[redis]'") from exc
    if sys.version_info < (3, 12):
        _keep_cancellations()
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS,
                                                    timeout=WAIT_FOR_CONNECTION_S)
    return aioredis.Redis(connection_pool=pool)


def unavailable(what: str, exc: Exception) -> ServiceUnavailable:
    """Redis down: limits and budgets fail closed with a clear 503 (the cache just misses)."""
    return ServiceUnavailable(f"The gateway's {what} store (Redis) is unavailable: {type(exc).__name__}",
                              code="state_unavailable")


async def _wait_for(awaitable: Any, timeout: float | None) -> Any:
    """Python 3.12's `asyncio.wait_for`: the awaitable under `asyncio.timeout`."""
    async with asyncio.timeout(timeout):
        return await awaitable


def _keep_cancellations() -> None:
    """Python 3.11's `asyncio.wait_for` loses a cancellation that arrives just as the awaited call
    completes (CPython gh-86296, fixed in 3.12), and redis-py sends every command through it once
    `socket_timeout` is set (its default since 8.0). About one cancel in two that landed on a Redis
    command was lost: a request whose client went away could go on to call the upstream, and shutdown waited
    forever for a background loop that never saw its cancel. redis-py's connection module gets 3.12's
    `wait_for` instead (an asyncio module of its own; the real one is untouched)."""
    from redis.asyncio import connection

    if getattr(connection.asyncio, "wait_for", None) is _wait_for:
        return
    patched = types.ModuleType("asyncio")
    patched.__dict__.update(asyncio.__dict__)
    patched.wait_for = _wait_for  # type: ignore[attr-defined]
    connection.asyncio = patched  # type: ignore[attr-defined]
