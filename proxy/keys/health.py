"""Deployment health and round-robin shared through Redis, with no Redis call on the request path.

Cooldowns: each instance still counts failures and decides on its own (the
router's `Health`); when it opens a circuit it publishes `(provider, model,
cooldown)` on a Redis channel, and every instance's listener opens the same
circuit for the same remaining time. `available()` stays a local dict lookup.
The listener resubscribes after Redis drops it (backing off to 5 s).

Round-robin: positions come from one Redis counter per model, claimed a block
at a time in the background (`SharedBalancer`), so many instances — short-lived
Lambda ones above all, which would each start at the first deployment — walk
one shared rotation.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from typing import Any

import orjson

from proxy.config import Deployment, RouterConfig
from proxy.keys.redis import PREFIX
from proxy.routing import Balancer, Health, _Circuit

log = logging.getLogger("omni")
CHANNEL = f"{PREFIX}health"
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 5.0


class SharedHealth(Health):
    def __init__(self, config: RouterConfig, client: Any) -> None:
        super().__init__(config)
        self._client = client
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def record_failure(self, deployment: Deployment) -> None:
        was_open = not self.available(deployment)
        super().record_failure(deployment)
        circuit = self._circuits.get(self.key(deployment))
        if circuit is not None and not was_open and circuit.open_until > self._clock():
            message = orjson.dumps({"provider": deployment.provider, "model": deployment.model,
                                    "cooldown_s": circuit.open_until - self._clock()})
            task = asyncio.get_running_loop().create_task(self._publish(message))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _publish(self, message: bytes) -> None:
        try:
            await self._client.publish(CHANNEL, message)
        except Exception:
            log.warning("health: could not share a cooldown through Redis", exc_info=True)

    def open_from_peer(self, message: bytes) -> None:
        event = orjson.loads(message)
        circuit = self._circuits.setdefault((event["provider"], event["model"]), _Circuit())
        circuit.open_until = max(circuit.open_until, self._clock() + float(event["cooldown_s"]))

    async def start(self) -> None:
        """Listen for other instances' cooldowns (called at app start-up; subscribed when this returns,
        unless Redis is down: then the listener keeps trying in the background)."""
        if self._listener is None:
            pubsub = await self._subscribe()
            self._listener = asyncio.get_running_loop().create_task(self._listen(pubsub))

    async def _subscribe(self) -> Any:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
        except Exception:
            log.warning("health: Redis unreachable; cooldowns are not shared until it is back", exc_info=True)
            await _quietly_close(pubsub)
            return None
        return pubsub

    async def _listen(self, pubsub: Any) -> None:
        delay = RECONNECT_MIN_S
        while True:
            if pubsub is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                pubsub = await self._subscribe()
                continue
            delay = RECONNECT_MIN_S
            try:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            self.open_from_peer(message["data"])
                        except (ValueError, KeyError, TypeError):
                            log.warning("health: ignored a malformed cooldown message")
            except asyncio.CancelledError:
                await _quietly_close(pubsub)
                raise
            except Exception:
                log.warning("health: lost the Redis subscription; resubscribing", exc_info=True)
            await _quietly_close(pubsub)
            pubsub = None

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


async def _quietly_close(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception:
        pass


class SharedBalancer(Balancer):
    """Weighted round-robin on positions from a shared Redis counter per model.

    A block of BLOCK positions is claimed (INCRBY) in the background when an
    instance's claimed positions run low; until the first block arrives, or
    while Redis is down, the instance falls back to its own rotation. BLOCK is
    prime so that instances which use only the first position of their block
    (one request per Lambda instance) still spread over any rotation whose
    length is not a multiple of it.
    """

    BLOCK = 31

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client
        self._positions: dict[str, deque[int]] = {}
        self._cycles: dict[str, tuple[tuple[Deployment, ...], tuple[int, ...]]] = {}
        self._claiming: dict[str, asyncio.Task[None]] = {}

    def order(self, name: str, deployments: tuple[Deployment, ...]) -> list[Deployment]:
        if len(deployments) == 1:
            return list(deployments)
        positions = self._positions.get(name)
        if (positions is None or len(positions) <= self.BLOCK // 2) and name not in self._claiming:
            task = asyncio.get_running_loop().create_task(self.claim(name))
            self._claiming[name] = task
            task.add_done_callback(lambda _: self._claiming.pop(name, None))
        if not positions:
            return super().order(name, deployments)
        cycle = self._cycle(name, deployments)
        first = cycle[positions.popleft() % len(cycle)]
        return [deployments[first], *(d for i, d in enumerate(deployments) if i != first)]

    async def claim(self, name: str) -> None:
        """Claim the next block of positions for `name` (Redis down: keep the local rotation)."""
        try:
            end = int(await self._client.incrby(f"{PREFIX}rr:{name}", self.BLOCK))
        except Exception:
            log.warning("routing: Redis unreachable; round-robin is per instance for now", exc_info=True)
            return
        self._positions.setdefault(name, deque()).extend(range(end - self.BLOCK, end))

    async def aclose(self) -> None:
        if self._claiming:
            await asyncio.gather(*self._claiming.values(), return_exceptions=True)

    def _cycle(self, name: str, deployments: tuple[Deployment, ...]) -> tuple[int, ...]:
        """The smooth weighted round-robin sequence of one full rotation (weights as small integers)."""
        known = self._cycles.get(name)
        if known is not None and known[0] == deployments:
            return known[1]
        weights = [max(1, round(d.weight * 100)) for d in deployments]
        divisor = math.gcd(*weights)
        weights = [w // divisor for w in weights]
        total, current, cycle = sum(weights), [0] * len(weights), []
        for _ in range(min(total, 1000)):
            for i, w in enumerate(weights):
                current[i] += w
            first = max(range(len(weights)), key=current.__getitem__)
            current[first] -= total
            cycle.append(first)
        self._cycles[name] = (deployments, tuple(cycle))
        return self._cycles[name][1]
