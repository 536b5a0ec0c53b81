"""Omni-LLM benchmark: one command, a markdown report.

    python -m bench.run [--seconds 5] [--chunks 20] [--quick] [--workers 1]

Starts the mock upstream (bench/mock_upstream.py) and `omni-llm serve` (one worker,
pinned to core 0; upstream and load driver pinned to core 1 when the machine has
two or more cores), then drives a closed loop of keep-alive connections with a
raw-socket HTTP/1.1 client (httptools) and reports requests/s, latency
percentiles and the overhead against hitting the mock directly, gateway CPU per
request and per stream (from /proc), idle and peak RSS, RSS across a soak of
100,000 requests and 10,000 streams, start-to-first-answer, `import proxy.app`
time (bytecode cached, as installed) and throughput by `--workers` count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httptools

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
CHAT = {"model": "gpt-bench", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, full response
    first_tokens: list[float] = field(default_factory=list)  # seconds to the first content byte
    ttfbs: list[float] = field(default_factory=list)  # seconds to the status line and headers
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, p: float, values: list[float] | None = None) -> float:
        values = sorted(self.latencies if values is None else values)
        return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else float("nan")


class _Response:
    def __init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.first_content: float | None = None
        self.headers_at = 0.0
        self.status = 0

    def on_status(self, status: bytes) -> None:
        pass

    def on_headers_complete(self) -> None:
        self.headers_at = time.perf_counter()

    def on_body(self, body: bytes) -> None:
        if self.first_content is None and b"tok0" in body or (self.first_content is None and b"Hello" in body):
            self.first_content = time.perf_counter()

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(True)


async def _connection(host: str, port: int, request: bytes, deadline: float, result: Result,
                      count: float = float("inf")) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and count > 0:
            count -= 1
            state = _Response()
            parser = httptools.HttpResponseParser(state)
            start = time.perf_counter()
            writer.write(request)
            while not state.done.done():
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                parser.feed_data(data)
            if parser.get_status_code() != 200:
                result.errors += 1
                continue
            end = time.perf_counter()
            result.latencies.append(end - start)
            result.ttfbs.append(state.headers_at - start)
            if state.first_content is not None:
                result.first_tokens.append(state.first_content - start)
    finally:
        writer.close()


async def drive(port: int, path: str, body: dict, concurrency: int, seconds: float) -> Result:
    payload = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               f"authorization: Bearer bench\r\ncontent-length: {len(payload)}\r\n\r\n").encode() + payload
    result = Result()
    start = time.perf_counter()
    await asyncio.gather(*(_connection("127.0.0.1", port, request, start + seconds, result) for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pin(core: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        if os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
            os.sched_setaffinity(0, {core})
    return apply


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listening on {port}")


def first_answer_time(port: int, started: float) -> float:
    import urllib.request

    body = json.dumps({**CHAT, "model": "demo"}).encode()
    while True:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                         {"content-type": "application/json"})
            urllib.request.urlopen(req, timeout=1).read()
            return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)


def gateway_config(upstream: int) -> str:
    return f"""
providers:
  up: {{type: openai, api_key: bench, base_url: "http://127.0.0.1:{upstream}/v1", max_retries: 0}}
  claude: {{type: anthropic, api_key: bench, base_url: "http://127.0.0.1:{upstream}", max_retries: 0}}
  demo: {{type: mock}}
models:
  gpt-bench: {{provider: up, model: bench}}
  claude-bench: {{provider: claude, model: claude-haiku-4-5}}
  demo: {{provider: demo, model: mock}}
"""


def python_env(pycache: str) -> dict[str, str]:
    """Bytecode cached, as in an installed package (pip compiles; the image ships .pyc files)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def import_time_ms(env: dict[str, str]) -> float:
    code = "import time; t=time.perf_counter(); import proxy.app; print((time.perf_counter()-t)*1000)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                                 check=True).stdout) for _ in range(4)]
    return statistics.median(runs[1:])  # the first run fills the bytecode cache


