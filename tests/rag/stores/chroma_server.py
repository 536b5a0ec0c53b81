"""Chroma in server mode: the chromadb package's own server (`chroma run`) on 127.0.0.1, started once per
session; each test namespace is its own collection-name `prefix` on it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.proxy_server import free_port
from tests.rag.stores import Started, Unavailable

NAME = "chroma_server"


class ChromaServer(Started):
    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "chroma", "url": self.url, "prefix": namespace + "-"}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_server(workdir: Path, timeout: float = 30.0) -> ChromaServer:
    """`chroma run` (the Rust server the chromadb wheel ships) on a free port, polled until its heartbeat answers."""
    if importlib.util.find_spec("chromadb") is None:
        raise Unavailable("the chromadb client is not installed (pip install 'omni-llm[chroma]')")
    port = free_port()
    log = (workdir / "chroma-server.log").open("wb")
    argv = ["chroma", "run", "--path", str(workdir / "data"), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from chromadb.cli.cli import app; sys.argv = {argv!r}; app()"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                return ChromaServer(process, url)
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            tail = (workdir / "chroma-server.log").read_text(errors="replace")[-2000:]
            raise Unavailable(f"`chroma run` did not become ready on port {port}: {tail}")
        time.sleep(0.05)


def start(workdir: Path) -> ChromaServer:
    return run_server(workdir)
