"""Routing figures shared through a real Redis (CONTRACT §16 with `state.redis_url`): what one instance
measured orders another's requests; in-flight counts add up across instances; a dead instance drops out."""

from __future__ import annotations

import pytest

from proxy.config import Deployment
from proxy.ranking import Stats, rank
from proxy.shared_routing import SharedRouting

pytest.importorskip("redis", reason="the `redis` extra is not installed")

FAST = Deployment(name="fast", provider="p", model="fast")
SLOW = Deployment(name="slow", provider="q", model="slow")


def client(url: str):  # type: ignore[no-untyped-def]
    from proxy.keys.redis import connect

    return connect(url)


async def test_one_instance_orders_by_what_another_measured(fresh_redis_url: str) -> None:
    a, b = Stats(), Stats()
    shared_a = SharedRouting(a, client(fresh_redis_url), instance="a")
    shared_b = SharedRouting(b, client(fresh_redis_url), instance="b")
    a.observe(FAST, 0.100)
    a.observe(SLOW, 0.900)
    await shared_a.sync_once()
    await shared_b.sync_once()
    assert (b.latency(FAST), b.latency(SLOW)) == (pytest.approx(0.1), pytest.approx(0.9))
    ranked, reason = rank("latency", [SLOW, FAST], lambda d: (d,), b, lambda: None, 0)  # type: ignore[arg-type,return-value]
    assert ranked == [FAST, SLOW] and reason == "latency 100ms<900ms"  # b never measured either itself
    b.observe(FAST, 0.300)
    assert b.latency(FAST) == pytest.approx(0.2)  # its own figure averaged with the others'
    await shared_a.aclose()
    await shared_b.aclose()


async def test_in_flight_counts_add_up_and_a_dead_instance_drops_out(fresh_redis_url: str) -> None:
    a, b = Stats(), Stats()
    shared_a = SharedRouting(a, client(fresh_redis_url), instance="a", ttl_s=0.2)
    shared_b = SharedRouting(b, client(fresh_redis_url), instance="b")
    for _ in range(3):
        a.enter(SLOW)
    b.enter(FAST)
    await shared_a.sync_once()
    await shared_b.sync_once()
    assert (b.busy(SLOW), b.busy(FAST)) == (3, 1)
    ranked, _ = rank("least_busy", [SLOW, FAST], lambda d: (d,), b, lambda: None, 0)  # type: ignore[arg-type,return-value]
    assert ranked == [FAST, SLOW]
    await shared_a.aclose()  # a stops: its hash goes at once (and would expire after ttl_s anyway)
    await shared_b.sync_once()
    assert (b.busy(SLOW), b.busy(FAST)) == (0, 1)
    await shared_b.aclose()


async def test_snapshot_round_trips_and_ignores_foreign_fields() -> None:
    a, b = Stats(), Stats()
    a.observe(FAST, 0.25)
    a.enter(FAST)
    b.absorb([a.snapshot(), {"lat|p|fast": "not-a-number", "future|x|y": "1"}])
    assert b.latency(FAST) == pytest.approx(0.25) and b.busy(FAST) == 1


async def test_the_gateway_shares_while_it_runs(fresh_redis_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import time

    from proxy.app import create_app
    from proxy.config import parse_config

    config = parse_config(f"""
state: {{database: "sqlite:///{tmp_path}/state.db", redis_url: "{fresh_redis_url}"}}
providers: {{demo: {{type: mock}}}}
models: {{demo: {{provider: demo, model: mock-1}}}}
""", {})
    app = create_app(config)
    app.state.gateway.router.stats.observe(config.models["demo"][0], 0.05)
    redis = client(fresh_redis_url)
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 10
        while not await redis.keys("omni:routing:*") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # polling Redis for the first publication
        (key,) = await redis.keys("omni:routing:*")
        assert await redis.hgetall(key) == {b"lat|demo|mock-1": b"0.05"}
    assert await redis.keys("omni:routing:*") == []  # gone with the instance
    await redis.aclose()