def start_gateway(config: Path, port: int, workers: int, env: dict[str, str], core: int | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
         "--log-level", "warning", "--workers", str(workers)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        preexec_fn=pin(core) if core is not None else None)


def soak(port: int, pid: int, requests: int, streams: int) -> list[str]:
    """RSS after a warm-up, then after `requests` non-stream requests and `streams` streams."""
    asyncio.run(drive_count(port, CHAT, 32, 5000))
    asyncio.run(drive_count(port, {**CHAT, "stream": True}, 32, 1000))
    before = rss_mib(pid)
    asyncio.run(drive_count(port, CHAT, 32, requests))
    after_requests = rss_mib(pid)
    asyncio.run(drive_count(port, {**CHAT, "stream": True}, 32, streams))
    after = rss_mib(pid)
    growth = (after - before) / before * 100
    return [(f"- RSS over {requests:,} requests and {streams:,} streams (after warm-up): {before:.1f} MiB -> "
             f"{after_requests:.1f} MiB -> {after:.1f} MiB ({growth:+.1f} %)")]


async def drive_count(port: int, body: dict, concurrency: int, total: int) -> None:
    """Exactly `total` requests over `concurrency` keep-alive connections (no timing)."""
    payload = json.dumps(body).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               f"content-length: {len(payload)}\r\n\r\n").encode() + payload
    result = Result()
    await asyncio.gather(*(_connection("127.0.0.1", port, request, float("inf"), result, total // concurrency)
                           for _ in range(concurrency)))
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests during the soak")


def with_wrk(direct: int, gateway: int, pid: int, seconds: float, tmp: Path) -> list[str]:
    """The non-stream rows at c=32 again, driven by wrk (C, one thread on core 1) when it is installed."""
    if shutil.which("wrk") is None:
        return ["- wrk: not installed (the Python driver above is the only load generator)"]
    script = tmp / "post.lua"
    script.write_text(f"wrk.method = 'POST'\nwrk.body = '{json.dumps(CHAT)}'\n"
                      "wrk.headers['content-type'] = 'application/json'\nwrk.headers['authorization'] = 'Bearer bench'\n")
    lines = []
    for name, port in (("direct", direct), ("gateway, OpenAI", gateway)):
        cpu_before = cpu_seconds(pid)
        out = subprocess.run(["wrk", "-t1", "-c32", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script),
                              f"http://127.0.0.1:{port}/v1/chat/completions"],
                             capture_output=True, text=True, check=True, preexec_fn=pin(1)).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        pcts = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.MULTILINE))
        cpu = (cpu_seconds(pid) - cpu_before) / max(1, total) * 1000
        cpu_text = f", gateway CPU {cpu:.3f} ms/req" if port == gateway else ""
        lines.append(f"- wrk, {name} non-stream, c=32: {rps:,.0f} req/s, p50 {pcts.get('50')}, "
                     f"p90 {pcts.get('90')}, p99 {pcts.get('99')}{cpu_text}")
    return lines


