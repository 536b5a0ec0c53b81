"""Qdrant in local mode (qdrant-client's `path`): a fresh directory per namespace.

There is no Qdrant server binary on PyPI, so the suite runs the store against the client's local
mode; tests/test_rag_store_qdrant.py covers what it can of server mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.rag.stores import Started, Unavailable

NAME = "qdrant"


class QdrantLocal(Started):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "qdrant", "path": str(self.workdir / namespace), "prefix": "omni"}


def start(workdir: Path) -> QdrantLocal:
    try:
        import qdrant_client  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"qdrant-client is not installed (pip install 'omni-llm[qdrant]'): {exc}") from exc
    return QdrantLocal(workdir)
