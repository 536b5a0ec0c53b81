"""Routing figures shared by every instance through Redis (`state.redis_url`, CONTRACT §16).

Each gateway keeps its latency averages and in-flight counts in process (the
router reads them on every request, so they must cost no round trip), and a
background task publishes them to Redis every `period_s` — one hash per
instance, `omni:routing:<instance>`, expiring after `ttl_s` so a dead instance
drops out — and folds in the other instances' hashes: their latencies averaged
with its own, their in-flight counts added to its own. So `latency` orders by
what every instance measured and `least_busy` counts every instance's
requests, at most `period_s` old.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from proxy.ranking import Stats

log = logging.getLogger("omni.router")
_PREFIX = b"omni:routing:"


class SharedRouting:
    def __init__(self, stats: Stats, redis: Any, period_s: float = 1.0, ttl_s: float = 10.0,
                 instance: str | None = None) -> None:
        self.stats = stats
        self.redis = redis
        self.period_s = period_s
        self.ttl_s = ttl_s
        self.key = _PREFIX + (instance or uuid.uuid4().hex).encode()

    async def sync_once(self) -> None:
        mine = self.stats.snapshot()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            if mine:
                pipe.hset(self.key, mapping=mine)
                pipe.pexpire(self.key, int(self.ttl_s * 1000))
            await pipe.execute()
        others = []
        async for key in self.redis.scan_iter(match=_PREFIX + b"*", count=100):
            if key != self.key:
                snapshot = await self.redis.hgetall(key)
                others.append({k.decode(): v.decode() for k, v in snapshot.items()})
        self.stats.absorb(others)

    async def run(self) -> None:
        """Until cancelled; a Redis failure is logged and tried again next period (routing goes on locally)."""
        while True:
            try:
                await self.sync_once()
            except Exception as exc:  # Redis down or slow: routing keeps its own figures
                log.warning("sharing routing figures through Redis failed: %s", exc)
            await asyncio.sleep(self.period_s)

    async def aclose(self) -> None:
        try:
            await self.redis.delete(self.key)
        finally:
            await self.redis.aclose()
