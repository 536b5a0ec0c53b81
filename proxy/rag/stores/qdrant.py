"""The `qdrant` RAG store: a Qdrant server (`url`, `api_key`) or Qdrant's local mode (`path`), via qdrant-client.

Layout (every name starts with `prefix`, default "omni", so several gateways can share one server):
- `{prefix}_records`: the catalog records of `RecordStore` (collections, documents, uploads) as points
  with no vector at all (Qdrant allows a collection with an empty vector config). A point's id is the
  uuid5 of its key; its payload is the key, the key's parent paths (`parents`: "document/" and
  "document/vs_x/" for "document/vs_x/abc", a keyword index on the server) and the record as JSON text
  (an exact round trip). So `_record_list("document/vs_x/")` is a filtered scroll, not a full scan.
- `{prefix}_chunks_{collection id}`: one Qdrant collection per gateway collection, created on the
  first ingest with the collection's dimension. Each point has the named vector `dense` (cosine) and
  the sparse vector `keyword` (`search.document_terms`, BM25 term weights) with `Modifier.IDF`, so
  Qdrant supplies the inverse document frequency from that collection's own statistics. One Qdrant
  collection per gateway collection rather than per dimension because: deleting a collection drops
  it at once (no delete-by-filter over a shared index); the IDF is the searched collection's, not
  every collection's of that dimension; and local mode's exact search scans only the collection
  searched. A search over several collections asks each and merges by score (cosine scores compare
  directly; BM25 scores are on the same scale).

Filters compile to `models.Filter`. The reference semantics (`search.matches`) say a missing key
never matches, not even `ne`/`nin`; Qdrant's `must_not` alone would match a point without the key,
so a negation carries a "not empty" guard. Qdrant has no range over strings: `gt`/`gte`/`lt`/`lte`
take numbers only here (a string bound is a 400).

Local mode (`path`) keeps everything in that directory and allows one client per directory (a
file lock, "already accessed by another instance"), and the client is not thread-safe. So the
stores of one process opened on the same path share one client, used under one lock, through
`_LOCAL` below: the only module-level state, a reference-counted cache keyed by the real path,
closed when its last store closes. Two processes (e.g. `serve --workers 2`) cannot share a local
path: use a server. Local mode searches exactly (brute force) and is meant for small collections.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from proxy.errors import InvalidRequest, ProviderUnavailable, ProxyError
from proxy.rag.search import CHUNK_FIELDS, Filter, Group, document_terms, query_terms
from proxy.rag.store import Collection
from proxy.rag.stores.base import ChunkRow, RecordStore, source_key, unit

if TYPE_CHECKING:
    from qdrant_client import QdrantClient, models

BATCH = 256  # points per upsert: 256 chunks of 1536 floats and their text stay far under the server's 32 MiB
SCROLL = 1000  # records per scroll page
PROBE = 256  # point ids asked at once when local mode looks for a document's older chunks
_NAMESPACE = uuid.UUID("7f2d9b4e-1c1a-5f0e-9a43-0c6b1d2e8f51")  # uuid5 namespace of point ids
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
_PLAIN_KEY = re.compile(r"^\w+$")
_CHUNK_INDEXES = {"source": "keyword", "generation": "keyword", "section": "keyword", "page": "integer",
                  "chunk_index": "integer"}


def point_id(key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, key))


def chunk_point(chunk_id: str) -> str:
    """A chunk's point id: its place in its document (collection, source, index), not its generation, so a
    new version of a document overwrites the old one's points in place (see `_chunks_delete`)."""
    collection, source, _generation, index = chunk_id.split(".")
    return point_id(f"{collection}.{source}.{index}")


def parents(key: str) -> list[str]:
    """"a/b/c" -> ["a/", "a/b/"]: the prefixes `_record_list` asks for."""
    cuts = [i for i, char in enumerate(key) if char == "/"]
    return [key[:i + 1] for i in cuts]


# -- filters -----------------------------------------------------------------------------------
def field_path(key: str) -> str:
    """The payload path of a filter key: a chunk field at the top level, an attribute under `attributes`."""
    if key in CHUNK_FIELDS:
        return key
    return f"attributes.{key}" if _PLAIN_KEY.match(key) else f'attributes."{key}"'


