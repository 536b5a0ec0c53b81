"""The upstream HTTP client, side by side in one run: before (a git revision), the lean client, aiohttp's.

    python -m bench.compare [--baseline REV] [--seconds 3] [--rounds 2] [--together]

Starts the mock upstream and one `omni-llm serve` per variant (all pinned to core 0;
mock and load driver on core 1), then drives each row on each variant in turn:
OpenAI non-stream and 20-chunk streams at c=1 and c=32, and a stream framed as real
upstreams frame it (chunked, one chunk per event). "before" runs the gateway from
`git archive REV` (default: the commit before the client rework); "aiohttp" is the
current tree with `OMNI_LLM_UPSTREAM_CLIENT=aiohttp`. Each cell is the median over
rounds. Then each client alone, in this process, against the mock: CPU per request
(the old client is loaded from the baseline's translators/http.py). Prints markdown
and appends it to bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import CHAT, ROOT, cpu_seconds, drive, free_port, gateway_config, pin, python_env, wait_port

BASELINE = "5132a6f"  # main just before issue 13's client rework (same app code, the old client)
ROWS = [
    ("OpenAI non-stream", CHAT, 1),
    ("OpenAI non-stream", CHAT, 32),
    ("OpenAI stream", {**CHAT, "stream": True}, 1),
    ("OpenAI stream", {**CHAT, "stream": True}, 32),
    ("OpenAI stream, chunked upstream", {**CHAT, "model": "gpt-bench-chunked", "stream": True}, 32),
]


def export(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def start(tree: Path, config: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
         "--log-level", "warning"], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=pin(0))
    wait_port(port)
    return gateway, port


def measure(gateway: subprocess.Popen[bytes], port: int, body: dict, concurrency: int,
            seconds: float) -> tuple[float, float]:
    """(req/s, gateway CPU ms per request) of one row on one gateway."""
    warm = asyncio.run(drive(port, "/v1/chat/completions", body, concurrency, min(0.5, seconds)))
    if warm.errors or not warm.latencies:
        raise RuntimeError("a gateway failed the warm-up")
    before = cpu_seconds(gateway.pid)
    result = asyncio.run(drive(port, "/v1/chat/completions", body, concurrency, seconds))
    cpu = (cpu_seconds(gateway.pid) - before) / max(1, len(result.latencies)) * 1000
    return result.rps, cpu if not result.errors else float("nan")


def measure_together(gateways: dict[str, tuple[subprocess.Popen[bytes], int]], body: dict, concurrency: int,
                     seconds: float) -> dict[str, tuple[float, float]]:
    """Every gateway driven at once, by the same driver: whatever else the box is doing hits them alike."""
    async def drive_all(duration: float) -> list[Any]:
        return await asyncio.gather(*(drive(port, "/v1/chat/completions", body, concurrency, duration)
                                      for _, port in gateways.values()))

    if any(warm.errors or not warm.latencies for warm in asyncio.run(drive_all(min(0.5, seconds)))):
        raise RuntimeError("a gateway failed the warm-up")
    before = {name: cpu_seconds(gateway.pid) for name, (gateway, _) in gateways.items()}
    results = asyncio.run(drive_all(seconds))
    out = {}
    for (name, (gateway, _)), result in zip(gateways.items(), results, strict=True):
        cpu = (cpu_seconds(gateway.pid) - before[name]) / max(1, len(result.latencies)) * 1000
        out[name] = (result.rps, cpu if not result.errors else float("nan"))
    return out


def client_alone(old_module: Path, upstream_port: int, requests: int, rounds: int) -> list[str]:
    """CPU µs per request of each client on its own, in this process (no gateway): the closest A/B there is."""
    import importlib.util
    import json

    from translators.http import Client
    from translators.http.aio import AiohttpClient

    clients: dict[str, Any] = {}
    if old_module.exists():
        spec = importlib.util.spec_from_file_location("bench_old_http", old_module)
        old = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(old)  # type: ignore[union-attr]
        clients["before"] = old.Client
    clients["lean"] = Client
    clients["aiohttp"] = AiohttpClient
    bodies = {
        "non-stream": json.dumps({"model": "bench", "messages": []}).encode(),
        "20-chunk stream, content-length": json.dumps({"model": "bench", "stream": True}).encode(),
        "20-chunk stream, chunked": json.dumps({"model": "bench-chunked", "stream": True}).encode(),
    }

    async def cost(client: Any, body: bytes) -> float:
        async def loop(count: int) -> None:
            for _ in range(count):
                response = await client.send("/chat/completions", body)
                async for _ in response.aiter_bytes():
                    pass

        await loop(200)
        started = time.process_time()
        await asyncio.gather(*(loop(requests // 8) for _ in range(8)))
        return (time.process_time() - started) / requests * 1e6

    async def run() -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        url = f"http://127.0.0.1:{upstream_port}/v1"
        for _ in range(rounds):
            for kind, body in bodies.items():
                for name, cls in clients.items():
                    client = cls(url, {"authorization": "Bearer bench"})
                    out.setdefault((kind, name), []).append(await cost(client, body))
                    await client.aclose()
        return out

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    found = asyncio.run(run())
    lines = ["| client alone, CPU µs/request (c=8) | " + " | ".join(clients) + " |", "|---|" + "---|" * len(clients)]
    for kind in bodies:
        lines.append(f"| {kind} | " + " | ".join(f"{statistics.median(found[(kind, n)]):.1f}" for n in clients) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", default="", help="only the rows whose label contains this")
    parser.add_argument("--no-aiohttp", action="store_true")
    parser.add_argument("--together", action="store_true",
                        help="drive all gateways at once (robust on a busy box; req/s is then a share of the driver)")
    args = parser.parse_args()
    rows = [row for row in ROWS if args.rows in row[0]]
    pin(1)()
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", str(upstream_port), "20"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, preexec_fn=pin(1))
    tmp = tempfile.TemporaryDirectory()
    try:
        config = Path(tmp.name) / "bench.yaml"
        config.write_text(gateway_config(upstream_port).replace(
            "  demo: {provider: demo", "  gpt-bench-chunked: {provider: up, model: bench-chunked}\n  demo: {provider: demo", 1))
        env = python_env(str(Path(tmp.name) / "pycache"))
        variants = {
            f"before ({args.baseline})": (export(args.baseline, Path(tmp.name) / "baseline"), env),
            "lean client": (ROOT, env),
            "aiohttp client": (ROOT, {**env, "OMNI_LLM_UPSTREAM_CLIENT": "aiohttp"}),
        }
        if args.no_aiohttp:
            del variants["aiohttp client"]
        wait_port(upstream_port)
        alone = client_alone(variants[f"before ({args.baseline})"][0] / "translators" / "http.py", upstream_port,
                             4000 if args.seconds >= 2 else 1000, args.rounds)
        gateways = {name: start(tree, config, variant_env) for name, (tree, variant_env) in variants.items()}
        runs: dict[str, list[list[tuple[float, float]]]] = {name: [[] for _ in rows] for name in variants}
        try:
            for _ in range(args.rounds):
                for i, (_, body, concurrency) in enumerate(rows):
                    if args.together:
                        for name, figures in measure_together(gateways, body, concurrency, args.seconds).items():
                            runs[name][i].append(figures)
                        continue
                    # Round-robin over the variants row by row, so a busy moment hits all of them alike.
                    for name, (gateway, port) in gateways.items():
                        runs[name][i].append(measure(gateway, port, body, concurrency, args.seconds))
        finally:
            for gateway, _ in gateways.values():
                gateway.terminate()
                gateway.wait()
    finally:
        upstream.terminate()
        upstream.wait()
        tmp.cleanup()
    lines = ["| row | conc. | " + " | ".join(f"{name} req/s | {name} CPU ms/req" for name in runs) + " |",
             "|---|---|" + "---|---|" * len(runs)]
    for i, (label, _, concurrency) in enumerate(rows):
        cells = []
        for name in runs:
            rps = statistics.median(rps for rps, _ in runs[name][i])
            cpu = statistics.median(cpu for _, cpu in runs[name][i])
            cells.append(f"{rps:,.0f} | {cpu:.3f}")
        lines.append(f"| {label} | {concurrency} | " + " | ".join(cells) + " |")
    lines += [""] + alone
    mode = ("all gateways driven at once (req/s is each one's share of one driver)" if args.together
            else "one gateway at a time, round-robin per row")
    lines.append(f"\n- {args.rounds} rounds of {args.seconds:g} s per row (median), {mode}, 20-chunk streams, "
                 "gateways on core 0, mock upstream and load driver on core 1")
    report = "\n".join(lines)
    print(report)
    with (ROOT / "bench" / "results.md").open("a") as results:
        results.write("\n## Upstream client, side by side\n\n" + report + "\n")
    return 0


if __name__ == "__main__":
    os.environ.pop("OMNI_LLM_UPSTREAM_CLIENT", None)
    sys.exit(main())
