"""Keys, limits, budgets, prices, token estimates and the store, without a server (CONTRACT §12)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest

from proxy.config import Deployment, parse_config
from proxy.errors import AuthenticationFailed, BudgetExceeded, InvalidRequest
from proxy.keys import tokens
from proxy.keys.budget import MemoryBudget, RedisBudget, period_bounds
from proxy.keys.limits import MemoryLimiter, RedisLimiter
from proxy.keys.prices import cost_of, price_table, shipped_price
from proxy.keys.service import KeyService, new_record
from proxy.keys.store import KeyRecord, UsageQuery, UsageRow, open_store
from tests.proxy_server import free_port

# -- config --------------------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    ("state: {database: 'mysql://x'}", "state.database"),
    ("state: {redis_url: 'http://x'}", "state.redis_url"),
    ("state: {nope: 1}", "state.nope: unknown key"),
    ("limits: {rpm: -1}", "limits.rpm: must be >= 0"),
    ("limits: {tpm: many}", "limits.tpm"),
    ("cache: {enabled: maybe}", "cache.enabled"),
    ("cache: {ttl_s: -5}", "cache.ttl_s"),
])
def test_config_sections_are_validated(text: str, problem: str) -> None:
    with pytest.raises(Exception) as info:
        parse_config(text, {})
    assert problem in str(info.value)


def test_config_defaults_are_off() -> None:
    config = parse_config("providers: {}", {})
    assert config.state is None and config.limits.rpm == 0 and config.limits.tpm == 0
    assert config.cache.enabled is False and config.cache.ttl_s == 3600


def test_config_state_expands_env() -> None:
    config = parse_config("state: {database: 'sqlite:///${D}/s.db', redis_url: '${R:-}'}\ncache: {enabled: true}",
                          {"D": "/data"})
    assert config.state is not None and config.state.database == "sqlite:////data/s.db"
    assert config.state.redis_url == ""


# -- key records --------------------------------------------------------------------


@pytest.mark.parametrize("fields, param", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "a", "models": "nope"}, "models"),
    ({"name": "a", "rpm": -1}, "rpm"),
    ({"name": "a", "rpm": 1.5}, "rpm"),
    ({"name": "a", "budget_usd": "x"}, "budget_usd"),
    ({"name": "a", "budget_period": "hourly"}, "budget_period"),
    ({"name": "a", "expires": "tomorrow"}, "expires"),
    ({"name": "a", "colour": "red"}, "colour"),
])
def test_new_record_rejects_bad_fields(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        new_record(fields, {"demo"})
    assert info.value.param == param


def test_new_record_hashes_and_shows_once() -> None:
    token, record = new_record({"name": "team", "models": "demo,other", "expires": "2027-01-01",
                                "budget_usd": 5, "budget_period": "monthly"})
    assert token.startswith("sk-omni-") and len(token) > 40
    assert token not in repr(record) and record.prefix == token[:12]
    assert record.models == ("demo", "other")
    assert record.expires_at == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    assert "key_hash" not in record.public()


# -- the store, on SQLite and PostgreSQL ------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("fresh_postgres_url"))


async def test_store_round_trip(database: str) -> None:
    store = open_store(database)
    await store.migrate()
    await store.migrate()  # migrations are idempotent
    token, record = new_record({"name": "a", "models": ["demo"], "rpm": 3, "budget_usd": 0.5})
    await store.insert_key(record)
    assert await store.key_by_hash(record.key_hash) == record
    assert await store.key_by_hash("0" * 64) is None
    assert [r.id for r in await store.list_keys()] == [record.id]
    now = time.time()
    rows = [UsageRow(f"r{i}", record.id if i % 2 else None, "demo", "demo", 10, 5, 0.25, 1.5, 200, False, "chat",
                     now + i) for i in range(4)]
    await store.insert_usage(rows)
    assert [r.request_id for r in await store.usage(UsageQuery(key_id=record.id))] == ["r1", "r3"]
    assert [r.request_id for r in await store.usage(UsageQuery(since=now + 2))] == ["r2", "r3"]
    assert await store.usage(UsageQuery(model="other")) == []
    assert await store.spent(record.id, 0) == pytest.approx(0.5)
    assert await store.spent(record.id, now + 2) == pytest.approx(0.25)
    assert await store.revoke_key(record.id, now) is True
    assert await store.revoke_key(record.id, now) is False
    assert (await store.key_by_hash(record.key_hash)).revoked_at == now  # type: ignore[union-attr]
    await store.aclose()


async def test_resolve_caches_and_revoke_invalidates(tmp_path: Any) -> None:
    from proxy.config import StateConfig

    service = KeyService(StateConfig(database=f"sqlite:///{tmp_path}/s.db", key_cache_ttl_s=60))
    token, record = await service.create({"name": "a"})
    assert (await service.resolve(token.encode())).id == record.id
    await service.revoke(record.id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await service.resolve(token.encode())
    expired_token, _ = await service.create({"name": "c", "expires": "2020-01-01T00:00:00Z"})
    with pytest.raises(AuthenticationFailed, match="expired"):
        await service.resolve(expired_token.encode())
    with pytest.raises(AuthenticationFailed, match="Incorrect"):
        await service.resolve(b"sk-omni-unknown")
    await service.aclose()


# -- limits ----------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryLimiter()
    from proxy.keys.redis import connect

    return RedisLimiter(connect(request.getfixturevalue("fresh_redis_url")))


async def test_rpm_bucket_allows_a_burst_then_refuses(limiter: Any) -> None:
    verdicts = [await limiter.acquire("k", 3, 0, 0) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining_requests for v in verdicts[:3]] == [2, 1, 0]
    assert 0 < verdicts[3].retry_after <= 20  # one request refills in 60/3 s
    other = await limiter.acquire("other-key", 3, 0, 0)
    assert other.allowed  # buckets are per key


async def test_tpm_estimate_is_corrected(limiter: Any) -> None:
    first = await limiter.acquire("k", 0, 1000, 900)
    assert first.allowed and first.remaining_tokens == 100
    assert not (await limiter.acquire("k", 0, 1000, 200)).allowed
    limiter.correct("k", 1000, -800)  # it used 100, not 900
    await limiter.aclose()  # waits for Redis corrections (fire-and-forget tasks)
    again = await limiter.acquire("k", 0, 1000, 200)
    assert again.allowed and 690 <= again.remaining_tokens <= 710


# -- budgets ---------------------------------------------------------------------------


def test_period_bounds() -> None:
    wed = dt.datetime(2026, 12, 2, 15, 30, tzinfo=dt.UTC).timestamp()
    day = period_bounds("daily", wed)
    assert day == (dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp(), dt.datetime(2026, 12, 3, tzinfo=dt.UTC).timestamp())
    assert period_bounds("weekly", wed)[0] == dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
    assert period_bounds("monthly", wed) == (dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp(),
                                             dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp())
    assert period_bounds(None, wed) == (0.0, None)


@pytest.fixture(params=["memory", "redis"])
def budget(request: pytest.FixtureRequest) -> Any:
    async def load(key_id: str, since: float) -> float:
        return 0.25  # spend already in the usage log this period

    if request.param == "memory":
        return MemoryBudget(load)
    from proxy.keys.redis import connect

    return RedisBudget(connect(request.getfixturevalue("fresh_redis_url")), load, lease_s=600)


async def test_budget_reservations_hold_concurrent_requests(budget: Any) -> None:
    now = time.time()
    # Budget 1.00, 0.25 already spent: three reservations of 0.25 fit, the fourth does not.
    held = [await budget.reserve("k", 1.0, "daily", 0.25, now) for _ in range(3)]
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve("k", 1.0, "daily", 0.25, now)
    assert info.value.retry_after == 1  # held by requests in flight, not spent
    for reservation in held:
        budget.settle(reservation, 0.30)  # each cost a little more than reserved
    await budget.aclose()
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve("k", 1.0, "daily", 0.01, now)
    end = period_bounds("daily", now)[1]
    assert info.value.retry_after == pytest.approx(end - now)  # spent (1.15): until the period rolls over
    assert "spent" in info.value.message


async def test_budget_admits_one_request_at_a_time_when_the_worst_case_does_not_fit(budget: Any) -> None:
    now = time.time()
    first = await budget.reserve("k", 1.0, None, 5.0, now)  # nothing in flight: admitted
    with pytest.raises(BudgetExceeded):
        await budget.reserve("k", 1.0, None, 5.0, now)
    budget.settle(first, 0.1)
    await budget.aclose()
    await budget.reserve("k", 1.0, None, 5.0, now)


async def test_a_dead_instances_reservations_expire_with_their_lease(fresh_redis_url: str) -> None:
    from proxy.keys.redis import connect

    async def load(key_id: str, since: float) -> float:
        return 0.0

    client = connect(fresh_redis_url)
    dead, alive = RedisBudget(client, load, lease_s=100), RedisBudget(client, load, lease_s=100)
    lost = await dead.reserve("k", 1.0, None, 0.6, 1000.0)  # its instance dies: never settled
    with pytest.raises(BudgetExceeded) as info:
        await alive.reserve("k", 1.0, None, 0.6, 1099.0)  # the lease still holds the budget
    assert info.value.retry_after == 1
    taken = await alive.reserve("k", 1.0, None, 0.6, 1101.0)  # expired: reclaimed, admitted
    state = await client.hgetall(taken.key_id)
    assert (float(state[b"reserved"]), int(state[b"inflight"])) == (pytest.approx(0.6), 1)
    dead.settle(lost, 0.5)  # a late settle of a reclaimed lease adds its spend, frees nothing twice
    alive.settle(taken, 0.2)
    await dead.aclose()
    await alive.aclose()
    state = await client.hgetall(taken.key_id)
    assert float(state[b"spent"]) == pytest.approx(0.7)
    assert (float(state[b"reserved"]), int(state[b"inflight"])) == (pytest.approx(0.0, abs=1e-9), 0)
    assert await client.zcard(taken.key_id + ":leases") == 0
    await client.aclose()


async def test_round_robin_is_shared_by_short_lived_instances(fresh_redis_url: str) -> None:
    from proxy.keys.health import SharedBalancer
    from proxy.keys.redis import connect
    from proxy.routing import Balancer

    client = connect(fresh_redis_url)
    even = (Deployment("m", "p", "a"), Deployment("m", "p", "b"))
    weighted = (Deployment("w", "p", "a", weight=3.0), Deployment("w", "p", "b", weight=1.0))
    picks: dict[str, int] = {}
    for _ in range(40):  # 40 instances (Lambda ones, say), each serving one request of each model
        balancer = SharedBalancer(client)
        await balancer.claim("m")
        await balancer.claim("w")
        for deployments in (even, weighted):
            chosen = balancer.order(deployments[0].name, deployments)[0]
            picks[f"{chosen.name}/{chosen.model}"] = picks.get(f"{chosen.name}/{chosen.model}", 0) + 1
        await balancer.aclose()
    assert picks == {"m/a": 20, "m/b": 20, "w/a": 30, "w/b": 10}
    assert {Balancer().order("m", even)[0].model for _ in range(40)} == {"a"}, "unshared: every instance starts at a"
    await client.aclose()


async def test_round_robin_without_redis_stays_local() -> None:
    from proxy.keys.health import SharedBalancer
    from proxy.keys.redis import connect

    balancer = SharedBalancer(connect(f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    even = (Deployment("m", "p", "a"), Deployment("m", "p", "b"))
    assert [balancer.order("m", even)[0].model for _ in range(4)] == ["a", "b", "a", "b"]
    await balancer.aclose()


async def test_cooldown_listener_resubscribes_after_redis_drops_it(fresh_redis_url: str) -> None:
    from proxy.config import RouterConfig
    from proxy.keys.health import CHANNEL, SharedHealth
    from proxy.keys.redis import connect

    async def subscribers() -> int:
        return int(dict(await admin.pubsub_numsub(CHANNEL))[CHANNEL.encode()])

    admin, one_client, two_client = connect(fresh_redis_url), connect(fresh_redis_url), connect(fresh_redis_url)
    config = RouterConfig(cooldown_failures=1, cooldown_s=60)
    one, two = SharedHealth(config, one_client), SharedHealth(config, two_client)
    await one.start()
    assert await subscribers() == 1
    assert await admin.client_kill_filter(_type="pubsub") == 1  # Redis drops the subscription
    assert await subscribers() == 0
    deadline = time.monotonic() + 10
    while await subscribers() < 1:
        assert time.monotonic() < deadline, "the listener never resubscribed"
        await asyncio.sleep(0.02)
    broken = Deployment("m", "p", "broken")
    two.record_failure(broken)  # two opens the circuit and publishes it
    await two.aclose()
    while one.available(broken):
        assert time.monotonic() < deadline, "the resubscribed listener missed a peer's cooldown"
        await asyncio.sleep(0.02)
    await one.aclose()
    for client in (admin, one_client, two_client):
        await client.aclose()


# -- prices and token estimates -----------------------------------------------------------


def test_shipped_price_table() -> None:
    as_of, table = price_table()
    assert dt.date.fromisoformat(as_of) and len(table) > 20
    assert shipped_price("gpt-4o") == (2.5, 10.0)
    assert shipped_price("gpt-4o-2024-08-06") == (2.5, 10.0)  # dated snapshot -> its family
    assert shipped_price("gpt-4o-mini-2024-07-18") == (0.15, 0.6)  # the longest prefix wins
    assert shipped_price("no-such-model") is None


def test_cost_prefers_configured_prices() -> None:
    configured = Deployment("m", "p", "gpt-4o", input_cost_per_mtok=1.0, output_cost_per_mtok=2.0)
    shipped = Deployment("m", "p", "gpt-4o")
    unknown = Deployment("m", "p", "mystery")
    assert cost_of(configured, 1_000_000, 1_000_000) == 3.0
    assert cost_of(shipped, 1_000_000, 1_000_000) == 12.5
    assert cost_of(unknown, 1_000_000, 1_000_000) == 0.0


def test_token_estimates() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    assert 100 <= tokens.count_prompt(body) <= 110
    assert tokens.max_completion(body) == 4096
    assert tokens.max_completion({**body, "max_tokens": 7, "n": 2}) == 14
    assert tokens.max_completion(body, unbounded=0) == 0
    assert tokens.count_prompt({"input": ["abcd" * 10, "abcd"]}) == 11
    assert tokens.count_completion({"choices": [{"message": {"content": "abcdefgh"}}]}) == 2


# -- Redis under load and when it is down ------------------------------------------------


async def test_redis_pool_absorbs_a_burst(fresh_redis_url: str) -> None:
    from proxy.keys.redis import MAX_CONNECTIONS, connect

    limiter = RedisLimiter(connect(fresh_redis_url))
    burst = 5 * MAX_CONNECTIONS  # more requests at once than the pool has connections: they wait, none fails
    verdicts = await asyncio.gather(*(limiter.acquire(f"k{i % 7}", 10**6, 0, 0) for i in range(burst)))
    assert all(v.allowed for v in verdicts)


async def test_a_cancel_that_lands_on_a_redis_command_is_never_lost(fresh_redis_url: str) -> None:
    """A client going away cancels its request, and shutdown cancels the background loops: the cancel must
    reach them whichever moment of a Redis command it lands on (Python 3.11's wait_for, which redis-py
    sends through, lost about one in two). The cancel is swept over every loop step of a command."""
    from proxy.keys.redis import connect

    client = connect(fresh_redis_url)

    async def commands() -> str:
        while True:
            await client.get("omni:test:cancel")
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                return "lost"  # cancelled, yet the command returned as if it had not been

    lost = []
    for steps in range(120):
        task = asyncio.get_running_loop().create_task(commands())
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(outcome, asyncio.CancelledError):
            lost.append(steps)
    await client.aclose()
    assert lost == [], f"cancels lost after {lost} loop steps"


async def test_redis_down_limits_fail_closed_cache_misses() -> None:
    from proxy.errors import ServiceUnavailable
    from proxy.keys.cache import RedisCache
    from proxy.keys.redis import connect

    client = connect(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there

    async def load(key_id: str, since: float) -> float:
        return 0.0

    with pytest.raises(ServiceUnavailable) as info:
        await RedisLimiter(client).acquire("k", 1, 0, 0)
    assert info.value.status == 503 and info.value.code == "state_unavailable"
    with pytest.raises(ServiceUnavailable):
        await RedisBudget(client, load, lease_s=600).reserve("k", 1.0, None, 0.1, time.time())
    cache = RedisCache(client)
    assert await cache.get("omni:cache:v1:x") is None
    await cache.set("omni:cache:v1:x", b"{}", 60)  # logged, not raised
