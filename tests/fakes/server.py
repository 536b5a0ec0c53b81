"""Run an ASGI app (a fake upstream) on 127.0.0.1 in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    query: str = ""


@dataclass
class Recorder:
    """What a fake received, for assertions; one list shared by the fake's handlers."""

    requests: list[Recorded] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    closed_streams: int = 0
    # Scripted answer texts, consumed one per chat request before the fake's own behaviour (structured-output
    # tests script bad JSON, then good). With a forced tool_choice the text is that tool call's arguments.
    answers: list[str] = field(default_factory=list)

    def next_answer(self) -> str | None:
        return self.answers.pop(0) if self.answers else None

    # Turns of the model `scripted`, in the fakes' shared form (each fake renders its own wire format):
    # {"text": str | None, "tool_calls": [{"id", "name", "arguments": {...}}]}. The last turn repeats.
    script: list[dict[str, Any]] = field(default_factory=list)

    def next_turn(self) -> dict[str, Any]:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def bump(self, key: str) -> int:
        self.counters[key] = self.counters.get(key, 0) + 1
        return self.counters[key]

    def last(self) -> Recorded:
        return self.requests[-1]


@contextmanager
def serve_app(app: Any, **options: Any) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT`) of `app` served in a thread; `options` go to uvicorn
    (`ssl_certfile`/`ssl_keyfile` serve https)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake upstream did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
