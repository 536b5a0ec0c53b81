"""Pure routing: chain resolution, circuit breaking with an injectable clock, weighted round-robin,
and the router's retry/fallback loop driven by scripted in-process providers (no sleeps: sleep is injected)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from proxy.config import parse_config
from proxy.errors import InvalidRequest, ModelNotFound, ProviderNotConfigured, RateLimited, UpstreamError
from proxy.router import Router, prepare_request
from proxy.routing import Balancer, Health, resolve_chain

CONFIG = """
router: {cooldown_failures: 2, cooldown_window_s: 10, cooldown_s: 30}
providers:
  a: {type: mock, max_retries: 2}
  b: {type: mock, max_retries: 0}
  down: {type: openai, api_key: "${NOPE:-}"}
models:
  m1: {provider: a, model: one}
  m2: {provider: b, model: two}
  dead: {provider: down, model: x}
  lb:
    - {provider: a, model: w3, weight: 3}
    - {provider: b, model: w1, weight: 1}
strategies:
  chain: [dead, m1, m2]
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def config():  # type: ignore[no-untyped-def]
    return parse_config(CONFIG, {})


def names(chain: list[Any]) -> list[str]:
    return [name for name, _ in chain]


def test_resolution_order(config) -> None:  # type: ignore[no-untyped-def]
    assert names(resolve_chain(config, {"model": "m1"})) == ["m1"]
    assert names(resolve_chain(config, {"model": "chain"})) == ["dead", "m1", "m2"]
    assert names(resolve_chain(config, {"model": "m2", "fallback_strategy": "chain", "fallbacks": ["m1", "a/raw"]})) == [
        "m2", "dead", "m1", "a/raw"]
    direct = resolve_chain(config, {"model": "b/some-upstream"})
    assert direct[0][1][0].provider == "b" and direct[0][1][0].model == "some-upstream"
    with pytest.raises(ModelNotFound) as info:
        resolve_chain(config, {"model": "zzz"})
    assert "m1" in info.value.message and "dead" not in info.value.message
    with pytest.raises(ModelNotFound):
        resolve_chain(config, {"model": "nosuchprovider/x"})
    with pytest.raises(InvalidRequest):
        resolve_chain(config, {"model": "m1", "fallback_strategy": "m2"})


def test_circuit_opens_after_failures_in_window_and_probes_after_cooldown(config) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    health = Health(config.router, clock)
    d = config.models["m1"][0]
    health.record_failure(d)
    clock.now += 11  # outside the 10 s window: the first failure expired
    health.record_failure(d)
    assert health.available(d)
    health.record_failure(d)
    assert not health.available(d)
    clock.now += 29.9
    assert not health.available(d)
    clock.now += 0.2
    assert health.available(d)  # the probe
    health.record_success(d)
    health.record_failure(d)
    assert health.available(d)


def test_weighted_round_robin(config) -> None:  # type: ignore[no-untyped-def]
    balancer = Balancer()
    firsts = Counter(balancer.order("lb", config.models["lb"])[0].model for _ in range(40))
    assert firsts == {"w3": 30, "w1": 10}
    order = balancer.order("lb", config.models["lb"])
    assert len(order) == 2 and {d.model for d in order} == {"w3", "w1"}


class Scripted:
    """A provider whose successive calls fail with the given errors, then answer."""

    capabilities = frozenset({"chat", "embeddings"})
    supported_params: frozenset[str] | None = frozenset({"temperature"})

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def chat(self, request: dict[str, Any], deployment: Any) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"answer": deployment.model, "request": request}

    def map_error(self, exc: BaseException) -> None:
        return None


class Pool:
    def __init__(self, providers: dict[str, Scripted]) -> None:
        self.providers = providers

    def get(self, name: str) -> Scripted:
        return self.providers[name]


async def run(router: Router, request: dict[str, Any]):  # type: ignore[no-untyped-def]
    chain = resolve_chain(router.config, request)
    return await router.run(chain, request, "chat", lambda p, body, d: p.chat(body, d))


def make_router(config, providers, sleeps):  # type: ignore[no-untyped-def]
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return Router(config, Pool(providers), Health(config.router, Clock()), sleep=sleep)  # type: ignore[arg-type]


