"""Routing orders and capability checks (CONTRACT §16) as pure functions: injectable clock, scripted
observations, no sleeps; plus the config forms that declare them."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.catalog import lookup
from proxy.config import ConfigError, Deployment, parse_config
from proxy.ranking import EXPLORE_EVERY, Needs, Stats, missing_capability, needs_of, rank
from proxy.router import Router

CONFIG = """
providers:
  a: {type: mock}
  b: {type: mock}
models:
  fast: {provider: a, model: fast, input_cost_per_mtok: 1, output_cost_per_mtok: 2}
  slow: {provider: b, model: slow, input_cost_per_mtok: 0.1, output_cost_per_mtok: 0.2}
  unpriced: {provider: a, model: unpriced}
  text-only: {provider: a, model: t, vision: false, tools: false, context_window: 50}
  pair:
    routing: least_busy
    vision: false
    deployments:
      - {provider: a, model: p1}
      - {provider: b, model: p2, vision: true}
strategies:
  quick: {order: latency, members: [slow, fast]}
  thrifty: {order: cost, members: [unpriced, fast, slow]}
  calm: {order: least_busy, members: [fast, slow]}
  plain: [slow, fast]
"""


@pytest.fixture()
def config():  # type: ignore[no-untyped-def]
    return parse_config(CONFIG, {})


def one(name: str, **kw: Any) -> Deployment:
    return Deployment(name=name, provider="p", model=name, **kw)


NEEDS = Needs(vision=False, tools=False, prompt_tokens=1000, output_tokens=100)


def test_config_forms_declare_orders_and_capabilities(config) -> None:  # type: ignore[no-untyped-def]
    assert config.orders == {"pair": "least_busy", "quick": "latency", "thrifty": "cost", "calm": "least_busy"}
    assert config.strategies["quick"] == ("slow", "fast")
    p1, p2 = config.models["pair"]
    assert (p1.vision, p2.vision) == (False, True)  # a deployment's own key beats the model's
    t = config.models["text-only"][0]
    assert (t.vision, t.tools, t.context_window) == (False, False, 50)


@pytest.mark.parametrize("yaml_models, yaml_strategies, problem", [
    ("m: {provider: a, model: x, vision: maybe}", "", "models.m.vision: expected true or false"),
    ("m: {provider: a, model: x, context_window: 0}", "", "models.m.context_window: must be >= 1"),
    ("m: {routing: fastest, deployments: [{provider: a, model: x}]}", "", "models.m.routing: expected one of"),
    ("m: {routing: cost, deployments: {provider: a}}", "", "models.m.deployments: expected a list"),
    ("m: {deployments: [{provider: a, model: x}], weight: 2}", "", "models.m.weight: unknown key"),
    ("m: {provider: a, model: x}", "s: {order: random, members: [m]}", "strategies.s.order: expected one of"),
    ("m: {provider: a, model: x}", "s: {order: cost, members: [zz]}", "strategies.s.members[0]: unknown model 'zz'"),
    ("m: {provider: a, model: x}", "s: {order: cost, models: [m]}", "strategies.s.models: unknown key"),
])
def test_bad_orders_are_config_errors(yaml_models: str, yaml_strategies: str, problem: str) -> None:
    text = f"providers:\n  a: {{type: mock}}\nmodels:\n  {yaml_models}\n"
    if yaml_strategies:
        text += f"strategies:\n  {yaml_strategies}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_latency_measures_unmeasured_first_then_fastest_and_explores() -> None:
    stats = Stats(clock=lambda: 0.0)
    a, b, c = one("a"), one("b"), one("c")
    members = [a, b, c]
    ranked, reason = rank("latency", members, lambda d: (d,), stats, lambda: NEEDS, 0)
    assert ranked == [a, b, c] and reason == "latency unmeasured"
    stats.observe(a, 0.400)
    stats.observe(b, 0.212)
    ranked, reason = rank("latency", members, lambda d: (d,), stats, lambda: NEEDS, 1)
    assert ranked[0] is c  # never measured: goes first once
    stats.observe(c, 0.388)
    ranked, reason = rank("latency", members, lambda d: (d,), stats, lambda: NEEDS, 2)
    assert ranked == [b, c, a] and reason == "latency 212ms<388ms"
    # one request in every EXPLORE_EVERY puts another member first, rotating through them
    firsts = [rank("latency", members, lambda d: (d,), stats, lambda: NEEDS, t)[0][0] for t in range(3 * EXPLORE_EVERY)]
    explored = [t for t, d in enumerate(firsts) if d is not b]
    assert explored == [EXPLORE_EVERY - 1, 2 * EXPLORE_EVERY - 1, 3 * EXPLORE_EVERY - 1]
    assert [firsts[t] for t in explored] == [c, a, c]


def test_latency_is_a_decayed_average() -> None:
    stats = Stats()
    d = one("d")
    stats.observe(d, 1.0)
    stats.observe(d, 0.0)
    assert stats.latency(d) == pytest.approx(0.7)
    for _ in range(20):
        stats.observe(d, 0.1)
    assert stats.latency(d) == pytest.approx(0.1, abs=0.001)  # a recovered deployment's figure follows it


def test_cost_uses_prices_tokens_and_max_tokens_unpriced_last() -> None:
    cheap_in = one("cheap-in", input_cost_per_mtok=0.1, output_cost_per_mtok=10)
    cheap_out = one("cheap-out", input_cost_per_mtok=5, output_cost_per_mtok=0.1)
    free = one("unpriced")
    long_prompt = Needs(False, False, prompt_tokens=100_000, output_tokens=10)
    long_answer = Needs(False, False, prompt_tokens=10, output_tokens=100_000)
    ranked, reason = rank("cost", [free, cheap_out, cheap_in], lambda d: (d,), Stats(), lambda: long_prompt, 0)
    assert ranked == [cheap_in, cheap_out, free] and reason == "cost $0.010100"
    ranked, _ = rank("cost", [free, cheap_in, cheap_out], lambda d: (d,), Stats(), lambda: long_answer, 0)
    assert ranked == [cheap_out, cheap_in, free]
    assert needs_of({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 7}).output_tokens == 7
    assert needs_of({"messages": []}).output_tokens == 1000


def test_least_busy_counts_in_flight() -> None:
    stats = Stats()
    a, b = one("a"), one("b")
    stats.enter(a)
    stats.enter(a)
    stats.enter(b)
    assert rank("least_busy", [a, b], lambda d: (d,), stats, lambda: NEEDS, 0) == ([b, a], "least_busy 1<=2")
    stats.leave(b)
    stats.leave(a)
    stats.leave(a)
    stats.leave(a)  # never below zero
    assert stats.busy(a) == 0 and stats.busy(b) == 0


@pytest.mark.parametrize("request_body, deployment, missing", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]},
     one("m", vision=False), "no vision (images in the request)"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]},
     one("m", vision=True), None),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]},
     one("m", tools=False), "no tool use (tools in the request)"),
    ({"messages": [{"role": "user", "content": "word " * 400}]}, one("m", context_window=100),
     "prompt of ~501 tokens over context_window 100"),
    ({"messages": [{"role": "user", "content": "word " * 400}]}, one("m", context_window=1000), None),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, one("m", vision=False), None),
])
def test_capability_checks(request_body: dict[str, Any], deployment: Deployment, missing: str | None) -> None:
    assert missing_capability(deployment, needs_of(request_body)) == missing


def test_catalog_fills_what_the_entry_left_out() -> None:
    assert lookup("gpt-4o-2024-08-06")["context_window"] == 128000  # longest prefix at a separator
    assert lookup("gpt-4o-mini")["input_cost_per_mtok"] == 0.15
    assert lookup("us.anthropic.claude-sonnet-4-5-20250929-v1:0")["vision"] is True  # region prefix dropped
    assert lookup("llama-3.3-70b-versatile")["vision"] is False
    assert lookup("gpt-4oops") == {}  # a prefix must end at a separator
    config = parse_config("""
