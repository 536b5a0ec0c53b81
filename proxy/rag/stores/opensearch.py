"""The `opensearch` RAG store: OpenSearch with its k-NN plugin, through the official opensearch-py client.

Indices, all named from `prefix` (lower case; default `omni-llm`):
- `{prefix}-catalog`: RecordStore's records (collections, documents, uploads), one plain document each,
  `_id` = the record key. Only `key` is indexed (`dynamic: false`), so no record field can ever grow or
  conflict in the mapping; `_record_list` is a `prefix` query on `key`, paged with `search_after`.
- `{prefix}-chunks-{collection id}`, one per collection, created on its first write (the dimension is
  known then): `vector` a knn_vector (hnsw, cosinesimil) on the lucene engine, which applies a knn
  query's `filter` during the graph search (OpenSearch's "efficient k-NN filtering": k results whenever
  k chunks pass; faiss also does since 2.9, nmslib never); `content` text for BM25; the chunk fields as
  keyword/integer; `attributes` kept as given but not indexed, plus a typed copy per value kind
  (`attr_s.<key>` keyword, `attr_n.<key>` double, `attr_b.<key>` boolean, dynamic templates) so a key
  holding a string in one document and a number in another never breaks the mapping.
Scores: a cosinesimil knn score is (1 + cos)/2 (the k-NN plugin's spaces table), turned back into the
cosine; BM25 is squashed to s/(1 + s). Filters compile to bool/term/range clauses with an `exists`
guard, so a missing key never matches (search.matches).
Visibility: OpenSearch is near-real-time (search sees a write after the shard's next refresh, 1 s by
default). A write here ends with an explicit refresh so the next search sees it: one refresh per
`write_documents` item's chunks (after its bulk requests), `refresh=true` on record writes and on the
delete-by-query; each refresh makes a small segment that OpenSearch later merges: cheap for ingest in
batches, wasteful if something wrote one chunk at a time.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors
from opensearchpy.serializer import JSONSerializer

from proxy.errors import ProviderUnavailable
from proxy.rag.search import CHUNK_FIELDS, Compare, Filter, Group, keyword_terms
from proxy.rag.store import Collection
from proxy.rag.stores.base import ChunkRow, RecordStore, unit

PAGE = 256  # records per listing page: uploads are 32 KiB records, so a page stays under ~8 MiB
BULK_DOCS = 500  # chunks per `_bulk` request (opensearch-py's default chunk_size)
BULK_BYTES = 50 * 1024 * 1024  # and bytes: half of OpenSearch's default http.max_content_length (100 MB)
MAX_K = 10_000  # a knn query's k and a search window (from + size) are capped at 10,000 by OpenSearch
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,100}$")
_CHUNK_TYPES = {"source": "keyword", "section": "keyword", "page": "number", "chunk_index": "number"}
_TYPED = (("attr_s", "keyword"), ("attr_n", "number"), ("attr_b", "boolean"))
_NEVER: dict[str, Any] = {"match_none": {}}


def chunk_mapping(dimensions: int) -> dict[str, Any]:
    keyword, integer = {"type": "keyword"}, {"type": "integer"}
    return {
        "settings": {"index": {"knn": True}},
        "mappings": {
            "dynamic": False,
            "dynamic_templates": [
                {"attr_strings": {"path_match": "attr_s.*", "match_mapping_type": "string",
                                  "mapping": {"type": "keyword"}}},
                {"attr_integers": {"path_match": "attr_n.*", "match_mapping_type": "long",
                                   "mapping": {"type": "double"}}},
                {"attr_numbers": {"path_match": "attr_n.*", "match_mapping_type": "double",
                                  "mapping": {"type": "double"}}},
                {"attr_booleans": {"path_match": "attr_b.*", "match_mapping_type": "boolean",
                                   "mapping": {"type": "boolean"}}},
            ],
            "properties": {
                "vector": {"type": "knn_vector", "dimension": dimensions,
                           "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"}},
                "content": {"type": "text"},
                **{name: keyword for name in ("chunk_id", "collection_id", "collection", "source", "generation",
                                              "section", "file_id")},
                "chunk_index": integer, "page": integer,
                "attributes": {"type": "object", "enabled": False},
                **{name: {"type": "object", "dynamic": True} for name, _ in _TYPED},
            },
        },
    }


CATALOG_MAPPING = {"mappings": {"dynamic": False, "properties": {"key": {"type": "keyword"}}}}


class OrjsonSerializer(JSONSerializer):
    """Bodies through orjson: the stdlib json opensearch-py uses costs ~0.5 ms per 256-float chunk, the
    largest client-side cost of an ingest; numpy vectors are written directly (float32 stays short)."""

    def dumps(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        try:
            return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        except TypeError as exc:
            raise os_errors.SerializationError(data, exc) from exc

    def loads(self, s: str) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError as exc:
            raise os_errors.SerializationError(s, exc) from exc


def _attribute_field(key: str) -> str:
    # A '.' in a field name is an object path to OpenSearch; ':' never occurs in a filter key.
    return key.replace(".", ":")


def to_opensearch_chunk(row: ChunkRow) -> dict[str, Any]:
    doc = row.payload()
    doc["vector"] = np.ascontiguousarray(row.vector, dtype=np.float32)  # OrjsonSerializer writes it as is
    typed: dict[str, dict[str, Any]] = {name: {} for name, _ in _TYPED}
    for key, value in row.attributes.items():
        if key in CHUNK_FIELDS:
            continue  # the chunk's own field wins (ChunkRow.fields)
        if isinstance(value, bool):
            typed["attr_b"][_attribute_field(key)] = value
        elif isinstance(value, (int, float)) and np.isfinite(value):
            typed["attr_n"][_attribute_field(key)] = value
        elif isinstance(value, str):
            typed["attr_s"][_attribute_field(key)] = value
    return {**doc, **typed}


# -- filters: search.Filter -> OpenSearch query DSL (same answers as search.matches) --------------------
def _fields(key: str) -> list[tuple[str, str]]:
    if key in _CHUNK_TYPES:
        return [(key, _CHUNK_TYPES[key])]
    return [(f"{name}.{_attribute_field(key)}", kind) for name, kind in _TYPED]


def _equal_clauses(fields: list[tuple[str, str]], value: Any) -> list[dict[str, Any]]:
    """Term clauses true where a field equals `value` as Python's == would (True == 1, 2 == 2.0, "2" != 2)."""
    clauses = []
    for field, kind in fields:
        if kind == "keyword" and isinstance(value, str):
            clauses.append({"term": {field: value}})
        elif kind == "number" and isinstance(value, (int, float)) and not isinstance(value, str):
            number = float(value)
            if field in _CHUNK_TYPES and not number.is_integer():
                continue  # an integer field never equals 2.5
            clauses.append({"term": {field: int(number) if field in _CHUNK_TYPES else number}})
        elif kind == "boolean" and (isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1))):
            clauses.append({"term": {field: bool(value)}})
    return clauses