def to_qdrant_filter(where: Filter) -> models.Filter:
    from qdrant_client import models

    if isinstance(where, Group):
        parts = [to_qdrant_filter(f) for f in where.filters]
        return models.Filter(must=parts) if where.op == "and" else models.Filter(should=parts)  # type: ignore[arg-type]
    path = field_path(where.key)
    if where.op in ("eq", "in"):
        return models.Filter(should=_equals(path, [where.value] if where.op == "eq" else list(where.value)))
    if where.op in ("ne", "nin"):
        # must_not alone holds for a point without the key: the guard says the key is there (not null)
        exists = models.IsEmptyCondition(is_empty=models.PayloadField(key=path))
        values = [where.value] if where.op == "ne" else list(where.value)
        return models.Filter(must_not=[exists, *_equals(path, values)])
    if isinstance(where.value, (str, bool)):
        raise InvalidRequest(f"the qdrant RAG store compares `{where.op}` against numbers only",
                             param="filters")
    bound = float(where.value)
    return models.Filter(must=[models.FieldCondition(key=path, range=models.Range(**{where.op: bound}))])


def _equals(path: str, values: Sequence[Any]) -> list[Any]:
    """Conditions any of which means "the value is one of `values`" (numbers equal across int and float)."""
    from qdrant_client import models

    exact = [v for v in values if isinstance(v, (str, bool))]
    numbers = [v for v in values if not isinstance(v, (str, bool))]
    conditions: list[Any] = []
    strings = [v for v in exact if isinstance(v, str)]
    if strings:
        conditions.append(models.FieldCondition(key=path, match=models.MatchAny(any=strings)))
    conditions += [models.FieldCondition(key=path, match=models.MatchValue(value=v))
                   for v in exact if isinstance(v, bool)]
    # a Match never equals a float payload value: a one-point range matches 3 and 3.0 alike
    conditions += [models.FieldCondition(key=path, range=models.Range(gte=float(v), lte=float(v)))
                   for v in numbers]
    return conditions


# -- errors ------------------------------------------------------------------------------------
def from_qdrant_error(exc: Exception, where: str) -> ProxyError | None:
    """The gateway's error for a qdrant-client failure (None: not a Qdrant failure, let it rise)."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        reason = {401: "refused the api key", 403: "refused the api key"}.get(exc.status_code or 0)
        detail = reason or f"answered HTTP {exc.status_code} {exc.reason_phrase}".rstrip()
        return ProviderUnavailable(f"the qdrant RAG store at {where} {detail}")
    if isinstance(exc, (ResponseHandlingException, httpx.TransportError)):
        source = getattr(exc, "source", exc)
        return ProviderUnavailable(f"the qdrant RAG store at {where} is unreachable: "
                                   f"{type(source).__name__}: {source}")
    return None


# -- the shared local-mode clients ---------------------------------------------------------------
@dataclass
class _Local:
    client: QdrantClient
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0


class _LocalClients:
    """One local-mode client per directory in this process, reference counted (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, _Local] = {}

    def acquire(self, path: str) -> _Local:
        from qdrant_client import QdrantClient

        with self._lock:
            shared = self._open.get(path)
            if shared is None:
                try:
                    client = QdrantClient(path=path, force_disable_check_same_thread=True)
                except RuntimeError as exc:  # another process holds the directory's lock
                    raise ProviderUnavailable(f"the qdrant RAG store at {path} is unavailable: {exc}") from exc
                shared = self._open[path] = _Local(client)
            shared.users += 1
            return shared

    def release(self, path: str) -> None:
        with self._lock:
            shared = self._open[path]
            shared.users -= 1
            if shared.users == 0:
                del self._open[path]
                with shared.lock:
                    shared.client.close()


_LOCAL = _LocalClients()


