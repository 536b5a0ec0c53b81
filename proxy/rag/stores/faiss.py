"""The FAISS store: `rag.store: {type: faiss, path: DIR}` — one FAISS index file per collection.

The catalog, documents, chunk rows, uploads, filters and keyword search (FTS5
BM25) are the embedded SQLite store's, in `DIR/meta.db`; dense search goes to
`DIR/<collection id>.faiss`, an `IndexIDMap2` over an `IndexFlatIP` keyed by
the chunk's SQLite rowid (vectors arrive unit length: inner product = cosine).

Why a flat index and not HNSW: FAISS's HNSW cannot remove vectors
(`remove_ids` is not implemented for it in faiss 1.15), and replacing or
deleting a document is a removal; it is approximate (worse under a restrictive
filter) and builds at ~8k vectors/s on one core, while the flat index adds at
memory speed, removes, is exact, answers a 100k x 256 query in ~4 ms and, with
an ID selector, scores only the allowed rows.

The chunk vectors also stay in SQLite (the BLOB column): the index file is
derived data, rebuilt from them when it is missing, corrupt, or does not match
the collection's committed `version` (a crash between writing it and COMMIT).

Each file starts with a header naming the collection version it reflects.
A write updates SQLite, applies the same deletions and insertions to a copy of
the index, writes it to a temporary file and `os.replace`s it, all inside the
SQLite write transaction (which serialises writers across processes). Readers
reload the file when the collection's version moves (another process — the
CLI ingesting while a server runs — wrote); a file ahead of the committed
version means a writer is between its file and its COMMIT: the reader waits
for the write lock and looks again. Cached indexes are never mutated, so
searches run outside the store's lock.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from proxy.errors import ProviderUnavailable
from proxy.rag.search import Filter
from proxy.rag.sqlite_store import Change, SqliteStore
from proxy.rag.store import Ingested

_MAGIC = b"OMNIFAISS1"
_HEADER = struct.Struct("<10sq")  # magic, the collection version the index reflects


class FaissStore(SqliteStore):
    def __init__(self, path: str) -> None:
        self._dir = Path(path).expanduser()
        self._indexes: dict[str, tuple[int, faiss.Index]] = {}  # collection id -> (version, index)
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            super().__init__(str(self._dir / "meta.db"))
        except (OSError, sqlite3.Error) as exc:
            raise ProviderUnavailable(f"the faiss RAG store cannot use the directory {path!r}: {exc}") from None

    def index_path(self, collection_id: str) -> Path:
        return self._dir / f"{collection_id}.faiss"

    def close(self) -> None:
        with self._lock:
            self._indexes.clear()
        super().close()

    def write_documents(self, collection_id: str, items: Sequence[Ingested]) -> None:
        try:
            super().write_documents(collection_id, items)
        except BaseException:
            self._forget(collection_id)  # the cached index may hold a write that did not commit
            raise

    def delete_document(self, collection_id: str, source: str) -> bool:
        try:
            return super().delete_document(collection_id, source)
        except BaseException:
            self._forget(collection_id)
            raise

    def _forget(self, collection_id: str) -> None:
        with self._lock:
            self._indexes.pop(collection_id, None)

    # -- search ---------------------------------------------------------------------
    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        results: list[tuple[str, float]] = []
        for collection_id in collection_ids:
            index = self._index(collection_id)
            if index is None or index.ntotal == 0 or index.d != query.shape[1]:
                continue
            params = None
            if where is not None:
                allowed = np.asarray(self._filtered_ids(collection_id, where), dtype=np.int64)
                if not len(allowed):
                    continue
                # The selector keeps FAISS from scoring other rows: the top k are the top k of the allowed ones.
                selector = faiss.IDSelectorBatch(allowed)
                params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]  # SWIG stubs
            scores, labels = index.search(query, min(k, index.ntotal), params=params)
            results += [(str(label), float(score)) for label, score in zip(labels[0], scores[0]) if label >= 0]
        return sorted(results, key=lambda pair: -pair[1])[:k]

    # -- the index of a collection ---------------------------------------------------------
    def _index(self, collection_id: str) -> faiss.Index | None:
        """The collection's index as of its committed version (loaded, or rebuilt, when that moved)."""
        with self._lock:
            row = self._db.execute("SELECT version, dimensions FROM collections WHERE id = ?",
                                   (collection_id,)).fetchone()
            if row is None or row[1] is None:
                self._indexes.pop(collection_id, None)  # deleted, perhaps by another process
                return None
            cached = self._indexes.get(collection_id)
            if cached is not None and cached[0] == row[0]:
                return cached[1]
            index = self._read(collection_id, row[0])
            if index is None:
                with self._transaction():  # waits for a writer between its file and its COMMIT
                    version, dims = self._db.execute("SELECT version, dimensions FROM collections WHERE id = ?",
                                                     (collection_id,)).fetchone()
                    index = self._read(collection_id, version)
                    if index is None:
                        index = self._build(collection_id, dims)
                        self._save(collection_id, version, index)
                row = (version, dims)
            self._indexes[collection_id] = (row[0], index)
            return index

    def _read(self, collection_id: str, version: int) -> faiss.Index | None:
        """The index file if it is whole and reflects `version`, else None."""
        try:
            with self.index_path(collection_id).open("rb") as handle:  # this file, even if replaced meanwhile
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size or _HEADER.unpack(header) != (_MAGIC, version):
                    return None
                # FAISS reads straight from the file (serialize/deserialize_index copy through a growing buffer).
                return faiss.read_index(faiss.PyCallbackIOReader(handle.read))  # type: ignore[attr-defined]
        except FileNotFoundError:
            return None
        except RuntimeError:  # truncated or damaged after a valid header
            return None

    def _build(self, collection_id: str, dims: int) -> faiss.Index:
        """A new index from the vectors SQLite holds (as this connection sees them)."""
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dims))
        cursor = self._db.execute("SELECT id, vector FROM chunks WHERE collection_id = ? ORDER BY id",
                                  (collection_id,))
        while rows := cursor.fetchmany(10_000):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            index.add_with_ids(np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dims),
                               ids)
        return index

    def _save(self, collection_id: str, version: int, index: faiss.Index) -> None:
        """Write the file beside its final name, then rename: a reader sees the old file or the new one."""
        target = self.index_path(collection_id)
        with tempfile.NamedTemporaryFile(dir=self._dir, prefix=target.name + ".", suffix=".tmp",
                                         delete=False) as handle:
            try:
                handle.write(_HEADER.pack(_MAGIC, version))
                faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))  # type: ignore[attr-defined]
            except BaseException:
                handle.close()
                os.unlink(handle.name)
                raise
        os.replace(handle.name, target)

    # -- hooks: SqliteStore calls these inside its write transactions -----------------------
    def _written(self, collection_id: str, changes: Sequence[Change]) -> None:
        version, dims = self._db.execute("SELECT version, dimensions FROM collections WHERE id = ?",
                                         (collection_id,)).fetchone()
        if dims is None:
            return
        before = self._indexes.get(collection_id)
        index: faiss.Index | None
        if before is not None and before[0] == version - 1:
            index = faiss.clone_index(before[1])
        else:
            index = self._read(collection_id, version - 1)
        if index is None:  # no trustworthy index of the state before: build the state after from SQLite
            index = self._build(collection_id, dims)
        else:
            for removed, added, vectors in changes:
                if len(removed):
                    index.remove_ids(removed)  # type: ignore[arg-type]  # the wrapper takes ids
                if len(added):
                    index.add_with_ids(vectors, added)
        self._save(collection_id, version, index)
        self._indexes[collection_id] = (version, index)

    def _dropped(self, collection_id: str) -> None:
        self._indexes.pop(collection_id, None)
        self.index_path(collection_id).unlink(missing_ok=True)
