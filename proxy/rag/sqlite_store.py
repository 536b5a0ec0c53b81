"""The embedded store: one SQLite file with chunks, their vectors and an FTS5 keyword index.

Keyword search is FTS5's BM25 (compiled into the standard library's SQLite;
no loadable extension, which this CPython cannot load anyway). Dense search
keeps each collection's vectors as one normalised float32 numpy matrix in
memory, loaded from the BLOBs on first use and reloaded when the
collection's `version` moves (any ingest or delete, from this process or
another — the CLI may ingest while a server runs): a query is one
matrix-vector product and an argpartition.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from proxy.rag.search import Filter, keyword_terms, sql
from proxy.rag.store import Collection, Hit, Ingested, StoredDocument, StoredFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, embedding_model TEXT NOT NULL, dimensions INTEGER,
    chunking TEXT NOT NULL, metadata TEXT NOT NULL, created_at INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS documents (
    collection_id TEXT NOT NULL, source TEXT NOT NULL, file_id TEXT, content_hash TEXT NOT NULL,
    bytes INTEGER NOT NULL, chunks INTEGER NOT NULL, attributes TEXT NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (collection_id, source));
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, collection_id TEXT NOT NULL, source TEXT NOT NULL, chunk_index INTEGER NOT NULL,
    content TEXT NOT NULL, page INTEGER, section TEXT, file_id TEXT, metadata TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (collection_id, source);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    content, content='chunks', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, content) VALUES (new.id, new.content); END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, content) VALUES ('delete', old.id, old.content); END;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('index_version', 0);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, content BLOB NOT NULL);
"""

# One step of a write, as `_written` sees it: (chunk rowids deleted, rowids inserted, their vectors).
Change = tuple[np.ndarray, np.ndarray, np.ndarray]

# Keyword search drops query words found in more than this share of the chunks (and this many at least).
COMMON_WORD_SHARE = 0.02
COMMON_WORD_FLOOR = 200

_COLLECTION_COLUMNS = ("c.id, c.name, c.embedding_model, c.chunking, c.created_at, c.metadata, c.dimensions, "
                       "(SELECT count(*) FROM documents d WHERE d.collection_id = c.id), "
                       "(SELECT coalesce(sum(d.chunks), 0) FROM documents d WHERE d.collection_id = c.id), "
                       "(SELECT coalesce(sum(d.bytes), 0) FROM documents d WHERE d.collection_id = c.id)")


