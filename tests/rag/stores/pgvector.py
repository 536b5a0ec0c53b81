"""PostgreSQL with pgvector: the server the `pgserver` wheel bundles (PostgreSQL 16 + the `vector` extension).

One cluster per session in a temporary directory, on 127.0.0.1 with trust authentication; each
namespace is its own database (CREATE DATABASE), so tests never see each other's tables. PostgreSQL
refuses to run as root: under root (CI) the server runs as an unprivileged user, the way pgserver
itself does it (`pgserver.utils` creates the user and opens the bundled binaries to it).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.proxy_server import free_port
from tests.rag.stores import Started, Unavailable

NAME = "pgvector"
SYSTEM_USER = "pgserver"  # the user pgserver itself creates when it runs as root
DATABASE_USER = "omni"


def _poll(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with status {process.returncode}: {log.read_text()[-2000:]}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"postgres did not become ready within {timeout} s: {log.read_text()[-2000:]}")


def _bundled_binaries() -> Path:
    """pgserver's PostgreSQL (found, not imported: its import reads the user's runtime dirs)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("the pgserver wheel is not installed (pip install -e '.[dev]')")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").exists():
        raise Unavailable(f"the pgserver wheel has no PostgreSQL binaries at {bindir}")
    return bindir


def _prepare_system_user(install: Path, root: Path) -> None:
    """As pgserver does under root: an unprivileged user that can reach the binaries and owns the data."""
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", SYSTEM_USER], check=True, capture_output=True)
    for path in (install, root):  # every folder above them must be traversable by others (they are, as a rule)
        for parent in path.parents:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
    for path in [install, *install.rglob("*")]:
        wanted = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or os.access(path, os.X_OK) else 0)
        if path.stat().st_mode & wanted != wanted:
            path.chmod(path.stat().st_mode | wanted)
    shutil.chown(root, SYSTEM_USER)


class PostgresCluster:
    """A running throwaway cluster: `url(database)`, `create_database(name)`, `stop()`."""

    def __init__(self) -> None:
        self.bindir = _bundled_binaries()
        # Not under pytest's tmp_path: pytest makes its root 0700 again at every session's start (any
        # session of this user), which would lock the server's own user out of its data.
        self.root = Path(tempfile.mkdtemp(prefix="omni-pgvector-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            _prepare_system_user(self.bindir.parent, self.root)
            self.as_user = ["runuser", "-u", SYSTEM_USER, "--"]
        data, self.log = self.root / "data", self.root / "postgres.log"
        self.port = free_port()
        done = subprocess.run([*self.as_user, str(self.bindir / "initdb"), "-D", str(data), "-A", "trust",
                               "-U", DATABASE_USER, "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*self.as_user, str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=300"], stdout=log, stderr=log)
        ready = [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DATABASE_USER,
                 "-d", "postgres"]
        try:
            _poll(lambda: subprocess.run(ready, stdout=subprocess.DEVNULL).returncode == 0, self.process, self.log)
        except BaseException:
            self.stop()
            raise

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{DATABASE_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGQUIT is postgres' "immediate" shutdown (no final checkpoint: the data is thrown away next),
            # sent to postgres itself, as runuser (the process started under root) does not pass it on.
            pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


class Pgvector(Started):
    def __init__(self) -> None:
        self.cluster = PostgresCluster()

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "pgvector", "dsn": self.cluster.create_database(namespace)}

    def stop(self) -> None:
        self.cluster.stop()


def start(workdir: Path) -> Pgvector:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"psycopg is not installed (pip install -e '.[pgvector]'): {exc}") from exc
    return Pgvector()  # its own temporary folder (see PostgresCluster), not workdir
