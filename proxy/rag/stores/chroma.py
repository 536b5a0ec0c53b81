"""The `chroma` RAG store: a local Chroma database (`path`) or a Chroma server (`url`), on the official client.

Chroma keeps collections of (id, embedding, document, flat metadata). The gateway uses:
- one Chroma collection `<prefix>records` for the catalog (RecordStore records as a JSON string in the
  metadata, plus the key's leading segments `k1`, `k2`, ... so a prefix listing is a `where` lookup);
- one Chroma collection `<prefix><collection id>` per gateway collection (cosine HNSW space), a chunk's
  text as the document, its filterable fields flattened to `f.<key>` metadata, the present keys in the
  `_keys` list (Chroma's `$ne`/`$nin` match a missing key; the reference semantics say they must not)
  and the rest of the row as JSON in `_row`.
Every write passes explicit embeddings and every collection is opened with `embedding_function=None`,
so the client never loads its default ONNX model (which would download weights on first use).

Keyword search: Chroma has no ranked full-text search outside Chroma Cloud (the `Search` API and BM25
sparse indexes are Cloud features), only `where_document` filters (`$contains`, `$regex`, answered with
a trigram index). So a query's words are counted one by one with a case-insensitive whole-word
`$regex` (document frequency, capped), the words most chunks contain are dropped as the embedded store
does, the chunks holding any remaining word are fetched (with the filter applied by Chroma) and scored
with BM25 (`search.document_terms` times the words' IDF). When every word is common, the longest one
is used and only the first CANDIDATES chunks holding it are ranked (see docs/rag.md, limits).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import chromadb
import httpx
import numpy as np
from chromadb.config import Settings
from chromadb.errors import ChromaAuthError, InternalError, NotFoundError

from proxy.errors import InvalidRequest, ProviderUnavailable
from proxy.rag.search import Compare, Filter, document_terms, keyword_terms, term_index
from proxy.rag.store import Collection
from proxy.rag.stores.base import ChunkRow, RecordStore, unit

FIELD = "f."  # a filterable field's metadata key prefix
COMMON_WORD_SHARE = 0.02  # as in the embedded store: a word in more chunks than this says little...
COMMON_WORD_FLOOR = 200  # ...unless the collection is small
CANDIDATES = 1000  # chunks ranked when every query word is common
REQUEST_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
REQUEST_BYTES = 8 * 1024 * 1024  # a write's body, well under a Chroma server's payload limit
_PREFIX = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,100})?$")
_RANGE = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


class ChromaStore(RecordStore):
    def __init__(self, url: str | None = None, path: str | None = None, api_key: str | None = None,
                 prefix: str = "omni-") -> None:
        super().__init__()
        self.where = url or f"path {path}"
        # a misconfigured store is the gateway's fault, not the request's: the same 503 as an unreachable one
        if (url is None) == (path is None):
            raise ProviderUnavailable("the chroma RAG store needs exactly one of `url` (a server) or `path` "
                                      "(a local database)")
        if not _PREFIX.match(prefix):
            raise ProviderUnavailable(f"the chroma RAG store's `prefix` {prefix!r} is not letters, digits, '.', "
                                      "'_', '-' starting with a letter or digit")
        self._prefix = prefix
        self._handles: dict[str, Any] = {}
        server = _server_address(url) if url is not None else None
        settings = Settings(anonymized_telemetry=False)
        with self._calling("is unreachable"):
            try:
                if server is not None:
                    self._client = _http_client(*server, api_key, settings)
                else:
                    self._client = chromadb.PersistentClient(path=str(path), settings=settings)
            except (ValueError, OSError) as exc:  # the client's "Could not connect to a Chroma server"
                raise ProviderUnavailable(f"the chroma RAG store ({self.where}) is unreachable: {exc}") from exc
            self._batch = int(self._client.get_max_batch_size())
            self._records = self._client.get_or_create_collection(prefix + "records", embedding_function=None)

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _calling(self, failed: str = "failed") -> Iterator[None]:
        """Connection and server failures as the 503 that names the store."""
        try:
            yield
        except (httpx.TransportError, ChromaAuthError, InternalError) as exc:
            raise ProviderUnavailable(f"the chroma RAG store ({self.where}) {failed}: {exc}") from exc
        except Exception as exc:
            # The client raises a bare Exception carrying the body of an HTTP error that is not Chroma's own
            # (a proxy's 401 or 502, "Payload too large"); its subclasses (NotFoundError...) are for the caller.
            if type(exc) is not Exception:
                raise
            raise ProviderUnavailable(f"the chroma RAG store ({self.where}) {failed}: {str(exc)[:300]}") from exc

    # -- records -------------------------------------------------------------------------------
    def _record_put(self, key: str, record: Mapping[str, Any]) -> None:
        metadata = {"json": json.dumps(record), **_segments(key)}
        with self._calling():
            self._records.upsert(ids=[key], embeddings=[[1.0]], metadatas=[metadata])

    def _record_get(self, key: str) -> dict[str, Any] | None:
        with self._calling():
            found = self._records.get(ids=[key], include=["metadatas"])
        return json.loads(found["metadatas"][0]["json"]) if found["ids"] else None

    def _record_list(self, prefix: str) -> list[dict[str, Any]]:
        depth = prefix.count("/")
        head = prefix[:prefix.rfind("/") + 1]
        with self._calling():
            found = self._records.get(where={f"k{depth}": head}, include=["metadatas"]) if depth \
                else self._records.get(include=["metadatas"])
        records = [json.loads(m["json"]) for m in found["metadatas"] or []]
        return [r for r in records if r["key"].startswith(prefix)] if head != prefix else records

    def _record_delete(self, keys: Sequence[str]) -> None:
        with self._calling():
            for start in range(0, len(keys), self._batch):
                self._records.delete(ids=list(keys[start:start + self._batch]))

    # -- chunks ----------------------------------------------------------------------------------
    def _chunks(self, collection_id: str, create: bool = False) -> Any | None:
        """The collection's Chroma collection (None before its first chunk), opened once per instance."""
        name = self._prefix + collection_id
        handle = self._handles.get(name)
        if handle is None:
            with self._calling():
                try:
                    handle = self._client.get_or_create_collection(
                        name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}) if create \
                        else self._client.get_collection(name, embedding_function=None)
                except NotFoundError:
                    return None
            self._handles[name] = handle
        return handle

    @contextmanager
    def _reading(self, collection_id: str) -> Iterator[None]:
        """A collection deleted by another instance reads as empty (and is opened afresh next time)."""
        try:
            with self._calling():
                yield
        except NotFoundError:
            self._handles.pop(self._prefix + collection_id, None)

    def _chunks_add(self, collection: Collection, rows: Sequence[ChunkRow]) -> None:
        handle = self._chunks(collection.id, create=True)
        with self._calling():
            for batch in _batches(rows, self._batch):
                handle.add(ids=[r.id for r, _ in batch], embeddings=np.stack([r.vector for r, _ in batch]),  # type: ignore[union-attr]
                           documents=[r.content for r, _ in batch], metadatas=[m for _, m in batch])

    def _chunks_delete(self, collection_id: str, source: str | None, keep_generation: str | None = None) -> None:
        if source is None:
            self._handles.pop(self._prefix + collection_id, None)
            with self._calling():
                try:
                    self._client.delete_collection(self._prefix + collection_id)
                except NotFoundError:
                    pass
            return
        handle = self._chunks(collection_id)
        if handle is None:
            return
        where: dict[str, Any] = {FIELD + "source": source}
        if keep_generation is not None:
            where = {"$and": [where, {"_gen": {"$ne": keep_generation}}]}
        with self._reading(collection_id):
            handle.delete(where=where)

    def _chunks_get(self, chunk_ids: Sequence[str]) -> list[ChunkRow]:
        by_collection: dict[str, list[str]] = {}
        for chunk_id in chunk_ids:
            by_collection.setdefault(chunk_id.split(".", 1)[0], []).append(chunk_id)
        rows = []
        for collection_id, ids in by_collection.items():
            for found in self._get(collection_id, ids, None):
                rows.append(found)
        return rows

    def _get(self, collection_id: str, ids: Sequence[str], where: dict[str, Any] | None) -> list[ChunkRow]:
        """The rows of these ids (those that pass `where`), in batches Chroma accepts."""
        handle = self._chunks(collection_id)
        rows: list[ChunkRow] = []
        if handle is None:
            return rows
        with self._reading(collection_id):
            for start in range(0, len(ids), self._batch):
                found = handle.get(ids=list(ids[start:start + self._batch]), where=where,
                                   include=["documents", "metadatas"])
                rows += [_chunk_row(document, metadata)
                         for document, metadata in zip(found["documents"], found["metadatas"])]
        return rows

    # -- search ----------------------------------------------------------------------------------
    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        query, compiled = unit(vector).reshape(1, -1), to_chroma_where(where)
        scored: list[tuple[str, float]] = []
        for collection_id in collection_ids:
            handle = self._chunks(collection_id)
            if handle is None or k <= 0:
                continue
            with self._reading(collection_id):
                found = handle.query(query_embeddings=query, n_results=k, where=compiled, include=["distances"])
                # Chroma's cosine distance is 1 - cosine similarity
                scored += [(i, 1.0 - float(d)) for i, d in zip(found["ids"][0], found["distances"][0])]
        return sorted(scored, key=lambda pair: -pair[1])[:k]

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        words = keyword_terms(query)
        handles = [(c, h) for c in collection_ids if (h := self._chunks(c)) is not None]
        if not words or not handles or k <= 0:
            return []
        with self._calling():
            total = sum(h.count() for _, h in handles)
        limit = int(max(COMMON_WORD_FLOOR, COMMON_WORD_SHARE * total))
        holding: dict[str, dict[str, list[str]]] = {}  # word -> collection id -> ids of chunks holding it
        for word in words:
            holding[word] = {c: self._matching(c, h, word, limit + 1) for c, h in handles}
        counts = {word: sum(len(ids) for ids in found.values()) for word, found in holding.items()}
        rare = [w for w in words if 0 < counts[w] <= limit]
        compiled = to_chroma_where(where)
        if rare:
            candidates: dict[str, set[str]] = {}
            for word in rare:
                for collection_id, ids in holding[word].items():
                    candidates.setdefault(collection_id, set()).update(ids)
            rows = [row for c, ids in candidates.items() for row in self._get(c, sorted(ids), compiled)]
        else:
            common = [w for w in words if counts[w]]
            if not common:
                return []
            rare = [max(common, key=len)]
            rows = []
            for collection_id, handle in handles:
                ids = self._matching(collection_id, handle, rare[0], CANDIDATES, compiled)
                rows += self._get(collection_id, ids, None)
        weights = {term_index(w): math.log(1.0 + (total - counts[w] + 0.5) / (counts[w] + 0.5)) for w in rare}
        scored = []
        for row in rows:
            score = sum(weights.get(t, 0.0) * w for t, w in document_terms(row.content).items())
            if score > 0:
                scored.append((row.id, score / (1.0 + score)))
        return sorted(scored, key=lambda pair: (-pair[1], pair[0]))[:k]

    def _matching(self, collection_id: str, handle: Any, word: str, limit: int,
                  where: dict[str, Any] | None = None) -> list[str]:
        """Ids of up to `limit` chunks holding `word` (a whole word, any case)."""
        with self._reading(collection_id):
            found = handle.get(where_document={"$regex": rf"(?i)\b{re.escape(word)}\b"}, where=where,
                               include=[], limit=limit)
            return list(found["ids"])
        return []


