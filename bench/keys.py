"""What keys, limits, budgets, the usage log and the cache cost per request (CONTRACT §12).

    python -m bench.keys [--seconds 5] [--quick] [--root /path/to/another/checkout]

Same set-up as bench/run.py (mock upstream, one pinned gateway worker, keep-alive
closed loops, gateway CPU from /proc) over one OpenAI non-stream request, in these
configurations: nothing configured; master key; virtual key (SQLite); virtual key
with rpm+tpm+budget; + cache answering hits; + cache with `x-omni-cache: refresh`
(every request misses and stores: the whole path); the same on Redis, with the
Redis commands per request counted from `INFO commandstats`. `--root` runs the
"nothing configured" row against another checkout (e.g. main before this change)
for a before/after figure. Writes bench/keys-results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import CHAT, ROOT, Result, _connection, cpu_seconds, free_port, pin, python_env, wait_port

MASTER = "bench-master-key"


def config_text(upstream: int, db: str, extra: str = "", master: bool = True, redis: str = "") -> str:
    keys = f'server: {{api_keys: ["{MASTER}"]}}\n' if master else ""
    state = f'state: {{database: "sqlite:///{db}", redis_url: "{redis}"}}\n' if extra or redis else ""
    return keys + state + extra + f"""
providers:
  up: {{type: openai, api_key: bench, base_url: "http://127.0.0.1:{upstream}/v1", max_retries: 0}}
models:
  gpt-bench: {{provider: up, model: bench, input_cost_per_mtok: 0.01, output_cost_per_mtok: 0.01}}
"""


async def drive(port: int, token: str | None, concurrency: int, seconds: float, headers: str = "") -> Result:
    import time

    payload = json.dumps(CHAT).encode()
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               f"{auth}{headers}content-length: {len(payload)}\r\n\r\n").encode() + payload
    result = Result()
    start = time.perf_counter()
    await asyncio.gather(*(_connection("127.0.0.1", port, request, start + seconds, result)
                           for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def redis_calls(port: int) -> int:
    """Commands Redis has run so far (this benchmark's own INFO excluded)."""
    import redis

    stats = redis.Redis(port=port).info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_script"))


def create_key(config: Path, *flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "keys", "create", "--name", "bench", "--config",
                           str(config), *flags], capture_output=True, text=True, check=True, cwd=ROOT)
    return done.stdout.splitlines()[0]


def measure(root: Path, config: Path, token: str | None, seconds: float, headers: str = "",
            redis_port: int | None = None) -> list[tuple[int, Result, float, float | None]]:
    port = free_port()
    env = python_env(str(config.parent / "pycache"))
    gateway = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
                                "--log-level", "warning"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env, preexec_fn=pin(0))
    rows = []
    try:
        wait_port(port)
        for concurrency in (1, 32):
            asyncio.run(drive(port, token, concurrency, min(1.0, seconds), headers))  # warm-up (and the key lookup)
            before = cpu_seconds(gateway.pid)
            calls = redis_calls(redis_port) if redis_port else 0
            result = asyncio.run(drive(port, token, concurrency, seconds, headers))
            done = max(1, len(result.latencies))
            cpu = (cpu_seconds(gateway.pid) - before) / done * 1000
            per_request = (redis_calls(redis_port) - calls) / done if redis_port else None
            rows.append((concurrency, result, cpu, per_request))
    finally:
        gateway.terminate()
        gateway.wait()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", help="another checkout for the 'nothing configured (before)' row")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    pin(1)()
    tmp = Path(tempfile.mkdtemp(prefix="omni-bench-keys-"))
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", str(upstream_port), "20"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, preexec_fn=pin(1))
    redis_port = free_port()
    redis_bin = shutil.which("redis-server")
    redis = subprocess.Popen([redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
                             stdout=subprocess.DEVNULL, preexec_fn=pin(1)) if redis_bin else None
    db = str(tmp / "state.db")
    big = "--rpm 100000000 --tpm 1000000000 --budget-usd 1000000".split()
    limits_cache = "cache: {enabled: true}\n"
    plain = tmp / "plain.yaml"
    plain.write_text(config_text(upstream_port, db, master=False))
    master = tmp / "master.yaml"
    master.write_text(config_text(upstream_port, db))
    keyed = tmp / "keyed.yaml"
    keyed.write_text(config_text(upstream_port, db, extra="limits: {rpm: 0}\n"))
    cached = tmp / "cached.yaml"
    cached.write_text(config_text(upstream_port, db, extra=limits_cache))
    scenarios: list[tuple[str, Path, Path, str | None, str, int | None]] = []
    try:
        wait_port(upstream_port)
        virtual = create_key(keyed)
        limited = create_key(keyed, *big)
        if args.root:
            scenarios.append(("nothing configured (before: --root)", Path(args.root), plain, None, "", None))
        scenarios += [
            ("nothing configured", ROOT, plain, None, "", None),
            ("master key", ROOT, master, MASTER, "", None),
            ("virtual key, SQLite, usage log", ROOT, keyed, virtual, "", None),
            ("virtual key + rpm/tpm + budget", ROOT, keyed, limited, "", None),
            ("+ cache, every request a hit", ROOT, cached, limited, "", None),
            ("+ cache, every request a miss that stores (refresh)", ROOT, cached, limited, "x-omni-cache: refresh\r\n",
             None),
        ]
        if redis:
            wait_port(redis_port)
            url = f"redis://127.0.0.1:{redis_port}/0"
            on_redis = tmp / "redis.yaml"
            on_redis.write_text(config_text(upstream_port, db, extra=limits_cache, redis=url))
            scenarios += [
                ("Redis: virtual key + rpm/tpm + budget + cache hit", ROOT, on_redis, limited, "", redis_port),
                ("Redis: ... + cache miss that stores (refresh)", ROOT, on_redis, limited,
                 "x-omni-cache: refresh\r\n", redis_port),
            ]
        lines = ["| configuration | conc. | req/s | p50 ms | gateway CPU ms/req | Redis commands/req | errors |",
                 "|---|---|---|---|---|---|---|"]
        for name, root, config, token, headers, rport in scenarios:
            for concurrency, result, cpu, per_request in measure(root, config, token, seconds, headers, rport):
                calls = f"{per_request:.2f}" if per_request is not None else "-"
                lines.append(f"| {name} | {concurrency} | {result.rps:,.0f} | {result.pct(50):.2f} | {cpu:.3f} | "
                             f"{calls} | {result.errors} |")
    finally:
        upstream.terminate()
        upstream.wait()
        if redis:
            redis.terminate()
            redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    report = "\n".join(lines + ["", f"- {seconds:g} s per row; gateway pinned to core 0, upstream, Redis and driver to core 1"])
    print(report)
    (ROOT / "bench" / "keys-results.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
