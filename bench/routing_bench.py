"""Routing decision cost (CONTRACT §16): `Router.plan` per request, by order, in process.

    .venv/bin/python -m bench.routing_bench

The figure is the best of 15 runs of 5,000 plans (other processes only ever add time).
`plan` is everything the router decides before the first call: strategy and
deployment order, capability checks, cooldowns. Target: <= 0.01 ms a request.
"""

from __future__ import annotations

import time

from proxy.config import parse_config
from proxy.router import Router
from proxy.routing import resolve_chain

CONFIG = """
providers:
  demo: {type: mock}
  o: {type: openai, api_key: k}
  g: {type: groq, api_key: k}
  a: {type: anthropic, api_key: k}
models:
  demo: {provider: demo, model: mock-1}
  gpt-mini: {provider: o, model: gpt-5.4-mini}
  gpt-nano: {provider: o, model: gpt-5.4-nano}
  groq-llama: {provider: g, model: llama-3.3-70b-versatile}
  groq-small: {provider: g, model: llama-3.1-8b-instant}
  haiku: {provider: a, model: claude-haiku-4-5}
  pair: [{provider: o, model: gpt-4o}, {provider: o, model: gpt-4o-mini}]
strategies:
  ordered6: [gpt-mini, gpt-nano, groq-llama, groq-small, haiku, demo]
  latency6: {order: latency, members: [gpt-mini, gpt-nano, groq-llama, groq-small, haiku, demo]}
  cost6: {order: cost, members: [gpt-mini, gpt-nano, groq-llama, groq-small, haiku, demo]}
  busy6: {order: least_busy, members: [gpt-mini, gpt-nano, groq-llama, groq-small, haiku, demo]}
"""

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello in five words. " * 8}]


def main(n: int = 5_000, repeats: int = 15) -> None:
    config = parse_config(CONFIG, {})
    router = Router(config, pool=None)  # type: ignore[arg-type]
    for d in config.models["gpt-mini"] + config.models["groq-llama"]:
        router.stats.observe(d, 0.2)
    print("| request | plan µs/request |\n|---|---|")
    for model in ("demo", "pair", "gpt-mini", "ordered6", "latency6", "cost6", "busy6"):
        request = {"model": model, "messages": MESSAGES, "max_tokens": 100}
        chain = resolve_chain(config, request)
        for _ in range(1000):
            router.plan(chain, request)
        best = float("inf")
        for _ in range(repeats):  # the best of several runs: other processes only ever add time
            started = time.perf_counter()
            for _ in range(n):
                router.plan(chain, request)
            best = min(best, time.perf_counter() - started)
        print(f"| {model} | {best / n * 1e6:.2f} |")


if __name__ == "__main__":
    main()
