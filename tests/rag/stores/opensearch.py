"""OpenSearch through the real opensearch-py client against tests/fakes/opensearch.py (a fake of its REST API:
no OpenSearch server can run here), started once per session; each namespace its own index prefix."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

from tests.rag.stores import Started, Unavailable

NAME = "opensearch"


class OpenSearchFake(Started):
    def __init__(self) -> None:
        from tests.fakes.opensearch import serve

        self.stack = contextlib.ExitStack()
        self.url, self.fake = self.stack.enter_context(serve())

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "opensearch", "url": self.url, "prefix": namespace.lower()}

    def stop(self) -> None:
        self.stack.close()


def start(workdir: Path) -> OpenSearchFake:
    if importlib.util.find_spec("opensearchpy") is None:
        raise Unavailable("opensearch-py is not installed (pip install 'omni-llm[opensearch]')")
    return OpenSearchFake()