def scaling(config: Path, env: dict[str, str], seconds: float) -> list[str]:
    """Throughput by worker count, nothing pinned (the load driver and upstream share the cores)."""
    lines = []
    for workers in sorted({1, min(2, os.cpu_count() or 1), os.cpu_count() or 1}):
        port = free_port()
        gateway = start_gateway(config, port, workers, env, None)
        try:
            wait_port(port)
            asyncio.run(drive(port, "/v1/chat/completions", CHAT, 64, min(0.5, seconds)))
            result = asyncio.run(drive(port, "/v1/chat/completions", CHAT, 64, seconds))
            lines.append(f"- `--workers {workers}`, unpinned, c=64 non-stream: {result.rps:,.0f} req/s")
        finally:
            gateway.terminate()
            gateway.wait()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 s per scenario, a 10x shorter soak (smoke test)")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    soak_requests, soak_streams = (10_000, 1_000) if args.quick else (100_000, 10_000)
    pin(1)()
    upstream_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", str(upstream_port), str(args.chunks)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, preexec_fn=pin(1))
    tmp = tempfile.TemporaryDirectory()
    config = Path(tmp.name) / "bench.yaml"
    config.write_text(gateway_config(upstream_port))
    env = python_env(str(Path(tmp.name) / "pycache"))
    import_ms = import_time_ms(env)
    warm = start_gateway(config, gw_port, 1, env, 0)  # a first start fills the bytecode cache
    first_answer_time(gw_port, time.perf_counter())
    warm.terminate()
    warm.wait()
    started = time.perf_counter()
    gateway = start_gateway(config, gw_port, args.workers, env, 0)
    rows: list[str] = []
    try:
        wait_port(upstream_port)
        startup = first_answer_time(gw_port, started)
        idle_rss = rss_mib(gateway.pid)
        stream_body = {**CHAT, "stream": True}
        scenarios = [
            ("direct, non-stream", upstream_port, "/v1/chat/completions", CHAT, (1, 32, 128), False),
            ("gateway, OpenAI non-stream", gw_port, "/v1/chat/completions", CHAT, (1, 32, 128), True),
            ("direct, stream", upstream_port, "/v1/chat/completions", stream_body, (1, 32, 128), False),
            ("gateway, OpenAI stream", gw_port, "/v1/chat/completions", stream_body, (1, 32, 128), True),
            ("gateway, Anthropic non-stream", gw_port, "/v1/chat/completions", {**CHAT, "model": "claude-bench"}, (1, 32), True),
            ("gateway, Anthropic stream", gw_port, "/v1/chat/completions", {**stream_body, "model": "claude-bench"}, (1, 32), True),
        ]
        baseline: dict[tuple[bool, int], Result] = {}
        rows.append("| scenario | conc. | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | TTFB p50 ms | "
                    "first token p50 ms | gateway CPU ms/req | errors |")
        rows.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, port, path, body, levels, through_gateway in scenarios:
            for concurrency in levels:
                asyncio.run(drive(port, path, body, concurrency, min(0.5, seconds)))  # warm-up
                cpu_before = cpu_seconds(gateway.pid)
                result = asyncio.run(drive(port, path, body, concurrency, seconds))
                cpu = (cpu_seconds(gateway.pid) - cpu_before) / max(1, len(result.latencies)) * 1000
                stream = body.get("stream", False)
                if not through_gateway:
                    baseline[(stream, concurrency)] = result
                base = baseline.get((stream, concurrency))
                added = result.pct(50) - base.pct(50) if base and through_gateway else float("nan")
                rows.append(
                    f"| {name} | {concurrency} | {result.rps:,.0f} | {result.pct(50):.2f} | {result.pct(90):.2f} | "
                    f"{result.pct(99):.2f} | {added:.2f} | {result.pct(50, result.ttfbs):.2f} | "
                    f"{result.pct(50, result.first_tokens):.2f} | "
                    f"{cpu if through_gateway else float('nan'):.3f} | {result.errors} |")
        rows += [""] + with_wrk(upstream_port, gw_port, gateway.pid, seconds, Path(tmp.name))
        rows += soak(gw_port, gateway.pid, soak_requests, soak_streams)
        peak = rss_mib(gateway.pid, "VmHWM")
        rows += [f"- start to first answer: {startup * 1000:.0f} ms", f"- `import proxy.app`: {import_ms:.0f} ms",
                 f"- gateway RSS: idle {idle_rss:.1f} MiB, peak {peak:.1f} MiB (workers={args.workers})",
                 (f"- {seconds:g} s per row, {args.chunks}-chunk streams, gateway pinned to core 0, "
                  "upstream and load driver to core 1")]
        gateway.terminate()
        gateway.wait()
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        rows += scaling(config, env, seconds)
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait()
        upstream.wait()
        tmp.cleanup()
    report = "\n".join(rows)
    print(report)
    (ROOT / "bench" / "results.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
