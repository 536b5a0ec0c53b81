"""In-process cost of the gate (keys + limits + budget + usage log + cache) per request, precisely.

    python -m bench.keys_inprocess [--n 20000] [--redis-url redis://127.0.0.1:6379/0]

The end-to-end table (bench/keys.py) is noisy on a shared box; this times the
gate alone around a pipeline whose innermost call returns a canned answer at
once, with `time.process_time` (all threads: the SQLite writer too) over N
requests, and counts Redis round trips by wrapping the client's
`execute_command`. Also: the virtual-key lookup as the middleware does it (cached).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import tempfile
import time
from typing import Any

from proxy.app import Gateway
from proxy.config import parse_config
from proxy.pipeline import ChatCall
from proxy.router import Served
from proxy.routing import resolve_chain

ANSWER = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, benchmark."},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}}
BODY = {"model": "gpt-bench", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}


def config_text(db: str, cache: bool, redis_url: str) -> str:
    return f"""
server: {{api_keys: ["master"]}}
state: {{database: "sqlite:///{db}", redis_url: "{redis_url}"}}
cache: {{enabled: {str(cache).lower()}}}
providers: {{up: {{type: openai, api_key: x, base_url: "http://127.0.0.1:9/v1"}}}}
models: {{gpt-bench: {{provider: up, model: bench, input_cost_per_mtok: 0.01, output_cost_per_mtok: 0.01}}}}
"""


class Counting:
    def __init__(self, client: Any) -> None:
        self.calls = 0
        inner = client.execute_command

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await inner(*args, **kwargs)

        client.execute_command = counted
        make_pipeline = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:  # one round trip per execute, however many commands
            pipe = make_pipeline(*args, **kwargs)
            run = pipe.execute

            async def execute(*a: Any, **k: Any) -> Any:
                self.calls += 1
                return await run(*a, **k)

            pipe.execute = execute
            return pipe

        client.pipeline = pipeline


async def run(n: int, cache: bool, directive: bytes, redis_url: str, gated: bool) -> tuple[float, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(parse_config(config_text(f"{tmp}/s.db", cache, redis_url), {}))
        gate = gateway.gate
        token, _ = await gate.keys.create({"name": "b", "rpm": 10**9, "tpm": 10**12, "budget_usd": 10**6})
        counter = Counting(gate.redis) if gate.redis is not None else None
        if gate.redis is not None:
            await gate.redis.flushall()
        chain = resolve_chain(gateway.config, BODY)
        deployment = chain[0][1][0]
        provider = gateway.config.providers[deployment.provider]

        async def innermost(call: ChatCall) -> Served[Any]:
            return Served(copy.deepcopy(ANSWER), deployment, provider, [])

        async def one() -> None:
            headers = {b"authorization": b"Bearer " + token.encode()}
            if directive:
                headers[b"x-omni-cache"] = directive
            state: dict[str, Any] = {"request_id": "r", "log": {}, "headers": headers, "response_headers": []}
            if gated:
                state["key"] = await gate.keys.resolve(token.encode())
                call = ChatCall(dict(BODY), chain, state)
                gate.permit(state, call.body)
                await gate.complete(call, innermost)
            else:
                await innermost(ChatCall(dict(BODY), chain, state))

        for _ in range(200):  # warm-up: lookups cached, first period spend loaded, entry stored
            await one()
        await gate.keys.flush()
        calls_before = counter.calls if counter else 0
        started = time.process_time()
        for _ in range(n):
            await one()
        await gate.keys.flush()  # the usage rows' write is part of the cost
        await gate.aclose()
        cpu_us = (time.process_time() - started) / n * 1e6
        return cpu_us, ((counter.calls - calls_before) / n if counter else None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    rows = [("innermost call alone (the baseline)", False, b"", "", False)]
    for backend in ([""] + ([args.redis_url] if args.redis_url else [])):
        name = "Redis" if backend else "SQLite + in-memory"
        rows += [
            (f"{name}: key lookup + rpm/tpm + budget + usage row", False, b"", backend, True),
            (f"{name}: ... + cache miss that stores", True, b"refresh", backend, True),
            (f"{name}: ... + cache hit (no upstream call)", True, b"", backend, True),
        ]
    lines = ["| path | CPU µs/request | overhead over baseline µs | Redis round trips/request |", "|---|---|---|---|"]
    base = None
    for name, cache, directive, redis_url, gated in rows:
        cpu, calls = asyncio.run(run(args.n, cache, directive, redis_url, gated))
        base = cpu if base is None else base
        lines.append(f"| {name} | {cpu:.1f} | {cpu - base:.1f} | {'-' if calls is None else f'{calls:.2f}'} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
