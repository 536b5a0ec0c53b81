"""The `pinecone` RAG store: a Pinecone vector index (REST, the official `pinecone` SDK).

The operator creates the index (a vector index with a `dimension` and the `dotproduct` metric, the
one metric that scores sparse values, so keyword search works); this store checks it and never
creates or reconfigures one. Without `host` the index's data-plane host comes from the control plane
(`describe_index`, which also gives its dimension and metric); with `host` the control plane is
skipped and `describe_index_stats` answers instead.

Layout, by namespace (`prefix` keeps several gateways or tests apart in one index):
- `{prefix}-catalog`: the catalog records of `RecordStore`, one vector each (id = the record key,
  a constant non-zero dense vector since Pinecone refuses all-zero ones, the record as JSON in
  metadata; uploads come in 24 KiB parts, under Pinecone's 40 KB of metadata per vector);
- `{prefix}-{collection id}`: a collection's chunks, with their unit vectors (zero-padded when the
  embedding is narrower than the index: dot products are unchanged) and BM25 term weights as sparse
  values. Ids are `{collection}.{source key}.{generation}.{n}`, so `list(prefix=...)` finds a
  document's chunks: serverless indexes cannot delete by metadata filter.

Filters become Pinecone's metadata filter language on flat fields (`source`, `page`, `section`,
`chunk_index`, and each document attribute as `attr_<key>`). Writes go in requests of at most
1000 vectors and ~1.9 MB (the service's caps are 1000 vectors and 2 MB).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
import orjson

from proxy.errors import InvalidRequest, ProviderUnavailable
from proxy.rag.search import Filter, Group, document_terms, query_terms
from proxy.rag.store import Collection, Ingested
from proxy.rag.stores.base import ChunkRow, RecordStore, source_key, unit

T = TypeVar("T")
BATCH_VECTORS = 1000  # Pinecone's cap per upsert request
BATCH_BYTES = 1_900_000  # under the 2 MB cap per request, leaving room for the envelope
IDS_PER_CALL = 100  # fetch/delete ids per request: fetch puts them in the URL (the service allows 1000)
MAX_SPARSE = 1000  # non-zero sparse values a vector may carry
MAX_TOP_K = 10_000
ATTRIBUTE = "attr_"  # a document attribute's metadata key prefix (chunk fields are stored bare)
_RANGE = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


class PineconeStore(RecordStore):
    def __init__(self, api_key: str, index: str, host: str | None = None, prefix: str | None = None) -> None:
        super().__init__()
        self._name = index
        self._prefix = prefix or "omni"
        self._catalog = f"{self._prefix}-catalog"
        self._index, self._dimension = self._call("open the index", lambda: _open_index(api_key, index, host))
        self._dummy = [1.0] + [0.0] * (self._dimension - 1)

    # -- errors: the SDK's exceptions to the gateway's, in one place -------------------------------
    def _call(self, what: str, operation: Callable[[], T]) -> T:
        from pinecone import errors

        try:
            return operation()
        except errors.NotFoundError as exc:
            raise ProviderUnavailable(f"the pinecone RAG store cannot {what}: index {self._name!r} not found "
                                      f"({exc.message})") from exc
        except (errors.UnauthorizedError, errors.ForbiddenError) as exc:
            raise ProviderUnavailable(f"the pinecone RAG store cannot {what}: the API key was refused "
                                      f"({exc.message})") from exc
        except (errors.PayloadTooLargeError, errors.ApiError) as exc:
            if exc.status_code in (400, 413):  # the data broke a service limit: the caller's input
                raise ValueError(f"the pinecone RAG store cannot {what}: {exc.message}") from exc
            raise ProviderUnavailable(f"the pinecone RAG store cannot {what}: {exc.message}") from exc
        except (errors.PineconeValueError, errors.PineconeTypeError) as exc:  # refused by the SDK before sending
            raise ValueError(f"the pinecone RAG store cannot {what}: {exc}") from exc
        except errors.PineconeError as exc:  # connection, timeout, 5xx after the SDK's retries
            raise ProviderUnavailable(f"the pinecone RAG store cannot {what}: {exc}") from exc

    # -- records: the catalog ---------------------------------------------------------------------
    def _record_put(self, key: str, record: Mapping[str, Any]) -> None:
        vector = {"id": _record_id(key), "values": self._dummy, "metadata": {"record": json.dumps(dict(record))}}
        self._call("write a record", lambda: self._index.upsert(vectors=[vector], namespace=self._catalog))

    def _record_get(self, key: str) -> dict[str, Any] | None:
        found = self._fetch(self._catalog, [_record_id(key)])
        return next(iter(found.values()), None) if found else None

    def _record_list(self, prefix: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for ids in self._list_ids(self._catalog, _record_id(prefix)):
            records.extend(self._fetch(self._catalog, ids).values())
        return records

    def _record_delete(self, keys: Sequence[str]) -> None:
        self._delete_ids(self._catalog, [_record_id(k) for k in keys])

    def _fetch(self, namespace: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The `record`/`row` JSON of each id found (vector id -> decoded metadata)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), IDS_PER_CALL):
            batch = list(ids[start:start + IDS_PER_CALL])
            answer = self._call("read", lambda: self._index.fetch(ids=batch, namespace=namespace))
            for vector_id, vector in answer.vectors.items():
                metadata = vector.metadata or {}
                raw = metadata.get("record") or metadata.get("row")
                if isinstance(raw, str):
                    found[vector_id] = json.loads(raw)
        return found

    def _list_ids(self, namespace: str, prefix: str) -> Iterator[list[str]]:
        """Pages of the ids starting with `prefix` (at most 100 each)."""
        token: str | None = None
        while True:
            page = self._call("list", lambda: self._index.list_paginated(
                prefix=prefix, namespace=namespace, pagination_token=token))
            ids = [v.id for v in page.vectors if v.id]
            if ids:
                yield ids
            token = page.pagination.next if page.pagination is not None else None
            if not token:
                return

    def _delete_ids(self, namespace: str, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), IDS_PER_CALL):
            batch = list(ids[start:start + IDS_PER_CALL])
            self._call("delete", lambda: self._index.delete(ids=batch, namespace=namespace))

    # -- chunks -------------------------------------------------------------------------------------
    def write_documents(self, collection_id: str, items: Sequence[Ingested]) -> None:
        # Checked before the base class records the collection's dimensions: a refused write changes nothing.
        for item in items:
            if len(item.chunks) and item.vectors.shape[1] > self._dimension:
                raise ValueError(f"the pinecone index {self._name!r} has dimension {self._dimension}: embeddings "
                                 f"of {item.vectors.shape[1]} dimensions do not fit (use an index as wide as the "
                                 f"embedding model)")
        super().write_documents(collection_id, items)

    def _chunks_add(self, collection: Collection, rows: Sequence[ChunkRow]) -> None:
        namespace = self._namespace(collection.id)
        batch: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            vector = self._to_pinecone_vector(row)
            weight = len(orjson.dumps(vector))
            if batch and (len(batch) == BATCH_VECTORS or size + weight > BATCH_BYTES):
                self._upsert(namespace, batch)
                batch, size = [], 0
            batch.append(vector)
            size += weight
        if batch:
            self._upsert(namespace, batch)

    def _upsert(self, namespace: str, vectors: list[dict[str, Any]]) -> None:
        self._call("write chunks", lambda: self._index.upsert(vectors=vectors, namespace=namespace))

    def _to_pinecone_vector(self, row: ChunkRow) -> dict[str, Any]:
        values = np.zeros(self._dimension, dtype=np.float32)
        values[:len(row.vector)] = row.vector  # type: ignore[arg-type]
        terms = sorted(document_terms(row.content).items(), key=lambda t: -t[1])[:MAX_SPARSE]
        vector: dict[str, Any] = {"id": row.id, "values": values.tolist(), "metadata": to_pinecone_metadata(row)}
        if terms:
            vector["sparse_values"] = {"indices": [t for t, _ in terms], "values": [w for _, w in terms]}
        return vector

    def _chunks_delete(self, collection_id: str, source: str | None, keep_generation: str | None = None) -> None:
        namespace = self._namespace(collection_id)
        if source is None and keep_generation is None:
            self._call("delete a collection", lambda: _delete_namespace(self._index, namespace))
            return
        prefix = f"{collection_id}." + (f"{source_key(source)}." if source is not None else "")
        listed = [i for ids in self._list_ids(namespace, prefix) for i in ids]  # all pages first, then delete
        self._delete_ids(namespace, [i for i in listed if keep_generation is None or i.split(".")[2] != keep_generation])

    def _chunks_get(self, chunk_ids: Sequence[str]) -> list[ChunkRow]:
        by_collection: dict[str, list[str]] = {}
        for chunk_id in chunk_ids:
            by_collection.setdefault(chunk_id.split(".", 1)[0], []).append(chunk_id)
        rows: list[ChunkRow] = []
        for collection_id, ids in by_collection.items():
            rows.extend(ChunkRow.from_payload(p) for p in self._fetch(self._namespace(collection_id), ids).values())
        return rows

    def _namespace(self, collection_id: str) -> str:
        return f"{self._prefix}-{collection_id}"

    # -- search -------------------------------------------------------------------------------------
    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        query = unit(np.asarray(vector, dtype=np.float32).reshape(-1))
        if len(query) > self._dimension:
            raise ValueError(f"the pinecone index {self._name!r} has dimension {self._dimension}, the query "
                             f"vector {len(query)}")
        padded = np.zeros(self._dimension, dtype=np.float32)
        padded[:len(query)] = query
        # dotproduct of unit vectors is their cosine similarity
        return self._query(collection_ids, k, where, vector=padded.tolist())

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        # A query on a dense index needs a dense vector; zeros leave the score to the sparse part alone.
        sparse = {"indices": list(terms), "values": list(terms.values())}
        ranked = self._query(collection_ids, k, where, vector=[0.0] * self._dimension, sparse_vector=sparse)
        return [(chunk_id, s / (1.0 + s)) for chunk_id, s in ranked if s > 0]

    def _query(self, collection_ids: Sequence[str], k: int, where: Filter | None,
               **vectors: Any) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        native = to_pinecone_filter(where) if where is not None else None
        found: list[tuple[str, float]] = []
        for collection_id in dict.fromkeys(collection_ids):
            namespace = self._namespace(collection_id)
            answer = self._call("search", lambda: self._index.query(
                top_k=min(k, MAX_TOP_K), namespace=namespace, filter=native, **vectors))
            found.extend((m.id, float(m.score)) for m in answer.matches)
        return sorted(found, key=lambda pair: -pair[1])[:k]

    def close(self) -> None:
        self._index.close()


def _open_index(api_key: str, name: str, host: str | None) -> tuple[Any, int]:
    """The SDK's index handle and the index's dimension, after checking it can serve this store."""
    from pinecone import Index, Pinecone

    if host:
        index = Index(host=host, api_key=api_key)
        stats = index.describe_index_stats()
        dimension, metric = stats.dimension, stats.metric
    else:
        control = Pinecone(api_key=api_key)
        described = control.indexes.describe(name)
        fields = described.schema.fields
        dense = fields.get("_values")
        if dense is None or set(fields) - {"_values", "_sparse_values"}:
            raise ProviderUnavailable(f"the pinecone RAG store needs a vector index (created with a dimension and "
                                      f"metric dotproduct); {name!r} is a document index with fields "
                                      f"{sorted(fields)}")
        dimension, metric = dense.dimension, dense.metric
        index = control.index(host=described.host or "")
        control.close()
    if metric not in (None, "dotproduct") or not dimension:
        index.close()
        raise ProviderUnavailable(f"the pinecone RAG store needs an index with metric dotproduct (it scores the "
                                  f"keyword search's sparse values); {name!r} has metric {metric}, dimension {dimension}")
    return index, int(dimension)


def _delete_namespace(index: Any, namespace: str) -> None:
    from pinecone import errors

    try:
        index.delete(delete_all=True, namespace=namespace)
    except errors.NotFoundError:
        pass  # a namespace never written to does not exist: nothing to delete


def _record_id(key: str) -> str:
    """Vector ids are ASCII: keys (collection names may not be) are percent-encoded, which keeps prefixes."""
    return quote(key, safe="/")


def to_pinecone_metadata(row: ChunkRow) -> dict[str, Any]:
    """Flat metadata: the whole row as JSON (to rebuild it), plus the fields filters compare, never null."""
    metadata: dict[str, Any] = {"row": json.dumps(row.payload()), "source": row.source,
                                "chunk_index": row.chunk_index, "generation": row.generation}
    if row.page is not None:
        metadata["page"] = row.page
    if row.section is not None:
        metadata["section"] = row.section
    for key, value in row.attributes.items():
        if isinstance(value, (str, int, float, bool)):
            metadata[ATTRIBUTE + key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            metadata[ATTRIBUTE + key] = value
    return metadata


def to_pinecone_filter(where: Filter) -> dict[str, Any]:
    """`where` in Pinecone's filter language; a missing key never matches (`$exists` guards `$ne`/`$nin`)."""
    if isinstance(where, Group):
        return {f"${where.op}": [to_pinecone_filter(f) for f in where.filters]}
    key = where.key if where.key in ("source", "page", "section", "chunk_index") else ATTRIBUTE + where.key
    if where.op in _RANGE:
        if isinstance(where.value, bool) or not isinstance(where.value, (int, float)):
            raise InvalidRequest(f"the pinecone RAG store compares only numbers with `{where.op}` "
                                 f"(key {where.key!r}, value {where.value!r})")
        return {key: {_RANGE[where.op]: where.value}}
    value = list(where.value) if where.op in ("in", "nin") else where.value
    if where.op in ("eq", "in"):
        return {key: {f"${where.op}": value}}
    return {"$and": [{key: {"$exists": True}}, {key: {f"${where.op}": value}}]}
