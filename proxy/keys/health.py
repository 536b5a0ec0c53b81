"""Deployment health shared through Redis: a circuit one instance opens, every instance opens.

Each instance still counts failures and decides on its own (the router's
`Health`); when it opens a circuit it publishes `(provider, model, cooldown)`
on a Redis channel, and every instance's listener opens the same circuit for the
same remaining time. `available()` stays a local dict lookup: no Redis on the
request path. Round-robin positions stay per instance (a shared counter would
cost a round trip per request for no better spread).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from proxy.config import Deployment, RouterConfig
from proxy.keys.redis import PREFIX
from proxy.routing import Health, _Circuit

log = logging.getLogger("omni")
CHANNEL = f"{PREFIX}health"


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
        """Listen for other instances' cooldowns (called at app start-up)."""
        if self._listener is None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
            except Exception:  # Redis down at start-up: serve anyway, with cooldowns per instance
                log.warning("health: Redis unreachable; cooldowns are not shared", exc_info=True)
                return
            self._listener = asyncio.get_running_loop().create_task(self._listen(pubsub))

    async def _listen(self, pubsub: Any) -> None:
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    try:
                        self.open_from_peer(message["data"])
                    except (ValueError, KeyError, TypeError):
                        log.warning("health: ignored a malformed cooldown message")
        finally:
            await pubsub.aclose()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