class QdrantStore(RecordStore):
    def __init__(self, url: str | None = None, api_key: str | None = None, path: str | None = None,
                 prefix: str = "omni") -> None:
        super().__init__()
        url, api_key, path, prefix = url or None, api_key or None, path or None, prefix or "omni"  # "" is unset
        if (url is None) == (path is None):
            raise ProviderUnavailable("the qdrant RAG store needs exactly one of `url` (a server) or `path` (local)")
        if not _PREFIX.match(prefix):
            raise ProviderUnavailable(f"the qdrant RAG store's prefix {prefix!r} must be 1-48 letters, digits, "
                                      "'_' or '-'")
        self.prefix = prefix
        self.records = f"{prefix}_records"
        self._known: set[str] = set()  # chunk collections seen to exist (never re-created under the same name)
        self._written: dict[tuple[str, str], int] = {}  # (collection, source) -> chunks just written
        self._sizes: dict[str, int] = {}  # chunk collection -> its dense dimension
        self._indexed: set[tuple[str, str]] = set()  # (collection, field) payload indexes made (server mode)
        self._local_path: str | None = None
        self._closed = False
        if path is not None:
            self._local_path = os.path.realpath(os.path.expanduser(path))
            self.where = self._local_path
            shared = _LOCAL.acquire(self._local_path)
            self.client, self._io = shared.client, shared.lock
        else:
            from qdrant_client import QdrantClient

            self.where = url or ""
            self.client = QdrantClient(url=url, api_key=api_key, timeout=30, check_compatibility=False)
            self._io = contextlib.nullcontext()  # type: ignore[assignment]
        try:
            self._ensure_records()
        except BaseException:
            self.close()
            raise

    @property
    def local(self) -> bool:
        return self._local_path is not None

    @contextlib.contextmanager
    def _calling(self) -> Iterator[None]:
        """Around every client call: local mode's lock, and Qdrant's failures as the gateway's errors."""
        try:
            with self._io:
                yield
        except Exception as exc:
            mapped = from_qdrant_error(exc, self.where)
            if mapped is None:
                raise
            raise mapped from exc

    def _ensure_records(self) -> None:
        from qdrant_client import models

        with self._calling():
            if not self.client.collection_exists(self.records):
                self._create(self.records, lambda: self.client.create_collection(self.records, vectors_config={}))
            self._tune_local(self.records)
            self._index(self.records, "parents", models.PayloadSchemaType.KEYWORD)

    def _create(self, name: str, create: Callable[[], Any]) -> None:
        """Create a collection; another gateway creating it at the same moment is fine (the server's 409)."""
        from qdrant_client.http.exceptions import UnexpectedResponse

        try:
            create()
        except UnexpectedResponse as exc:
            if exc.status_code != 409:
                raise

    def _index(self, collection: str, name: str, schema: Any) -> None:
        """A payload index on the server (local mode has none: it scans, and warns on each)."""
        if self.local or (collection, name) in self._indexed:
            return
        self.client.create_payload_index(collection, name, field_schema=schema, wait=True)
        self._indexed.add((collection, name))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._local_path is not None:
            _LOCAL.release(self._local_path)
        else:
            self.client.close()

    # -- records -----------------------------------------------------------------------------------
    def _record_put(self, key: str, record: Mapping[str, Any]) -> None:
        from qdrant_client import models

        payload = {"key": key, "parents": parents(key), "record": json.dumps(record, separators=(",", ":"))}
        with self._calling():
            self.client.upsert(self.records, [models.PointStruct(id=point_id(key), vector={}, payload=payload)],
                               wait=True)

    def _record_get(self, key: str) -> dict[str, Any] | None:
        with self._calling():
            found = self.client.retrieve(self.records, [point_id(key)], with_payload=True, with_vectors=False)
        return json.loads(found[0].payload["record"]) if found and found[0].payload else None

    def _record_list(self, prefix: str) -> list[dict[str, Any]]:
        from qdrant_client import models

        parent = prefix[:prefix.rfind("/") + 1]
        scope = models.Filter(must=[models.FieldCondition(key="parents", match=models.MatchValue(value=parent))]) \
            if parent else None
        out: list[dict[str, Any]] = []
        offset: Any = None
        while True:
            with self._calling():
                points, offset = self.client.scroll(self.records, scroll_filter=scope, limit=SCROLL, offset=offset,
                                                    with_payload=True, with_vectors=False)
            out += [json.loads(p.payload["record"]) for p in points
                    if p.payload and str(p.payload["key"]).startswith(prefix)]
            if offset is None:
                return out

    def _record_delete(self, keys: Sequence[str]) -> None:
        from qdrant_client import models

        if keys:
            with self._calling():
                self.client.delete(self.records, models.PointIdsList(points=[point_id(k) for k in keys]), wait=True)

    # -- chunks ------------------------------------------------------------------------------------
    def _chunks_name(self, collection_id: str) -> str:
        return f"{self.prefix}_chunks_{collection_id}"

    def _exists(self, name: str) -> bool:
        """Whether a chunk collection exists: asked each time in local mode (a lookup in the shared client,
        which another store of this process may change), remembered once seen on a server."""
        if name not in self._known or self.local:
            with self._calling():
                if not self.client.collection_exists(name):
                    self._known.discard(name)
                    return False
                if name not in self._known:
                    self._known.add(name)
                    self._tune_local(name)
        return True

    def _reading(self, read: Callable[..., Any], name: str, **options: Any) -> list[Any]:
        """`read(name, **options)` on a chunk collection: [] when it does not exist (or another gateway just
        deleted it)."""
        from qdrant_client.http.exceptions import UnexpectedResponse

        with self._calling():  # in local mode the lock holds from the existence check to the read
            if not self._exists(name):
                return []
            try:
                found = read(name, **options)
                return found.points if hasattr(found, "points") else list(found)  # query_points' answer
            except UnexpectedResponse as exc:
                if exc.status_code != 404:
                    raise
                self._known.discard(name)
                return []

    def _tune_local(self, name: str) -> None:
        """Local mode commits every point to its collection's SQLite file with a full sync (~3 ms each on
        a disk): the write-ahead log with `synchronous=NORMAL` makes ingest ~4x faster and loses at most
        the last writes on a power cut, never the file. This reaches into the client's internals
        (`QdrantLocal.collections[name].storage.storage`); a client that changes them is only slower."""
        import sqlite3

        local = getattr(self.client, "_client", None)
        collection = getattr(local, "collections", {}).get(name) if self.local else None
        connection = getattr(getattr(collection, "storage", None), "storage", None)
        if isinstance(connection, sqlite3.Connection):
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")

    def _chunks_add(self, collection: Collection, rows: Sequence[ChunkRow]) -> None:
        from qdrant_client import models

        name = self._chunks_name(collection.id)
        with self._calling():
            if not self._exists(name):
                dims = int(rows[0].vector.shape[0])  # type: ignore[union-attr]
                self._create(name, lambda: self.client.create_collection(
                    name, vectors_config={"dense": models.VectorParams(size=dims, distance=models.Distance.COSINE)},
                    sparse_vectors_config={"keyword": models.SparseVectorParams(modifier=models.Modifier.IDF)}))
                self._known.add(name)
                self._tune_local(name)
            for key, kind in _CHUNK_INDEXES.items():
                self._index(name, key, kind)
            for row in rows:
                for key, value in row.attributes.items():
                    self._index(name, field_path(key), _schema(value))
            for start in range(0, len(rows), BATCH):
                self.client.upsert(name, [_point(row) for row in rows[start:start + BATCH]], wait=True)
        # one document's rows (RecordStore writes a document at a time): its older chunks start past these
        self._written[(collection.id, rows[0].source)] = max(row.chunk_index for row in rows) + 1

    def _chunks_delete(self, collection_id: str, source: str | None, keep_generation: str | None = None) -> None:
        from qdrant_client import models

        name = self._chunks_name(collection_id)
        if not self._exists(name):
            return
        with self._calling():
            if source is None:
                self.client.delete_collection(name)
                self._known.discard(name)
                return
            written = self._written.pop((collection_id, source), 0) if keep_generation is not None else 0
            if self.local:
                self._delete_from(name, collection_id, source, written)
                return
            match = models.FieldCondition(key="source", match=models.MatchValue(value=source))
            keep = models.FieldCondition(key="generation", match=models.MatchValue(value=keep_generation)) \
                if keep_generation is not None else None
            selector = models.FilterSelector(filter=models.Filter(must=match, must_not=keep))
            self.client.delete(name, selector, wait=True)

    def _delete_from(self, name: str, collection_id: str, source: str, first: int) -> None:
        """Local mode: delete a document's points from index `first` on. A filter would scan the whole
        collection in Python (ingest would grow quadratic); a document's points are its chunk indexes
        0..n-1 (chunking.py counts them across the document), each version overwriting the last in place,
        so its older chunks are the run of points past the new version's, found by id."""
        from qdrant_client import models

        found: list[Any] = []
        while True:
            ids = [point_id(f"{collection_id}.{source_key(source)}.{i}") for i in range(first, first + PROBE)]
            points = self.client.retrieve(name, ids, with_payload=False, with_vectors=False)
            found += [p.id for p in points]
            if len(points) < PROBE:
                break
            first += PROBE
        if found:  # all at once: a partial delete would break the run for the next look
            self.client.delete(name, models.PointIdsList(points=found), wait=True)

    def _chunks_get(self, chunk_ids: Sequence[str]) -> list[ChunkRow]:
        by_collection: dict[str, list[str]] = {}
        for chunk_id in chunk_ids:
            by_collection.setdefault(chunk_id.split(".", 1)[0], []).append(chunk_id)
        rows: list[ChunkRow] = []
        for collection_id, ids in by_collection.items():
            name = self._chunks_name(collection_id)
            asked = {i for i in ids if i.count(".") == 3}  # RecordStore's ids: collection.source.generation.index
            found = self._reading(self.client.retrieve, name, ids=[chunk_point(i) for i in asked],
                                  with_payload=True, with_vectors=False)
            # a point now holding a newer version of the chunk does not answer for the old id
            rows += [ChunkRow.from_payload(p.payload) for p in found if p.payload and p.payload["chunk_id"] in asked]
        return rows

    # -- search ------------------------------------------------------------------------------------
    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        query = unit(vector).tolist()
        return self._search(collection_ids, query, "dense", k, where)

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        from qdrant_client import models

        terms = query_terms(query)
        if not terms:
            return []
        sparse = models.SparseVector(indices=list(terms), values=list(terms.values()))
        # Qdrant's score is the sum over shared terms of idf * weight: squashed into (0, 1)
        ranked = self._search(collection_ids, sparse, "keyword", k, where)
        return [(chunk_id, score / (1.0 + score)) for chunk_id, score in ranked if score > 0]

    def _search(self, collection_ids: Sequence[str], query: Any, using: str, k: int,
                where: Filter | None) -> list[tuple[str, float]]:
        native = to_qdrant_filter(where) if where is not None else None
        found: list[tuple[str, float]] = []
        for collection_id in dict.fromkeys(collection_ids):
            name = self._chunks_name(collection_id)
            if using == "dense" and self._exists(name) and self._dims(name) != len(query):
                continue  # another embedding model's collection: nothing of it is near this vector
            points = self._reading(self.client.query_points, name, query=query, using=using, query_filter=native,
                                   limit=k, with_payload=["chunk_id"], with_vectors=False)
            found += [(p.payload["chunk_id"], p.score) for p in points if p.payload]
        return sorted(found, key=lambda pair: -pair[1])[:k]

    def _dims(self, name: str) -> int:
        """The collection's dimension (asked once: a chunk collection's name is never reused)."""
        if name not in self._sizes:
            with self._calling():
                vectors = self.client.get_collection(name).config.params.vectors
            self._sizes[name] = int(vectors["dense"].size)  # type: ignore[index]
        return self._sizes[name]


def _schema(value: Any) -> str:
    """The payload index for an attribute's values: numbers are filtered by ranges, which a float index
    serves for integers and floats alike."""
    if isinstance(value, bool):
        return "bool"
    return "float" if isinstance(value, (int, float)) else "keyword"


def _point(row: ChunkRow) -> models.PointStruct:
    from qdrant_client import models

    terms = document_terms(row.content)
    return models.PointStruct(
        id=chunk_point(row.id), payload=row.payload(),
        vector={"dense": row.vector.tolist(),  # type: ignore[union-attr]
                "keyword": models.SparseVector(indices=list(terms), values=list(terms.values()))})
