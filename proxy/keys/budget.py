"""Budgets: reserve before the call, settle after it.

A request reserves its worst-case cost (prompt estimate × input price +
max_tokens × output price). It is admitted only while the period's spend
plus every reservation in flight plus its own fits the budget — or, so that a
small remainder still serves one request at a time, when nothing else is in
flight and spend is under the budget. Hence a burst of concurrent requests
overspends by at most one request's cost. Settling replaces the reservation
with the real cost. Spend of the current period is loaded once from the
usage log, then kept here (one instance) or in Redis (shared, atomic Lua).

In Redis each reservation is also a lease (a sorted-set member scored by its
expiry, the gateway's whole-request deadline plus a margin): an instance that
dies mid-request never settles, so the next reservation on that key reclaims
expired leases instead of letting them hold the budget until the period ends.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proxy.errors import BudgetExceeded
from proxy.keys.redis import PREFIX, unavailable

PERIODS = ("daily", "weekly", "monthly")


def period_bounds(period: str | None, now: float) -> tuple[float, float | None]:
    """(start, end) of the budget period containing `now`, in Unix seconds (UTC); lifetime: (0, None)."""
    if period is None:
        return 0.0, None
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start, end = day, day + dt.timedelta(days=1)
    elif period == "weekly":
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start + dt.timedelta(days=calendar.monthrange(start.year, start.month)[1])
    return start.timestamp(), end.timestamp()


@dataclass
class Reservation:
    key_id: str
    start: float
    amount: float
    lease: str = ""  # the Redis lease member ("id:amount"); empty in memory


def refuse(spent: float, budget: float, end: float | None, now: float) -> BudgetExceeded:
    if spent >= budget:
        when = f"; it renews in {int(end - now)} s" if end else ""
        return BudgetExceeded(f"This key's budget of ${budget:g} is spent (${spent:.6f}){when}.",
                              retry_after=(end - now) if end else None)
    return BudgetExceeded(f"This key's remaining budget (${budget - spent:.6f}) is held by requests in flight.",
                          retry_after=1)


LoadSpent = Callable[[str, float], Awaitable[float]]


class MemoryBudget:
    def __init__(self, load_spent: LoadSpent) -> None:
        self._load = load_spent
        self._periods: dict[tuple[str, float], list[float]] = {}  # -> [spent, reserved, in flight]
        self._loading: dict[tuple[str, float], asyncio.Future[float]] = {}

    async def reserve(self, key_id: str, budget: float, period: str | None, estimate: float, now: float) -> Reservation:
        start, end = period_bounds(period, now)
        slot = (key_id, start)
        state = self._periods.get(slot)
        if state is None:
            state = await self._first(slot)
        spent, reserved, inflight = state
        if spent >= budget or (spent + reserved + estimate > budget and inflight > 0):
            raise refuse(spent, budget, end, now)
        state[1] += estimate
        state[2] += 1
        return Reservation(key_id, start, estimate)

    async def _first(self, slot: tuple[str, float]) -> list[float]:
        # One load per (key, period), however many requests wait on it.
        pending = self._loading.get(slot)
        if pending is None:
            pending = self._loading[slot] = asyncio.ensure_future(self._load(*slot))
        try:
            spent = await pending
        finally:
            self._loading.pop(slot, None)
        return self._periods.setdefault(slot, [spent, 0.0, 0])

    def settle(self, reservation: Reservation, cost: float) -> None:
        state = self._periods[(reservation.key_id, reservation.start)]
        state[0] += cost
        state[1] -= reservation.amount
        state[2] -= 1

    async def aclose(self) -> None:
        return None


# KEYS: the period's hash (spent, reserved, inflight), its leases (zset: "id:amount" -> expiry).
# ARGV: budget, estimate, seed spend ('' = unseeded), ttl, now, lease expiry, lease member.
_RESERVE = """
local spent = redis.call('HGET', KEYS[1], 'spent')
if not spent then
  if ARGV[3] == '' then return {-1, '0'} end
  redis.call('HSETNX', KEYS[1], 'spent', ARGV[3])
  spent = redis.call('HGET', KEYS[1], 'spent')
end
spent = tonumber(spent)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
if #expired > 0 then
  local amount = 0
  for _, member in ipairs(expired) do
    amount = amount + tonumber(string.match(member, ':([^:]+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
  redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -amount)
  redis.call('HINCRBY', KEYS[1], 'inflight', -#expired)
end
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local inflight = tonumber(redis.call('HGET', KEYS[1], 'inflight') or '0')
local budget, estimate = tonumber(ARGV[1]), tonumber(ARGV[2])
if spent >= budget or (spent + reserved + estimate > budget and inflight > 0) then
  return {0, tostring(spent)}
end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', estimate)
redis.call('HINCRBY', KEYS[1], 'inflight', 1)
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return {1, tostring(spent)}
"""

# A lease already reclaimed (its instance was presumed dead) only adds the spend.
_SETTLE = """
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[1])
if redis.call('ZREM', KEYS[2], ARGV[3]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 'inflight', -1)
end
return 1
"""


class RedisBudget:
    """Spend and reservations in Redis, so every instance checks one budget atomically."""

    def __init__(self, client: Any, load_spent: LoadSpent, lease_s: float) -> None:
        self._client = client
        self._load = load_spent
        self._lease_s = lease_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._pending: set[asyncio.Task[Any]] = set()

    def queue(self, pipe: Any, key_id: str, budget: float, period: str | None, estimate: float,
              now: float) -> Reservation:
        """`reserve` as one command of a pipeline, unseeded (a reply of -1 means: call `reserve`)."""
        reservation, ttl = self._reservation(key_id, period, estimate, now)
        pipe.evalsha(self._reserve.sha, 2, reservation.key_id, reservation.key_id + ":leases",
                     *self._args(reservation, budget, "", ttl, now))
        return reservation

    async def load(self) -> None:
        await self._client.script_load(_RESERVE)

    async def reserve(self, key_id: str, budget: float, period: str | None, estimate: float, now: float) -> Reservation:
        reservation, ttl = self._reservation(key_id, period, estimate, now)
        keys = [reservation.key_id, reservation.key_id + ":leases"]
        try:
            ok, spent = await self._reserve(keys=keys, args=self._args(reservation, budget, "", ttl, now))
            if ok == -1:  # first use of this period anywhere: seed it from the usage log
                initial = await self._load(key_id, reservation.start)
                ok, spent = await self._reserve(keys=keys, args=self._args(reservation, budget, repr(initial), ttl, now))
        except Exception as exc:  # redis.RedisError and connection errors: the driver is imported lazily
            raise unavailable("budget", exc) from exc
        if not ok:
            raise refuse(float(spent), budget, period_bounds(period, now)[1], now)
        return reservation

    def _reservation(self, key_id: str, period: str | None, estimate: float, now: float) -> tuple[Reservation, int]:
        start, end = period_bounds(period, now)
        slot = f"{PREFIX}budget:{key_id}:{int(start)}"
        ttl = int((end - now) + 86400) if end else 90 * 86400
        return Reservation(slot, start, estimate, f"{uuid.uuid4().hex}:{estimate!r}"), ttl

    def _args(self, reservation: Reservation, budget: float, seed: str, ttl: int, now: float) -> list[Any]:
        return [budget, reservation.amount, seed, ttl, repr(now), repr(now + self._lease_s), reservation.lease]

    def settle(self, reservation: Reservation, cost: float) -> None:
        task = asyncio.get_running_loop().create_task(
            self._settle(keys=[reservation.key_id, reservation.key_id + ":leases"],
                         args=[repr(cost), repr(reservation.amount), reservation.lease]))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
