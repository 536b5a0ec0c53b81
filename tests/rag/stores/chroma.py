"""Chroma in local mode: a persistent database directory per test namespace (the official client's own engine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tests.rag.stores import Started, Unavailable

NAME = "chroma"


class ChromaLocal(Started):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "chroma", "path": str(self.workdir / namespace)}


def start(workdir: Path) -> ChromaLocal:
    if importlib.util.find_spec("chromadb") is None:
        raise Unavailable("the chromadb client is not installed (pip install 'omni-llm[chroma]')")
    return ChromaLocal(workdir)
