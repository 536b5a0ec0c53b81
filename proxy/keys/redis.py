"""The Redis connection shared by limits, budgets, cache and deployment health (extra `redis`)."""

from __future__ import annotations

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
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS,
                                                    timeout=WAIT_FOR_CONNECTION_S)
    return aioredis.Redis(connection_pool=pool)


def unavailable(what: str, exc: Exception) -> ServiceUnavailable:
    """Redis down: limits and budgets fail closed with a clear 503 (the cache just misses)."""
    return ServiceUnavailable(f"The gateway's {what} store (Redis) is unavailable: {type(exc).__name__}",
                              code="state_unavailable")
