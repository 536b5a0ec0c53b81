"""The embedded default: one SQLite file per namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.rag.stores import Started

NAME = "sqlite"


class Sqlite(Started):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "sqlite", "path": str(self.workdir / f"{namespace}.db")}


def start(workdir: Path) -> Sqlite:
    return Sqlite(workdir)
