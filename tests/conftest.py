"""Shared fixtures: fake upstreams on 127.0.0.1 and the real `omni-llm serve`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import openai as fake_openai
from tests.fakes.server import Recorder, serve_app


@pytest.fixture(scope="session")
def openai_upstream() -> Iterator[tuple[str, Recorder]]:
    """(base URL without /v1, recorder) of the fake OpenAI upstream."""
    recorder = Recorder()
    with serve_app(fake_openai.make_app(recorder)) as url:
        yield url, recorder


# Real redis-server / PostgreSQL on 127.0.0.1 for any test that names these fixtures.
from tests.services import fresh_postgres_url, fresh_redis_url, postgres_url, redis_url  # noqa: E402,F401
