"""Real service dependencies started for tests on 127.0.0.1: redis-server and PostgreSQL.

Fixtures (registered in conftest.py, reusable by any test):
- `redis_url`: a session-wide `redis-server` (no persistence) -> `redis://127.0.0.1:PORT/0`;
  `fresh_redis_url` flushes it first.
- `postgres_url`: a session-wide throwaway cluster (initdb + postgres, trust auth on
  127.0.0.1; run as the `postgres` user when the tests run as root) -> `postgresql://...`;
  `fresh_postgres_url` gives each test its own database.
A missing binary skips the test with the reason; under CI (`CI=true`, where .ci/run
installs the Debian packages) it is an error instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.proxy_server import free_port


def _absent(what: str) -> None:
    message = f"{what} is not installed (Debian: apt-get install -y {what}); see .ci/run"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _poll(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early with status {process.returncode}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout} s")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        _absent("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _poll(lambda: _redis_ping(port), process, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def postgres_server() -> Iterator[str]:
    bindir = _postgres_bin()
    if bindir is None:
        _absent("postgresql")
    as_user: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="omni-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(tmp, "postgres")
    data = tmp / "data"
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "omni", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process = subprocess.Popen(
        [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(tmp),
         "-c", "fsync=off", "-c", "max_connections=200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "omni", "-d", "postgres"]
    try:
        _poll(lambda: subprocess.run(ready, stdout=subprocess.DEVNULL).returncode == 0, process, "postgres")
        yield f"postgresql://omni@127.0.0.1:{port}/postgres"
    finally:
        process.terminate()
        process.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def fresh_redis_url(redis_url: str) -> str:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        assert sock.recv(16).startswith(b"+OK")
    return redis_url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> str:
    """A new, empty database on the session's server."""
    name = "t_" + uuid.uuid4().hex[:12]
    bindir = _postgres_bin()
    assert bindir is not None
    host, port = postgres_url.split("@")[1].split("/")[0].split(":")
    subprocess.run([str(bindir / "createdb"), "-h", host, "-p", port, "-U", "omni", name], check=True)
    return postgres_url.rsplit("/", 1)[0] + "/" + name
