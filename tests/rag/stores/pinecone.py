"""Pinecone, through the official SDK against the fake of its REST API (tests/fakes/pinecone.py).

No Pinecone service can run here: the fake speaks the 2026-07 wire format the SDK sends. One fake
per session, one 32-dimension dotproduct index; each test its own `prefix` (so its own namespaces).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tests.fakes.pinecone import FakePinecone
from tests.fakes.server import serve_app
from tests.rag.stores import Started, Unavailable

NAME = "pinecone"
DIMENSION = 256  # the local embedding model's width (the engine row); the narrower rows are zero-padded


class Pinecone(Started):
    def __init__(self) -> None:
        try:
            import pinecone  # noqa: F401
        except ImportError:
            raise Unavailable("the pinecone SDK is not installed: pip install 'omni-llm[pinecone]'") from None
        self.fake = FakePinecone()
        self._serving = contextlib.ExitStack()
        self.fake.base_url = self._serving.enter_context(serve_app(self.fake.app()))
        self.host = self.fake.create_index("conformance", DIMENSION)

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "pinecone", "api_key": self.fake.api_key, "index": "conformance", "host": self.host,
                "prefix": namespace}

    def stop(self) -> None:
        self._serving.close()


def start(workdir: Path) -> Pinecone:
    return Pinecone()
