"""Reliability under faults and hostile clients: RSS and answers of `omni-llm serve` (loopback only).

    python -m bench.reliability [--requests 20000] [--streams 5000] [--quick]

Starts bench/mock_upstream.py (the good upstream), a hanging upstream (reads a request, never
answers; counts open connections) and `omni-llm serve`, then, measuring the gateway's RSS after
each phase:

1. soak: N requests and M streams at concurrency 32, mixed with faults — 10 % to a refused
   upstream (502 after a retry), 10 % through a strategy whose first model is that upstream
   (fallback), 10 % unknown model names, all unique (404; metric-label cardinality); a fifth of
   the streams aborted by the client after their first chunk, 5 % of them to the refused
   upstream;
2. slowloris: 1,000 connections trickle request headers while /health and chat are timed;
3. disconnect storm: 2,000 clients send a request to the hanging upstream's model and hang up
   before the first byte; afterwards the hanging upstream must have no connection left open
   (every upstream call was cancelled) and it must have seen one request per client (no retries).
Bounded in count and time; everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.run import ROOT, free_port, python_env, rss_mib, start_gateway, wait_port

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


class Hanging:
    """An upstream that reads each request and never answers."""

    def __init__(self) -> None:
        self.requests = 0
        self.open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            while await reader.read(4096):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


def config(good: int, hanging: int, refused: int) -> str:
    return f"""
server: {{header_timeout_s: 5, body_timeout_s: 5, max_connections: 512, request_timeout_s: 60}}
router: {{cooldown_failures: 1000000}}
providers:
  good: {{type: openai, api_key: sk-bench, base_url: "http://127.0.0.1:{good}/v1", max_retries: 0}}
  refused: {{type: openai, api_key: sk-bench, base_url: "http://127.0.0.1:{refused}/v1", max_retries: 1}}
  hang: {{type: openai, api_key: sk-bench, base_url: "http://127.0.0.1:{hanging}/v1", max_retries: 2, timeout_s: 30}}
models:
  ok: {{provider: good, model: bench}}
  broken: {{provider: refused, model: bench}}
  stuck: {{provider: hang, model: bench}}
strategies:
  fallback: [broken, ok]
"""


async def soak(client: httpx.AsyncClient, total: int, streams: int) -> dict[str, int]:
    statuses: dict[str, int] = {}
    counter = iter(range(total + streams))

    def note(key: str) -> None:
        statuses[key] = statuses.get(key, 0) + 1

    async def one(i: int) -> None:
        if i < total:
            kind = i % 10
            model = {0: "broken", 1: "fallback", 2: f"no-such-model-{i}"}.get(kind, "ok")
            response = await client.post("/v1/chat/completions", json={**CHAT, "model": model})
            note(f"json {model.split('-')[0]} {response.status_code}")
            return
        j = i - total
        model = "broken" if j % 20 == 0 else "ok"
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": model, "stream": True}) as r:
            if j % 5 == 1 and r.status_code == 200:
                async for _ in r.aiter_raw():
                    break  # the client aborts after its first read
                note("stream aborted")
                return
            async for _ in r.aiter_raw():
                pass
            note(f"stream {model} {r.status_code}")

    async def worker() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(32)))
    return statuses


async def slowloris(port: int, count: int) -> tuple[list[float], int]:
    socks = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        socks.append(writer)
    latencies = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(50):
            started = time.perf_counter()
            response = await client.get("/health")
            assert response.status_code == 200
            latencies.append(time.perf_counter() - started)
        answered = (await client.post("/v1/chat/completions", json={**CHAT, "model": "ok"})).status_code
    for writer in socks:
        writer.close()
    return latencies, answered


async def storm(port: int, hanging: Hanging, clients: int) -> None:
    body = (b'{"model": "stuck", "messages": [{"role": "user", "content": "x"}]}')
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()

    async def one() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        await asyncio.sleep(0.05)  # the request is in flight upstream: now hang up
        writer.transport.abort()

    for start in range(0, clients, 100):
        await asyncio.gather(*(one() for _ in range(min(100, clients - start))))


async def main_async(args: argparse.Namespace) -> list[str]:
    hanging = Hanging()
    hang_server = await asyncio.start_server(hanging.handle, "127.0.0.1", 0)
    hang_port = hang_server.sockets[0].getsockname()[1]
    up_port, gw_port, refused = free_port(), free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", str(up_port), "20"], cwd=ROOT)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "models.yaml"
        path.write_text(config(up_port, hang_port, refused))
        env = python_env(str(Path(tmp) / "pycache"))
        gateway = start_gateway(path, gw_port, 1, env, None)
        try:
            wait_port(up_port)
            wait_port(gw_port)
            pid = gateway.pid
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw_port}", timeout=60,
                                         limits=httpx.Limits(max_connections=64)) as client:
                await soak(client, 1000, 200)  # warm-up
                rss = [("after warm-up", rss_mib(pid))]
                started = time.perf_counter()
                statuses = await soak(client, args.requests, args.streams)
                rss.append((f"after {args.requests:,} requests + {args.streams:,} streams with faults", rss_mib(pid)))
                soak_s = time.perf_counter() - started
                metrics = (await client.get("/metrics")).text
            latencies, answered = await slowloris(gw_port, 1000)
            rss.append(("after 1,000 slowloris connections", rss_mib(pid)))
            before = hanging.requests
            await storm(gw_port, hanging, 2000)
            deadline = time.monotonic() + 30
            while hanging.open and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            rss.append(("after a 2,000-client disconnect storm", rss_mib(pid)))
            peak = rss_mib(pid, "VmHWM")
        finally:
            gateway.terminate()
            gateway.wait(20)
            upstream.terminate()
            hang_server.close()
    rows.append(f"- soak: {args.requests:,} requests + {args.streams:,} streams in {soak_s:.0f} s; answers: "
                + ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())))
    rows.append(f"- `/metrics` after the soak ({args.requests // 10:,} unique unknown model names): "
                f"{len(metrics):,} bytes, {metrics.count(chr(10)):,} lines")
    rows.append("- gateway RSS: " + "; ".join(f"{label} {value:.1f} MiB" for label, value in rss)
                + f"; peak {peak:.1f} MiB")
    rows.append(f"- /health while 1,000 connections trickle headers: p50 {statistics.median(latencies) * 1000:.1f} ms, "
                f"max {max(latencies) * 1000:.1f} ms (50 probes); a chat request then: HTTP {answered}")
    rows.append(f"- disconnect storm: 2,000 clients hung up before the first byte; the hanging upstream got "
                f"{hanging.requests - before:,} requests (at most one per client: the others left before the call) "
                f"and {hanging.open} of its connections were still open afterwards")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=5_000)
    parser.add_argument("--quick", action="store_true", help="a 10x smaller soak (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.streams = args.requests // 10, args.streams // 10
    socket.setdefaulttimeout(60)
    print("\n".join(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