def _server_address(url: str) -> tuple[str, int, bool]:
    """(host, port, ssl) of a server `url`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port out of range
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ProviderUnavailable(f"the chroma RAG store's `url` is http(s)://host[:port], not {url!r}")
    return parts.hostname, port or (443 if parts.scheme == "https" else 8000), parts.scheme == "https"


def _http_client(host: str, port: int, ssl: bool, api_key: str | None, settings: Settings) -> Any:
    if api_key:
        # the client's own token provider: it sends the key as `X-Chroma-Token`, as Chroma Cloud expects
        settings.chroma_client_auth_provider = "chromadb.auth.token_authn.TokenAuthClientProvider"
        settings.chroma_client_auth_credentials = api_key
        settings.chroma_auth_token_transport_header = "X-Chroma-Token"
    client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
    # The client's httpx session has no timeout at all: a stalled server would hang a request forever.
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = REQUEST_TIMEOUT
    return client


def _batches(rows: Sequence[ChunkRow], most: int) -> Iterator[list[tuple[ChunkRow, dict[str, Any]]]]:
    """Rows with their metadata in batches of at most `most` rows and about REQUEST_BYTES: a Chroma server
    refuses a larger request body ("Payload too large") well before its max batch size with big vectors."""
    batch: list[tuple[ChunkRow, dict[str, Any]]] = []
    size = 0
    for row in rows:
        metadata = _chunk_metadata(row)
        # a vector as JSON floats (~12 bytes each; the client sends base64, 5.3, when the server supports it)
        vector_bytes = 12 * row.vector.size if row.vector is not None else 0
        row_bytes = len(row.content.encode()) + len(metadata["_row"]) + len(row.id) + vector_bytes
        if batch and (len(batch) >= most or size + row_bytes > REQUEST_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((row, metadata))
        size += row_bytes
    if batch:
        yield batch


def _segments(key: str) -> dict[str, str]:
    """`document/vs_1/ab` -> {k1: "document/", k2: "document/vs_1/"}: what `_record_list` filters on."""
    parts = key.split("/")
    return {f"k{n}": "/".join(parts[:n]) + "/" for n in range(1, len(parts))}


def _chunk_metadata(row: ChunkRow) -> dict[str, Any]:
    payload = row.payload()
    del payload["content"]  # the Chroma document
    metadata: dict[str, Any] = {"_row": json.dumps(payload), "_gen": row.generation}
    keys = []
    for key, value in row.fields().items():
        if isinstance(value, (str, int, float)) and not (isinstance(value, float) and math.isnan(value)):
            metadata[FIELD + key] = value
            keys.append(key)
    metadata["_keys"] = keys  # never empty: source and chunk_index are always there
    return metadata


def _chunk_row(document: str, metadata: Mapping[str, Any]) -> ChunkRow:
    return ChunkRow.from_payload({**json.loads(metadata["_row"]), "content": document})


# -- filters ---------------------------------------------------------------------------------------
def to_chroma_where(where: Filter | None) -> dict[str, Any] | None:
    """A parsed filter as a Chroma `where` (None for no filter). Raises InvalidRequest for a range on text."""
    if where is None:
        return None
    if not isinstance(where, Compare):
        parts = [to_chroma_where(f) for f in where.filters]
        return parts[0] if len(parts) == 1 else {f"${where.op}": parts}
    key, value = FIELD + where.key, where.value
    present = {"_keys": {"$contains": where.key}}
    if where.op in _RANGE:
        if isinstance(value, (str, bool)):
            raise InvalidRequest(f"the chroma store compares numbers only with `{where.op}` "
                                 f"(filter on {where.key!r})", param="filters")
        return {key: {_RANGE[where.op]: value}}
    if where.op == "eq":
        return {key: {"$eq": value}}
    if where.op == "ne":
        return {"$and": [{key: {"$ne": value}}, present]}
    groups = _same_type(value)
    if where.op == "in":
        tests = [{key: {"$in": g}} for g in groups]
        return tests[0] if len(tests) == 1 else {"$or": tests}
    return {"$and": [*({key: {"$nin": g}} for g in groups), present]}


def _same_type(values: Sequence[Any]) -> list[list[Any]]:
    """Chroma wants the values of one `$in` of one type: strings, booleans and numbers apart."""
    groups: dict[str, list[Any]] = {}
    for value in values:
        kind = "str" if isinstance(value, str) else "bool" if isinstance(value, bool) else "number"
        groups.setdefault(kind, []).append(value)
    numbers = groups.get("number")
    if numbers and len({type(n) for n in numbers}) > 1:
        groups["number"] = [float(n) for n in numbers]
    return list(groups.values())
