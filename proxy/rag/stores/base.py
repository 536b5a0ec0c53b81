"""What every server-backed store shares: the catalog as records, chunk rows, atomic-enough replacement.

A subclass provides two things:
- records: `_record_put/_record_get/_record_list/_record_delete`, small JSON objects under string
  keys, kept in the store itself (a Qdrant payload-only collection, an OpenSearch index, ...);
- its vector index: `_chunks_add/_chunks_delete/_chunks_get` plus `dense` and `keyword`.

Replacing a document writes its new chunks under a new `generation`, then its record, then deletes
the older generations: a reader on another instance sees the old chunks or the new ones (for an
instant both), never none. Server stores have no cross-call transactions, so a failure between the
steps can leave extra chunks of the new generation behind; the next write of that document removes
them. Uploads are kept as records too, in base64 parts small enough for any store's payload limit.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from proxy.rag.search import Filter
from proxy.rag.store import Collection, Hit, Ingested, StoredDocument, StoredFile

PART_BYTES = 24 * 1024  # an upload's part: 32 KiB in base64, under Pinecone's 40 KiB of metadata per vector


@dataclass(frozen=True)
class ChunkRow:
    """One chunk as a store keeps it: `payload()` is everything but the vector."""

    id: str
    collection_id: str
    collection: str  # the collection's name (hits report it)
    source: str
    generation: str
    chunk_index: int
    content: str
    page: int | None
    section: str | None
    file_id: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None  # float32, unit length

    def payload(self) -> dict[str, Any]:
        return {"chunk_id": self.id, "collection_id": self.collection_id, "collection": self.collection,
                "source": self.source, "generation": self.generation, "chunk_index": self.chunk_index,
                "content": self.content, "page": self.page, "section": self.section, "file_id": self.file_id,
                "attributes": dict(self.attributes)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ChunkRow:
        return cls(payload["chunk_id"], payload["collection_id"], payload["collection"], payload["source"],
                   payload["generation"], int(payload["chunk_index"]), payload["content"], payload.get("page"),
                   payload.get("section"), payload.get("file_id"), payload.get("attributes") or {})

    def fields(self) -> dict[str, Any]:
        """What a filter sees: the document's attributes, then the chunk's own fields."""
        return {**self.attributes, "source": self.source, "page": self.page, "section": self.section,
                "chunk_index": self.chunk_index}

    def hit(self) -> Hit:
        return Hit(self.id, self.collection, self.content, self.source, self.chunk_index, self.page, self.section,
                   self.file_id, self.attributes)


def unit(vectors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def source_key(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()[:20]


class RecordStore:
    """The `Store` interface over records and a vector index (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- hooks a store implements ----------------------------------------------------------
    def _record_put(self, key: str, record: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _record_get(self, key: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _record_list(self, prefix: str) -> list[dict[str, Any]]:
        """Every record whose key starts with `prefix` (any order)."""
        raise NotImplementedError

    def _record_delete(self, keys: Sequence[str]) -> None:
        raise NotImplementedError

    def _chunks_add(self, collection: Collection, rows: Sequence[ChunkRow]) -> None:
        """Add rows (vectors set) to the collection's index, creating the index on first use."""
        raise NotImplementedError

    def _chunks_delete(self, collection_id: str, source: str | None, keep_generation: str | None = None) -> None:
        """Delete a document's chunks (all of the collection's when `source` is None), except `keep_generation`."""
        raise NotImplementedError

    def _chunks_get(self, chunk_ids: Sequence[str]) -> list[ChunkRow]:
        raise NotImplementedError

    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        raise NotImplementedError

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- collections -------------------------------------------------------------------------
    def create_collection(self, name: str, embedding_model: str, chunking: Mapping[str, Any],
                          metadata: Mapping[str, Any] | None = None) -> Collection:
        with self._lock:
            if self._record_get(f"name/{name}") is not None:
                raise ValueError(f"a collection named {name!r} exists")
            collection_id = "vs_" + uuid.uuid4().hex[:24]
            self._record_put(f"collection/{collection_id}", {
                "key": f"collection/{collection_id}", "id": collection_id, "name": name,
                "embedding_model": embedding_model, "chunking": dict(chunking), "metadata": dict(metadata or {}),
                "created_at": int(time.time()), "dimensions": None})
            self._record_put(f"name/{name}", {"key": f"name/{name}", "id": collection_id})
        found = self.get_collection(collection_id)
        assert found is not None
        return found

    def get_collection(self, name_or_id: str) -> Collection | None:
        record = self._record_get(f"collection/{name_or_id}")
        if record is None:
            by_name = self._record_get(f"name/{name_or_id}")
            record = self._record_get(f"collection/{by_name['id']}") if by_name else None
        return self._collection(record) if record else None

    def list_collections(self) -> list[Collection]:
        records = sorted(self._record_list("collection/"), key=lambda r: (r["created_at"], r["name"]))
        return [self._collection(r) for r in records]

    def delete_collection(self, collection_id: str) -> bool:
        with self._lock:
            record = self._record_get(f"collection/{collection_id}")
            if record is None:
                return False
            self._chunks_delete(collection_id, None)
            documents = [r["key"] for r in self._record_list(f"document/{collection_id}/")]
            self._record_delete([*documents, f"name/{record['name']}", f"collection/{collection_id}"])
        return True

    def _collection(self, record: Mapping[str, Any]) -> Collection:
        documents = self._record_list(f"document/{record['id']}/")
        return Collection(id=record["id"], name=record["name"], embedding_model=record["embedding_model"],
                          chunking=record["chunking"], created_at=record["created_at"],
                          metadata=record.get("metadata") or {}, dimensions=record.get("dimensions"),
                          documents=len(documents), chunks=sum(d["chunks"] for d in documents),
                          usage_bytes=sum(d["bytes"] for d in documents))

    # -- documents -----------------------------------------------------------------------------
    def document_hashes(self, collection_id: str) -> dict[str, str]:
        return {r["source"]: r["content_hash"] for r in self._record_list(f"document/{collection_id}/")}

    def write_documents(self, collection_id: str, items: Sequence[Ingested]) -> None:
        if not items:
            return
        with self._lock:
            record = self._record_get(f"collection/{collection_id}")
            if record is None:
                raise KeyError(collection_id)
            dims = {int(item.vectors.shape[1]) for item in items if len(item.chunks)}
            if len(dims) > 1 or (record["dimensions"] is not None and dims and dims != {record["dimensions"]}):
                raise ValueError(f"embedding dimensions {sorted(dims)} do not match the collection's "
                                 f"{record['dimensions']}")
            if record["dimensions"] is None and dims:
                record = {**record, "dimensions": next(iter(dims))}
                self._record_put(f"collection/{collection_id}", record)
            collection = self._collection(record)
            now = int(time.time())
            for item in items:
                doc = item.document
                generation = uuid.uuid4().hex[:12]
                vectors = unit(item.vectors) if len(item.chunks) else item.vectors
                rows = [ChunkRow(f"{collection_id}.{source_key(doc.source)}.{generation}.{c.chunk_index}",
                                 collection_id, collection.name, doc.source, generation, c.chunk_index, c.content,
                                 c.page, c.section, item.file_id, dict(c.metadata), vectors[i])
                        for i, c in enumerate(item.chunks)]
                if rows:
                    self._chunks_add(collection, rows)
                key = f"document/{collection_id}/{source_key(doc.source)}"
                self._record_put(key, {
                    "key": key, "collection_id": collection_id, "source": doc.source, "file_id": item.file_id,
                    "content_hash": doc.content_hash, "bytes": doc.size, "chunks": len(rows),
                    "attributes": dict(doc.attributes), "created_at": now, "generation": generation})
                self._chunks_delete(collection_id, doc.source, keep_generation=generation)

    def list_documents(self, collection_id: str) -> list[StoredDocument]:
        records = sorted(self._record_list(f"document/{collection_id}/"), key=lambda r: (r["created_at"], r["source"]))
        return [StoredDocument(r["collection_id"], r["source"], r.get("file_id"), r["content_hash"], r["bytes"],
                               r["chunks"], r["created_at"], attributes=r.get("attributes") or {}) for r in records]

    def delete_document(self, collection_id: str, source: str) -> bool:
        with self._lock:
            key = f"document/{collection_id}/{source_key(source)}"
            found = self._record_get(key) is not None
            self._chunks_delete(collection_id, source)
            self._record_delete([key])
        return found

    def hits(self, chunk_ids: Sequence[str]) -> dict[str, Hit]:
        if not chunk_ids:
            return {}
        return {row.id: row.hit() for row in self._chunks_get(list(chunk_ids))}

    # -- uploads ----------------------------------------------------------------------------------
    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        file_id = f"file-{time.time_ns() // 1000:013x}{uuid.uuid4().hex[:11]}"  # ids sort in creation order
        stored = StoredFile(file_id, filename, purpose, len(content), int(time.time()))
        parts = [content[i:i + PART_BYTES] for i in range(0, len(content), PART_BYTES)] or [b""]
        for n, part in enumerate(parts):
            key = f"blob/{stored.id}/{n:06d}"
            self._record_put(key, {"key": key, "n": n, "data": base64.b64encode(part).decode()})
        self._record_put(f"file/{stored.id}", {"key": f"file/{stored.id}", "id": stored.id, "filename": filename,
                                               "purpose": purpose, "bytes": stored.bytes,
                                               "created_at": stored.created_at, "parts": len(parts)})
        return stored

    def get_file(self, file_id: str) -> StoredFile | None:
        record = self._record_get(f"file/{file_id}")
        return _stored_file(record) if record else None

    def file_content(self, file_id: str) -> bytes | None:
        record = self._record_get(f"file/{file_id}")
        if record is None:
            return None
        parts = sorted(self._record_list(f"blob/{file_id}/"), key=lambda r: r["n"])
        if len(parts) != record["parts"]:
            return None  # an upload still being written, or half deleted
        return b"".join(base64.b64decode(p["data"]) for p in parts)

    def list_files(self) -> list[StoredFile]:
        records = sorted(self._record_list("file/"), key=lambda r: (r["created_at"], r["id"]))  # ids: µs order
        return [_stored_file(r) for r in records]

    def delete_file(self, file_id: str) -> bool:
        record = self._record_get(f"file/{file_id}")
        if record is None:
            return False
        self._record_delete([f"file/{file_id}", *(f"blob/{file_id}/{n:06d}" for n in range(record["parts"]))])
        return True


def _stored_file(record: Mapping[str, Any]) -> StoredFile:
    return StoredFile(record["id"], record["filename"], record["purpose"], record["bytes"], record["created_at"])
