"""A real S3-compatible server for the RAG tests: moto's server mode on 127.0.0.1 (started and stopped here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_s3() -> Iterator[str]:
    """Yield the endpoint URL of a moto S3 server on 127.0.0.1 (skipped loudly if moto is not installed)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:  # pragma: no cover - moto[server] is a dev dependency
        pytest.skip("moto[server] is not installed: the S3 tests need it (pip install -e '.[dev]')")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
