"""Per-key rpm and tpm as token buckets, in process or in Redis (one Lua script, one round trip).

A bucket holds up to `rpm` requests (or `tpm` tokens) and refills at that rate
per minute, so a burst of `rpm` passes at once and then one more per
60/rpm s. Tokens are estimated before the call and corrected after it
(`correct`), so a bucket may briefly go negative: that debt is waited off like
any other. With Redis the clock is Redis's own (`TIME`), so every instance
agrees on it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from proxy.keys.redis import PREFIX, unavailable


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining_requests: int
    remaining_tokens: int
    retry_after: float  # seconds until the request would pass (0 when allowed)


def _take(r: float, t: float, elapsed: float, rpm: int, tpm: int, cost: int) -> tuple[bool, float, float, float]:
    """The bucket arithmetic, shared by the in-process limiter and (in Lua) Redis."""
    if rpm:
        r = min(rpm, r + elapsed * rpm / 60)
    if tpm:
        t = min(tpm, t + elapsed * tpm / 60)
    wait = 0.0
    if rpm and r < 1:
        wait = (1 - r) * 60 / rpm
    need = min(cost, tpm)  # a request larger than the whole bucket passes when the bucket is full
    if tpm and t < need:
        wait = max(wait, (need - t) * 60 / tpm)
    if wait == 0:
        r, t = (r - 1 if rpm else r), (t - cost if tpm else t)
    return wait == 0, r, t, wait


class MemoryLimiter:
    """Buckets in this process (one gateway instance)."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}  # key id -> [requests, tokens, last refill (monotonic)]

    async def acquire(self, key_id: str, rpm: int, tpm: int, cost: int) -> Verdict:
        now = time.monotonic()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = [float(rpm), float(tpm), now]
        ok, bucket[0], bucket[1], wait = _take(bucket[0], bucket[1], now - bucket[2], rpm, tpm, cost)
        bucket[2] = now
        return Verdict(ok, max(0, int(bucket[0])), max(0, int(bucket[1])), wait)

    def correct(self, key_id: str, tpm: int, delta: int) -> None:
        """`delta` more tokens were used than estimated (negative: fewer)."""
        bucket = self._buckets.get(key_id)
        if bucket is not None and tpm and delta:
            bucket[1] -= delta

    async def aclose(self) -> None:
        return None


_ACQUIRE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r, t, ts = tonumber(s[1]) or rpm, tonumber(s[2]) or tpm, tonumber(s[3]) or now
local elapsed = math.max(0, now - ts)
if rpm > 0 then r = math.min(rpm, r + elapsed * rpm / 60) end
if tpm > 0 then t = math.min(tpm, t + elapsed * tpm / 60) end
local wait = 0
if rpm > 0 and r < 1 then wait = (1 - r) * 60 / rpm end
local need = math.min(cost, tpm)
if tpm > 0 and t < need then wait = math.max(wait, (need - t) * 60 / tpm) end
if wait == 0 then
  if rpm > 0 then r = r - 1 end
  if tpm > 0 then t = t - cost end
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(t), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return {wait == 0 and 1 or 0, tostring(r), tostring(t), tostring(wait)}
"""


class RedisLimiter:
    """Buckets in Redis: every instance sharing the Redis enforces one limit together."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._pending: set[asyncio.Task[Any]] = set()

    async def acquire(self, key_id: str, rpm: int, tpm: int, cost: int) -> Verdict:
        try:
            reply = await self._acquire(keys=[f"{PREFIX}rl:{key_id}"], args=[rpm, tpm, cost])
        except Exception as exc:  # redis.RedisError and connection errors: the driver is imported lazily
            raise unavailable("rate-limit", exc) from exc
        return self.verdict(reply)

    def queue(self, pipe: Any, key_id: str, rpm: int, tpm: int, cost: int) -> None:
        """The same check as `acquire`, as one command of a pipeline (see `Gate`: one round trip with the budget)."""
        pipe.evalsha(self._acquire.sha, 1, f"{PREFIX}rl:{key_id}", rpm, tpm, cost)

    async def load(self) -> None:
        await self._client.script_load(_ACQUIRE)

    @staticmethod
    def verdict(reply: Any) -> Verdict:
        ok, r, t, wait = reply
        return Verdict(bool(ok), max(0, int(float(r))), max(0, int(float(t))), float(wait))

    def correct(self, key_id: str, tpm: int, delta: int) -> None:
        if tpm and delta:
            task = asyncio.get_running_loop().create_task(
                self._client.hincrbyfloat(f"{PREFIX}rl:{key_id}", "t", -delta))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
