"""Start the real `omni-llm serve` as a subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningProxy:
    url: str  # http://127.0.0.1:PORT (no /v1)
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_entry(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The JSON access-log line of `request_id`, polled for: the server writes it in a `finally`
        that may run after the client already has the whole response."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.logs().splitlines():
                if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                    return json.loads(line)  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"no access-log line for request {request_id!r}:\n{self.logs()[-3000:]}")
            time.sleep(0.02)


def omni_llm_command() -> list[str]:
    return [sys.executable, "-m", "proxy.cli"]


@contextmanager
def run_proxy(config_yaml: str, env: dict[str, str] | None = None, args: list[str] | None = None) -> Iterator[RunningProxy]:
    """Write the config, start `omni-llm serve` on a free port, wait for /health, stop it after."""
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "models.yaml"
        config_path.write_text(config_yaml)
        log_path = Path(tmp) / "proxy.log"
        port = free_port()
        proc_env = {**os.environ, **(env or {})}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*omni_llm_command(), "serve", "--config", str(config_path), "--port", str(port), *(args or [])],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=proc_env,
            )
        proxy = RunningProxy(f"http://127.0.0.1:{port}", process, log_path)
        try:
            wait_healthy(proxy)
            yield proxy
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_healthy(proxy: RunningProxy, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(f"omni-llm serve exited early:\n{proxy.logs()}")
        try:
            if httpx.get(proxy.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"omni-llm serve did not become healthy:\n{proxy.logs()}")


def sse_events(response: httpx.Response) -> list[bytes]:
    """Raw `data:` payloads of an SSE response, byte-level, as curl -N would see them."""
    raw = b"".join(response.iter_raw())
    assert raw.endswith(b"\n\n"), "every SSE event ends with a blank line"
    return [event[len(b"data: "):] for event in raw.split(b"\n\n") if event]


def collect_tool_calls(chunks: list[Any]) -> dict[int, dict[str, str]]:
    """Streamed OpenAI tool-call deltas (SDK chunk objects) -> {index: {id, name, args}}.

    Asserts OpenAI's streaming rule: only a call's first delta carries its id.
    """
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "args": ""})
            if call.id:
                assert entry["id"] == "", "only the first delta of a call carries its id"
                entry["id"], entry["name"] = call.id, call.function.name
            entry["args"] += call.function.arguments or ""
    return calls
