"""An in-memory RecordStore: the shared catalog half (proxy/rag/stores/base.py) on plain dicts.

Not a product store: it checks the base class and the suite itself with no server in the way.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from proxy.rag.search import Filter, document_terms, matches, query_terms
from proxy.rag.store import Collection, Store
from proxy.rag.stores.base import ChunkRow, RecordStore, unit

NAME = "memory"
_SPACES: dict[str, tuple[dict[str, dict[str, Any]], dict[str, ChunkRow]]] = {}


class MemoryStore(RecordStore):
    def __init__(self, namespace: str) -> None:
        super().__init__()
        self.records, self.chunks = _SPACES.setdefault(namespace, ({}, {}))

    def _record_put(self, key: str, record: Mapping[str, Any]) -> None:
        self.records[key] = copy.deepcopy(dict(record))

    def _record_get(self, key: str) -> dict[str, Any] | None:
        found = self.records.get(key)
        return copy.deepcopy(found) if found is not None else None

    def _record_list(self, prefix: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(r) for k, r in self.records.items() if k.startswith(prefix)]

    def _record_delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.records.pop(key, None)

    def _chunks_add(self, collection: Collection, rows: Sequence[ChunkRow]) -> None:
        self.chunks.update((row.id, row) for row in rows)

    def _chunks_delete(self, collection_id: str, source: str | None, keep_generation: str | None = None) -> None:
        for row in list(self.chunks.values()):
            if row.collection_id == collection_id and source in (None, row.source) \
                    and row.generation != keep_generation:
                del self.chunks[row.id]

    def _chunks_get(self, chunk_ids: Sequence[str]) -> list[ChunkRow]:
        return [self.chunks[i] for i in chunk_ids if i in self.chunks]

    def _candidates(self, collection_ids: Sequence[str], where: Filter | None) -> list[ChunkRow]:
        return [r for r in self.chunks.values()
                if r.collection_id in collection_ids and (where is None or matches(where, r.fields()))]

    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        query = unit(vector)
        rows = [r for r in self._candidates(collection_ids, where) if r.vector is not None
                and r.vector.shape == query.shape]
        return sorted(((r.id, float(r.vector @ query)) for r in rows), key=lambda p: -p[1])[:k]  # type: ignore[operator]

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        terms = query_terms(query)
        scored = []
        for row in self._candidates(collection_ids, where):
            weights = document_terms(row.content)
            score = sum(weights.get(t, 0.0) * w for t, w in terms.items())
            if score > 0:
                scored.append((row.id, score / (1.0 + score)))
        return sorted(scored, key=lambda p: -p[1])[:k]


class Memory:
    def settings(self, namespace: str) -> dict[str, Any]:
        return {"type": "memory", "namespace": namespace}

    def open(self, settings: Mapping[str, Any]) -> Store:
        return MemoryStore(settings["namespace"])  # type: ignore[return-value]

    def stop(self) -> None:
        _SPACES.clear()


def start(workdir: Path) -> Memory:
    return Memory()
