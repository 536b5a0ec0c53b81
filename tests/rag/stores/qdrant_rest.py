"""The `qdrant` store in url (server) mode against tests/fakes/qdrant.py, a fake of Qdrant's REST API.

The fake answers with qdrant-client's local mode, so these rows check the server-mode code path and
the wire shapes, not a real server's behaviour. Each namespace is its own collection-name `prefix`
on the one fake, as several gateways would share one Qdrant server.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tests.fakes.server import Recorder, serve_app
from tests.rag.stores import Started, Unavailable

NAME = "qdrant_rest"


class QdrantRest(Started):
    def __init__(self) -> None:
        from tests.fakes import qdrant

        self.recorder = Recorder()
        self._stack = contextlib.ExitStack()
        self.url = self._stack.enter_context(serve_app(qdrant.make_app(self.recorder)))

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "qdrant", "url": self.url, "prefix": namespace}

    def stop(self) -> None:
        self._stack.close()


def start(workdir: Path) -> QdrantRest:
    try:
        import qdrant_client  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"qdrant-client is not installed (pip install 'omni-llm[qdrant]'): {exc}") from exc
    return QdrantRest()