def _any(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    if not clauses:
        return _NEVER
    return clauses[0] if len(clauses) == 1 else {"bool": {"should": clauses, "minimum_should_match": 1}}


def to_opensearch_filter(where: Filter) -> dict[str, Any]:
    if isinstance(where, Group):
        parts = [to_opensearch_filter(f) for f in where.filters]
        if where.op == "and":
            return {"bool": {"filter": parts}}
        return {"bool": {"should": parts, "minimum_should_match": 1}}
    return _compare(where)


def _compare(where: Compare) -> dict[str, Any]:
    fields = _fields(where.key)
    values = where.value if where.op in ("in", "nin") else (where.value,)
    equal = _any([c for v in values for c in _equal_clauses(fields, v)])
    if where.op in ("eq", "in"):
        return equal
    if where.op in ("ne", "nin"):  # a missing key never matches, not even `ne`
        present = _any([{"exists": {"field": field}} for field, _ in fields])
        return {"bool": {"filter": [present], "must_not": [equal]}} if equal is not _NEVER else present
    # gt/gte/lt/lte: strings compare with strings, numbers with numbers (a bool counts as a number)
    text = isinstance(where.value, str)
    bound = where.value if text else float(where.value)
    return _any([{"range": {field: {where.op: bound}}} for field, kind in fields
                 if kind == ("keyword" if text else "number")])


class OpenSearchStore(RecordStore):
    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 verify_certs: bool = True, prefix: str = "omni-llm") -> None:
        super().__init__()
        if not _PREFIX.match(prefix):
            raise ProviderUnavailable(f"the opensearch RAG store's prefix {prefix!r} is not a valid index name start "
                                      "(lower-case letters, digits, '-', '_')")
        self.url = _without_credentials(url)  # what error messages name: never a password in the URL
        self.catalog = f"{prefix}-catalog"
        self.prefix = prefix
        auth = (username, password or "") if username else None
        # One retry at most: the engine reports a failure to the client instead of stalling it.
        self.client = OpenSearch(hosts=[url], http_auth=auth, verify_certs=verify_certs, ssl_show_warn=False,
                                 timeout=30, max_retries=1, retry_on_timeout=False, serializer=OrjsonSerializer())
        self._catalog_ready = False
        self._setup = threading.Lock()

    # -- errors and set-up -------------------------------------------------------------------------
    @contextmanager
    def _reach(self) -> Iterator[None]:
        """opensearch-py's exceptions -> the gateway's 503 naming the store (most specific first)."""
        where = f"the opensearch RAG store at {self.url}"
        try:
            yield
        except (os_errors.AuthenticationException, os_errors.AuthorizationException) as exc:
            raise ProviderUnavailable(f"{where} refused the credentials (HTTP {exc.status_code})") from exc
        except os_errors.ConnectionError as exc:
            raise ProviderUnavailable(f"{where} is unreachable: {exc.info or exc.error}") from exc
        except os_errors.TransportError as exc:
            raise ProviderUnavailable(f"{where} answered HTTP {exc.status_code}: {_reason(exc)}") from exc
        except helpers.BulkIndexError as exc:
            first = next(iter(exc.errors[0].values())) if exc.errors else {}
            raise ProviderUnavailable(f"{where} rejected {len(exc.errors)} chunk(s): {first.get('error')}") from exc

    def _ready(self) -> None:
        if self._catalog_ready:
            return
        with self._setup:
            if not self._catalog_ready:
                self._create(self.catalog, CATALOG_MAPPING)
                self._catalog_ready = True

    def _create(self, index: str, body: Mapping[str, Any]) -> None:
        if self.client.indices.exists(index=index):
            return
        try:
            self.client.indices.create(index=index, body=body)
        except os_errors.RequestError as exc:
            if exc.error != "resource_already_exists_exception":  # another instance created it first
                raise

    def _chunk_index(self, collection_id: str) -> str:
        return f"{self.prefix}-chunks-{collection_id.lower()}"

    # -- records ---------------------------------------------------------------------------------------
    def _record_put(self, key: str, record: Mapping[str, Any]) -> None:
        with self._reach():
            self._ready()
            self.client.index(index=self.catalog, id=key, body=dict(record), refresh=True)

    def _record_get(self, key: str) -> dict[str, Any] | None:
        with self._reach():
            self._ready()
            try:
                found = self.client.get(index=self.catalog, id=key)
            except os_errors.NotFoundError:
                return None
        return found["_source"]  # type: ignore[no-any-return]

    def _record_list(self, prefix: str) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"query": {"prefix": {"key": prefix}}, "size": PAGE, "sort": [{"key": "asc"}]}
        records: list[dict[str, Any]] = []
        with self._reach():
            self._ready()
            while True:  # search_after pages: no 10,000-hit window, no scroll context left open
                hits = self.client.search(index=self.catalog, body=body)["hits"]["hits"]
                records += [hit["_source"] for hit in hits]
                if len(hits) < PAGE:
                    return records
                body["search_after"] = hits[-1]["sort"]

    def _record_delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with self._reach():
            self._ready()
            helpers.bulk(self.client, ({"_op_type": "delete", "_index": self.catalog, "_id": key} for key in keys),
                         chunk_size=BULK_DOCS, ignore_status=(404,), refresh=True)

    # -- chunks ----------------------------------------------------------------------------------------
    def _chunks_add(self, collection: Collection, rows: Sequence[ChunkRow]) -> None:
        index = self._chunk_index(collection.id)
        dimensions = collection.dimensions or int(rows[0].vector.shape[0])  # type: ignore[union-attr]
        with self._reach():
            self._create(index, chunk_mapping(dimensions))
            actions = ({"_op_type": "index", "_index": index, "_id": row.id, "_source": to_opensearch_chunk(row)}
                       for row in rows)
            helpers.bulk(self.client, actions, chunk_size=BULK_DOCS, max_chunk_bytes=BULK_BYTES)
            self.client.indices.refresh(index=index)

    def _chunks_delete(self, collection_id: str, source: str | None, keep_generation: str | None = None) -> None:
        index = self._chunk_index(collection_id)
        with self._reach():
            if source is None and keep_generation is None:
                self.client.indices.delete(index=index, ignore_unavailable=True)
                return
            query: dict[str, Any] = {"bool": {"filter": [{"term": {"source": source}}] if source is not None else []}}
            if keep_generation is not None:
                query["bool"]["must_not"] = [{"term": {"generation": keep_generation}}]
            self.client.delete_by_query(index=index, body={"query": query}, refresh=True, conflicts="proceed",
                                        ignore_unavailable=True)

    def _chunks_get(self, chunk_ids: Sequence[str]) -> list[ChunkRow]:
        docs = [{"_index": self._chunk_index(chunk_id.split(".", 1)[0]), "_id": chunk_id} for chunk_id in chunk_ids]
        with self._reach():
            found = self.client.mget(body={"docs": docs}, _source_excludes="vector")["docs"]
        # a chunk of a deleted collection comes back as an index_not_found error item: it is gone
        return [ChunkRow.from_payload(doc["_source"]) for doc in found if doc.get("found")]

    def _search(self, collection_ids: Sequence[str], query: dict[str, Any], k: int) -> list[dict[str, Any]]:
        if not collection_ids or k < 1:
            return []
        indices = ",".join(self._chunk_index(cid) for cid in collection_ids)
        body = {"size": min(k, MAX_K), "_source": False, "query": query}
        with self._reach():  # a collection with no chunks yet has no index: ignore_unavailable
            found = self.client.search(index=indices, body=body, ignore_unavailable=True)
        return found["hits"]["hits"]  # type: ignore[no-any-return]

    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        query = unit(vector)
        if not np.any(query):
            return []  # OpenSearch refuses a zero vector in the cosine space; it is near nothing anyway
        knn: dict[str, Any] = {"vector": query.tolist(), "k": min(k, MAX_K)}
        if where is not None:
            knn["filter"] = to_opensearch_filter(where)  # inside the knn query: filtered during the search
        hits = self._search(collection_ids, {"knn": {"vector": knn}}, k)
        return [(hit["_id"], 2.0 * hit["_score"] - 1.0) for hit in hits]  # (1 + cos)/2 -> cos

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        terms = keyword_terms(query)
        if not terms:
            return []  # stop words alone (OpenSearch's standard analyzer keeps them) match nothing
        match = {"match": {"content": {"query": " ".join(terms), "operator": "or"}}}
        bool_query: dict[str, Any] = {"must": [match]}
        if where is not None:
            bool_query["filter"] = [to_opensearch_filter(where)]
        hits = self._search(collection_ids, {"bool": bool_query}, k)
        return [(hit["_id"], hit["_score"] / (1.0 + hit["_score"])) for hit in hits]

    def close(self) -> None:
        self.client.close()


def _without_credentials(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def _reason(exc: Any) -> str:
    info = exc.info if isinstance(exc.info, dict) else {}
    error = info.get("error")
    if isinstance(error, dict):
        return f"{error.get('type')}: {error.get('reason')}"
    return str(error or exc.error)