providers: {o: {type: openai, api_key: k}}
models:
  listed: {provider: o, model: llama-3.3-70b-versatile}
  declared: {provider: o, model: llama-3.3-70b-versatile, vision: true, input_cost_per_mtok: 9}
""", {})
    listed, declared = config.models["listed"][0], config.models["declared"][0]
    assert (listed.vision, listed.context_window, listed.input_cost_per_mtok) == (False, 131072, 0.59)
    assert (declared.vision, declared.input_cost_per_mtok) == (True, 9)


class Echo:
    capabilities = frozenset({"chat"})
    supported_params = None

    async def chat(self, request: dict[str, Any], deployment: Any) -> dict[str, Any]:
        return {"model": deployment.model}

    def map_error(self, exc: BaseException) -> None:
        return None


class Pool:
    def get(self, name: str) -> Echo:
        return Echo()


async def _route(router: Router, request: dict[str, Any]) -> Any:
    from proxy.routing import resolve_chain

    return await router.run(resolve_chain(router.config, request), request, "chat",
                            lambda p, body, d: p.chat(body, d))


async def test_router_orders_strategies_and_names_the_reason(config) -> None:  # type: ignore[no-untyped-def]
    router = Router(config, Pool())  # type: ignore[arg-type]
    hi = [{"role": "user", "content": "hi"}]
    served = await _route(router, {"model": "thrifty", "messages": hi})
    assert served.deployment.name == "slow" and served.reason.startswith("cost $")
    served = await _route(router, {"model": "plain", "messages": hi})
    assert served.deployment.name == "slow" and served.reason == "ordered"
    # fallback_strategy with an order is ranked too
    served = await _route(router, {"model": "unpriced", "fallback_strategy": "thrifty", "messages": hi})
    assert served.deployment.name == "unpriced"
    assert router.plan(
        [("unpriced", config.models["unpriced"]), ("fast", config.models["fast"]), ("slow", config.models["slow"])],
        {"model": "unpriced", "fallback_strategy": "thrifty", "messages": hi})[0][1].name == "slow"


async def test_router_skips_what_cannot_serve_and_400s_when_nothing_is_left(config) -> None:  # type: ignore[no-untyped-def]
    from proxy.errors import InvalidRequest

    router = Router(config, Pool())  # type: ignore[arg-type]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]
    served = await _route(router, {"model": "text-only", "fallbacks": ["fast"], "messages": image})
    assert served.deployment.name == "fast"
    assert served.attempts == ["text-only skipped: no vision (images in the request)", "fast=a/fast:200"]
    served = await _route(router, {"model": "pair", "messages": image})
    assert served.deployment.model == "p2"  # the deployment with vision, whatever least_busy said
    with pytest.raises(InvalidRequest) as info:
        await _route(router, {"model": "text-only", "messages": image})
    assert info.value.status == 400 and "no vision" in info.value.message and info.value.code == "capability_unsupported"


def test_the_readme_cost_example() -> None:
    """README "Routing orders": the `cheap` strategy's figures, from the shipped prices."""
    members = [Deployment(name=n, provider="p", model=m, **{k: v for k, v in lookup(m).items() if "cost" in k})
               for n, m in (("groq-llama", "llama-3.3-70b-versatile"), ("gpt-mini", "gpt-5.4-mini"),
                            ("haiku", "claude-haiku-4-5"))]
    prompt = {"messages": [{"role": "user", "content": "x" * 1996}]}
    ranked, reason = rank("cost", members, lambda d: (d,), Stats(), lambda: needs_of({**prompt, "max_tokens": 100}), 0)
    assert [d.name for d in ranked] == ["gpt-mini", "groq-llama", "haiku"] and reason == "cost $0.000325"
    ranked, _ = rank("cost", members, lambda d: (d,), Stats(), lambda: needs_of(prompt), 0)
    assert ranked[0].name == "groq-llama"


async def test_members_without_a_configured_provider_go_last_and_do_not_decide() -> None:
    config = parse_config("""
providers:
  demo: {type: mock}
  unset: {type: openai, api_key: "${NO_SUCH_KEY:-}"}
models:
  cheapest-but-off: {provider: unset, model: x, input_cost_per_mtok: 0.001, output_cost_per_mtok: 0.001}
  local: {provider: demo, model: m, input_cost_per_mtok: 1, output_cost_per_mtok: 1}
strategies:
  thrifty: {order: cost, members: [cheapest-but-off, local]}
""", {})
    router = Router(config, Pool())  # type: ignore[arg-type]
    request = {"model": "thrifty", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    candidates, _, reason = router.plan(
        [("cheapest-but-off", config.models["cheapest-but-off"]), ("local", config.models["local"])], request)
    assert [d.name for d in candidates] == ["local", "cheapest-but-off"]
    assert reason == "cost $0.000011"  # the figure of the member that can answer
