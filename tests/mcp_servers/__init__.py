"""Real MCP servers for the tests, and helpers that run them as processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TOOLS_SERVER = str(Path(__file__).with_name("tools_server.py"))
LEGACY_SERVER = str(Path(__file__).with_name("legacy_server.py"))  # protocol 2025-06-18 only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(token: str | None = None, transport: str = "http") -> Iterator[str]:
    """tools_server.py on 127.0.0.1 over streamable HTTP (`/mcp`), `sse` (`/sse`) or `ws`; yields its URL
    once it accepts connections."""
    port = free_port()
    command = [sys.executable, TOOLS_SERVER, f"--{transport}", str(port), *(["--token", token] if token else [])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError("the MCP test server exited early")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the MCP test server did not start") from None
                time.sleep(0.05)
        yield {"http": f"http://127.0.0.1:{port}/mcp", "sse": f"http://127.0.0.1:{port}/sse",
               "ws": f"ws://127.0.0.1:{port}/"}[transport]
    finally:
        process.terminate()
        process.wait(timeout=10)