async def test_retries_honour_retry_after_then_succeed(config) -> None:  # type: ignore[no-untyped-def]
    sleeps: list[float] = []
    a = Scripted([RateLimited("slow down", retry_after=2), UpstreamError("boom")])
    router = make_router(config, {"a": a, "b": Scripted([])}, sleeps)
    served = await run(router, {"model": "m1", "messages": []})
    assert served.result["answer"] == "one" and a.calls == 3
    assert sleeps[0] == 2 and 0.25 <= sleeps[1] <= 1.5  # Retry-After, then jittered backoff
    assert served.attempts == ["m1=a/one:429", "m1=a/one:502", "m1=a/one:200"]


async def test_retry_after_longer_than_cap_moves_on(config) -> None:  # type: ignore[no-untyped-def]
    sleeps: list[float] = []
    a = Scripted([RateLimited("later", retry_after=60)])
    b = Scripted([])
    router = make_router(config, {"a": a, "b": b}, sleeps)
    served = await run(router, {"model": "m1", "messages": [], "fallbacks": ["m2"]})
    assert served.deployment.name == "m2" and a.calls == 1 and sleeps == []


async def test_client_errors_are_never_retried_nor_fallen_back(config) -> None:  # type: ignore[no-untyped-def]
    a = Scripted([InvalidRequest("bad", status=422)])
    b = Scripted([])
    router = make_router(config, {"a": a, "b": b}, [])
    with pytest.raises(InvalidRequest):
        await run(router, {"model": "m1", "messages": [], "fallbacks": ["m2"]})
    assert a.calls == 1 and b.calls == 0


async def test_strategy_skips_unready_and_final_errors(config) -> None:  # type: ignore[no-untyped-def]
    a = Scripted([UpstreamError("x")] * 3)
    b = Scripted([])
    router = make_router(config, {"a": a, "b": b}, [])
    served = await run(router, {"model": "chain", "messages": []})
    assert served.deployment.name == "m2"
    assert served.attempts[0] == "dead=down/x:503"
    with pytest.raises(ProviderNotConfigured) as info:
        await run(router, {"model": "dead", "messages": []})
    assert "NOPE" in info.value.message


async def test_all_rate_limited_gives_429_with_retry_after(config) -> None:  # type: ignore[no-untyped-def]
    a = Scripted([RateLimited("a", retry_after=3)] * 3)
    b = Scripted([RateLimited("b", retry_after=1)])
    router = make_router(config, {"a": a, "b": b}, [])
    with pytest.raises(RateLimited) as info:
        await run(router, {"model": "m1", "messages": [], "fallbacks": ["m2"]})
    assert info.value.retry_after == 1 and "m2=b/two:429" in info.value.message


async def test_cooled_down_deployment_is_skipped(config) -> None:  # type: ignore[no-untyped-def]
    a = Scripted([UpstreamError("x")] * 10)
    b = Scripted([])
    router = make_router(config, {"a": a, "b": b}, [])
    await run(router, {"model": "m1", "messages": [], "fallbacks": ["m2"]})  # 3 failures: circuit opens
    calls = a.calls
    served = await run(router, {"model": "m1", "messages": [], "fallbacks": ["m2"]})
    assert a.calls == calls and served.deployment.name == "m2"


def test_prepare_request_drops_or_rejects_unsupported() -> None:
    provider = Scripted([])
    body, dropped = prepare_request(
        {"model": "m", "messages": [], "temperature": 1, "logit_bias": {}, "fallbacks": ["x"]}, provider, False, "p")
    assert body == {"model": "m", "messages": [], "temperature": 1} and dropped == ["logit_bias"]
    with pytest.raises(InvalidRequest) as info:
        prepare_request({"model": "m", "messages": [], "logit_bias": {}}, provider, True, "p")
    assert info.value.param == "logit_bias"


def test_embedding_requests_are_not_filtered_by_chat_params() -> None:
    body, dropped = prepare_request({"model": "e", "input": "x", "encoding_format": "base64", "fallbacks": []},
                                    Scripted([]), True, "p", "embedding")
    assert body == {"model": "e", "input": "x", "encoding_format": "base64"} and dropped == []
