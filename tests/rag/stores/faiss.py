"""The FAISS store: a fresh directory (meta.db and one index file per collection) per namespace."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tests.rag.stores import Started, Unavailable

NAME = "faiss"


class Faiss(Started):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "faiss", "path": str(self.workdir / namespace)}


def start(workdir: Path) -> Faiss:
    if importlib.util.find_spec("faiss") is None:
        raise Unavailable("faiss-cpu is not installed: pip install 'omni-llm[faiss]'")
    return Faiss(workdir)
