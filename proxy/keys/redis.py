"""The Redis connection shared by limits, budgets, cache and deployment health (extra `redis`)."""

from __future__ import annotations

from typing import Any

PREFIX = "omni:"


def connect(url: str) -> Any:
    """A redis-py asyncio client (a connection pool; connects on first command)."""
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:
        raise RuntimeError("state.redis_url is set: pip install 'omni-llm[redis]'") from exc
    return aioredis.from_url(url, decode_responses=False)