class SqliteStore:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(Path(path).expanduser()) if path != ":memory:" else path,
                                   check_same_thread=False, isolation_level=None, timeout=30.0)
        self._lock = threading.RLock()
        self._matrices: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}  # id -> (version, chunk ids, vectors)
        self._vocabulary: tuple[int, int, dict[str, int]] | None = None  # (index version, chunks, term -> df)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            # Runs the index's own tokenizer (Porter stems) over query words: see `_match`.
            self._db.executescript(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words USING fts5(word, tokenize='porter unicode61');"
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_stems USING fts5vocab(temp, query_words, 'instance');")

    def close(self) -> None:
        with self._lock:
            self._matrices.clear()
            self._db.close()

    # -- collections ----------------------------------------------------------------
    def create_collection(self, name: str, embedding_model: str, chunking: Mapping[str, Any],
                          metadata: Mapping[str, Any] | None = None) -> Collection:
        collection_id = "vs_" + uuid.uuid4().hex[:24]
        with self._lock:
            self._db.execute(
                "INSERT INTO collections (id, name, embedding_model, chunking, metadata, created_at) VALUES (?,?,?,?,?,?)",
                (collection_id, name, embedding_model, json.dumps(dict(chunking)), json.dumps(dict(metadata or {})),
                 int(time.time())))
        found = self.get_collection(collection_id)
        assert found is not None
        return found

    def get_collection(self, name_or_id: str) -> Collection | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLLECTION_COLUMNS} FROM collections c WHERE c.id = ? OR c.name = ? "
                                   "ORDER BY c.id = ? DESC LIMIT 1", (name_or_id, name_or_id, name_or_id)).fetchone()
        return _collection(row) if row else None

    def list_collections(self) -> list[Collection]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLLECTION_COLUMNS} FROM collections c ORDER BY c.created_at, c.name")
            return [_collection(row) for row in rows]

    def delete_collection(self, collection_id: str) -> bool:
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM chunks WHERE collection_id = ?", (collection_id,))
            self._db.execute("DELETE FROM documents WHERE collection_id = ?", (collection_id,))
            deleted = self._db.execute("DELETE FROM collections WHERE id = ?", (collection_id,)).rowcount
            self._bump_index()
            self._matrices.pop(collection_id, None)
            self._dropped(collection_id)
        return bool(deleted)

    # -- documents ------------------------------------------------------------------
    def document_hashes(self, collection_id: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT source, content_hash FROM documents WHERE collection_id = ?", (collection_id,))
            return dict(rows.fetchall())

    def write_documents(self, collection_id: str, items: Sequence[Ingested]) -> None:
        if not items:
            return
        dims = {int(item.vectors.shape[1]) for item in items if len(item.chunks)}
        with self._lock, self._transaction():
            current = self._db.execute("SELECT dimensions FROM collections WHERE id = ?", (collection_id,)).fetchone()
            if current is None:
                raise KeyError(collection_id)
            if len(dims) > 1 or (current[0] is not None and dims and dims != {current[0]}):
                raise ValueError(f"embedding dimensions {sorted(dims)} do not match the collection's {current[0]}")
            now = int(time.time())
            changes: list[Change] = []
            for item in items:
                doc = item.document
                removed = self._delete_chunks(collection_id, doc.source)
                vectors = np.ascontiguousarray(item.vectors, dtype=np.float32)
                # Explicit rowids (the ones SQLite would pick: max + 1 on) so a derived index learns them.
                first = self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0]
                self._db.executemany(
                    "INSERT INTO chunks (id, collection_id, source, chunk_index, content, page, section, file_id,"
                    " metadata, vector) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(first + i, collection_id, doc.source, c.chunk_index, c.content, c.page, c.section, item.file_id,
                      json.dumps(c.metadata), vectors[i].tobytes()) for i, c in enumerate(item.chunks)])
                changes.append((removed, np.arange(first, first + len(item.chunks), dtype=np.int64),
                                vectors[:len(item.chunks)]))
                self._db.execute(
                    "INSERT OR REPLACE INTO documents (collection_id, source, file_id, content_hash, bytes, chunks,"
                    " attributes, created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (collection_id, doc.source, item.file_id, doc.content_hash, doc.size, len(item.chunks),
                     json.dumps(doc.attributes), now))
            self._db.execute("UPDATE collections SET version = version + 1, dimensions = coalesce(dimensions, ?) "
                             "WHERE id = ?", (next(iter(dims)) if dims else None, collection_id))
            self._bump_index()
            self._written(collection_id, changes)

    def list_documents(self, collection_id: str) -> list[StoredDocument]:
        with self._lock:
            rows = self._db.execute("SELECT collection_id, source, file_id, content_hash, bytes, chunks, created_at,"
                                    " attributes FROM documents WHERE collection_id = ? ORDER BY created_at, source",
                                    (collection_id,)).fetchall()
        return [StoredDocument(*row[:7], attributes=json.loads(row[7])) for row in rows]

    def delete_document(self, collection_id: str, source: str) -> bool:
        with self._lock, self._transaction():
            removed = self._delete_chunks(collection_id, source)
            deleted = self._db.execute("DELETE FROM documents WHERE collection_id = ? AND source = ?",
                                       (collection_id, source)).rowcount
            self._db.execute("UPDATE collections SET version = version + 1 WHERE id = ?", (collection_id,))
            self._bump_index()
            self._written(collection_id, [(removed, np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))])
        return bool(deleted)

    # -- search ---------------------------------------------------------------------
    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        results: list[tuple[str, float]] = []
        for collection_id in collection_ids:
            ids, matrix = self._matrix(collection_id)
            if not len(ids) or matrix.shape[1] != vector.shape[0]:
                continue
            scores = matrix @ vector
            if where is not None:
                allowed = np.asarray(self._filtered_ids(collection_id, where), dtype=np.int64)
                scores = np.where(np.isin(ids, allowed), scores, -np.inf)
            top = min(k, len(ids))
            best = np.argpartition(-scores, top - 1)[:top]
            results += [(str(ids[i]), float(scores[i])) for i in best if np.isfinite(scores[i])]
        return sorted(results, key=lambda pair: -pair[1])[:k]

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        if not collection_ids:
            return []
        with self._lock:
            match = self._match(query)
        if match is None:
            return []
        marks = ",".join("?" * len(collection_ids))
        condition, params = _where(where) if where is not None else ("1", [])
        query = (f"SELECT c.id, bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
                 f"WHERE chunks_fts MATCH ? AND c.collection_id IN ({marks}) AND {condition} ORDER BY s LIMIT ?")
        with self._lock:
            rows = self._db.execute(query, (match, *collection_ids, *params, k)).fetchall()
        # bm25() is negative, lower is better: report -bm25 squashed into [0, 1) (monotonic).
        return [(str(row[0]), -row[1] / (1.0 - row[1])) for row in rows]

    def hits(self, chunk_ids: Sequence[str]) -> dict[str, Hit]:
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT c.id, k.name, c.content, c.source, c.chunk_index, c.page, c.section, c.file_id, c.metadata "
                f"FROM chunks c JOIN collections k ON k.id = c.collection_id WHERE c.id IN ({marks})",
                [int(i) for i in chunk_ids]).fetchall()
        return {str(r[0]): Hit(str(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8])) for r in rows}

    def _matrix(self, collection_id: str) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            row = self._db.execute("SELECT version, dimensions FROM collections WHERE id = ?", (collection_id,)).fetchone()
            if row is None:
                return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
            cached = self._matrices.get(collection_id)
            if cached is not None and cached[0] == row[0]:
                return cached[1], cached[2]
            rows = self._db.execute("SELECT id, vector FROM chunks WHERE collection_id = ? ORDER BY id",
                                    (collection_id,)).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            dims = row[1] or 0
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dims) \
                if rows else np.zeros((0, dims), dtype=np.float32)
            self._matrices[collection_id] = (row[0], ids, matrix)
            return ids, matrix

    def _match(self, query: str) -> str | None:
        """The FTS5 query for `query`: its words, less those most chunks contain.

        A word in more than a few percent of the chunks adds almost nothing to BM25
        (its IDF is near zero) but makes FTS5 score every chunk it is in: dropping
        those keeps keyword search fast on large collections (the rarest word is
        kept when all are common). Small collections keep every word.
        """
        words = keyword_terms(query)
        if not words:
            return None
        chunks, document_frequency = self._vocabulary_now()
        self._db.execute("DELETE FROM temp.query_words")
        self._db.executemany("INSERT INTO temp.query_words (rowid, word) VALUES (?, ?)", list(enumerate(words)))
        stems = dict(self._db.execute("SELECT doc, term FROM temp.query_stems").fetchall())
        counted = sorted((document_frequency.get(stems.get(i, ""), 0), i, word) for i, word in enumerate(words))
        present = [(df, word) for df, _, word in counted if df > 0]
        limit = max(COMMON_WORD_FLOOR, COMMON_WORD_SHARE * chunks)
        chosen = [word for df, word in present if df <= limit] or [word for _, word in present[:1]]
        return " OR ".join(f'"{word}"' for word in chosen) if chosen else None

    def _vocabulary_now(self) -> tuple[int, dict[str, int]]:
        """(chunks indexed, document frequency per stem), reloaded when the index changed (any process)."""
        version = self._db.execute("SELECT value FROM meta WHERE key = 'index_version'").fetchone()[0]
        if self._vocabulary is None or self._vocabulary[0] != version:
            chunks = self._db.execute("SELECT coalesce(sum(chunks), 0) FROM documents").fetchone()[0]
            terms = dict(self._db.execute("SELECT term, doc FROM chunks_vocab").fetchall())
            self._vocabulary = (version, chunks, terms)
        return self._vocabulary[1], self._vocabulary[2]

    def _bump_index(self) -> None:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'index_version'")

    def _delete_chunks(self, collection_id: str, source: str) -> np.ndarray:
        rows = self._db.execute("DELETE FROM chunks WHERE collection_id = ? AND source = ? RETURNING id",
                                (collection_id, source)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # -- hooks for a store that keeps its own dense index (stores/faiss.py) -----------------
    def _written(self, collection_id: str, changes: Sequence[Change]) -> None:
        """After a write's rows (and the collection's version bump), before COMMIT; raising rolls it back.

        `changes` in the order they happened: (chunk rowids deleted, rowids inserted, their vectors).
        """

    def _dropped(self, collection_id: str) -> None:
        """In `delete_collection`'s transaction, after its rows are gone."""

    def _filtered_ids(self, collection_id: str, where: Filter) -> list[int]:
        condition, params = _where(where)
        with self._lock:
            rows = self._db.execute(f"SELECT c.id FROM chunks c WHERE c.collection_id = ? AND {condition}",
                                    (collection_id, *params)).fetchall()
        return [r[0] for r in rows]

    # -- uploads ----------------------------------------------------------------------
    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        file_id = f"file-{time.time_ns() // 1000:013x}{uuid.uuid4().hex[:11]}"  # ids sort in creation order
        stored = StoredFile(file_id, filename, purpose, len(content), int(time.time()))
        with self._lock:
            self._db.execute("INSERT INTO files (id, filename, purpose, bytes, created_at, content) VALUES (?,?,?,?,?,?)",
                             (stored.id, filename, purpose, stored.bytes, stored.created_at, content))
        return stored

    def get_file(self, file_id: str) -> StoredFile | None:
        with self._lock:
            row = self._db.execute("SELECT id, filename, purpose, bytes, created_at FROM files WHERE id = ?",
                                   (file_id,)).fetchone()
        return StoredFile(*row) if row else None

    def file_content(self, file_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT content FROM files WHERE id = ?", (file_id,)).fetchone()
        return bytes(row[0]) if row else None

    def list_files(self) -> list[StoredFile]:
        with self._lock:
            rows = self._db.execute("SELECT id, filename, purpose, bytes, created_at FROM files ORDER BY created_at, rowid")
            return [StoredFile(*row) for row in rows]

    def delete_file(self, file_id: str) -> bool:
        with self._lock:
            return bool(self._db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount)

    # -- helpers ----------------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: a failed write leaves nothing behind."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


_FILTER_COLUMNS = {"source": "c.source", "page": "c.page", "section": "c.section", "chunk_index": "c.chunk_index"}


def _where(where: Filter) -> tuple[str, list[Any]]:
    return sql(where, _FILTER_COLUMNS, "json_extract(c.metadata, ?)")


def _collection(row: tuple[Any, ...]) -> Collection:
    return Collection(id=row[0], name=row[1], embedding_model=row[2], chunking=json.loads(row[3]), created_at=row[4],
                      metadata=json.loads(row[5]), dimensions=row[6], documents=row[7], chunks=row[8],
                      usage_bytes=row[9])
