"""The stores the conformance suite (tests/test_rag_stores.py) runs against, one module each.

A module here defines `NAME` and `start(workdir) -> Backend`. A Backend gives the `rag.store`
settings of a fresh, empty store (`settings(namespace)`: each test its own namespace, one call per
test; two opens of the same settings reach the same data), `open(settings)` (default: the proxy's own
`open_store`) and `stop()`. `start` raises `Unavailable` when the store's server or client cannot run
here: the suite then skips loudly, and under CI (`CI=true`) fails instead.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from proxy.rag.store import Store, open_store


class Unavailable(Exception):
    """The store cannot run on this machine; the message says what is missing."""


class Backend(Protocol):
    def settings(self, namespace: str) -> dict[str, Any]: ...

    def open(self, settings: Mapping[str, Any]) -> Store: ...

    def stop(self) -> None: ...


class Started:
    """A Backend base: `open` goes through the proxy's `open_store`, `stop` does nothing."""

    def open(self, settings: Mapping[str, Any]) -> Store:
        return open_store(settings)

    def stop(self) -> None:
        pass


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def start(name: str, workdir: Path) -> Backend:
    module = importlib.import_module(f"{__name__}.{name}")
    return module.start(workdir)  # type: ignore[no-any-return]
