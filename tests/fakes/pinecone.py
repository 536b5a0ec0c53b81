"""A fake Pinecone (REST API 2026-07, what the `pinecone` 10.x SDK sends) for the pinecone RAG store.

Control plane: `GET /indexes/{name}` (describe_index). Data plane, per index under `/data/{name}`:
`POST /vectors/upsert`, `POST /query`, `GET /vectors/fetch`, `GET /vectors/list`, `POST /vectors/delete`,
`POST /describe_index_stats`. Vector indexes only (created with a dimension and a metric; their
2026-07 schema is the one reserved `_values` dense field).

Like the service: the `Api-Key` header is checked (401), the `X-Pinecone-Api-Version` header is
required; the control plane answers errors as `{"error": {"code", "message"}, "status"}` and the data
plane as `{"code", "message", "details"}` (gRPC status codes); the documented limits are enforced
(1000 vectors and 2 MB per upsert, 40 KB of flat metadata per vector with no nulls or nested objects,
1000 non-zero sparse values, dense values of the index's dimension with one non-zero value, top_k
10,000 or 1000 with metadata, 1000 ids per fetch/delete, list pages of at most 100). A query on a
dense index needs a dense `vector` (a sparse part is accepted only on a `dotproduct` index); metadata
filters apply before top-k; scores are dot products (dense + sparse) or cosine similarities.
Deletion by metadata filter is refused, as on serverless indexes.

Unlike the service: one process serves every index (an index's host is this server plus
`/data/{name}`, with an `http://` scheme the SDK keeps), writes are visible at once (the service is
eventually consistent), and the search is exact (the service's is approximate).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

API_VERSIONS = ("2025-10", "2026-07")
MAX_UPSERT_VECTORS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_SPARSE = 1000
MAX_IDS = 1000
MAX_TOP_K = 10_000
MAX_TOP_K_WITH_DATA = 1000
RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
LEAF_OPS = ("$eq", "$ne", "$in", "$nin", "$exists", *RANGE_OPS)


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Stored:
    values: list[float]
    sparse: dict[int, float]
    metadata: dict[str, Any] | None


class Space(dict[str, Stored]):
    """One namespace: vectors by id; the dense matrix and the sparse postings are rebuilt after a write."""

    def __init__(self) -> None:
        super().__init__()
        self.built: tuple[list[str], np.ndarray, dict[int, list[tuple[int, float]]]] | None = None

    def scores(self, dense: list[float], sparse: Mapping[int, float], metric: str) -> tuple[list[str], np.ndarray]:
        """Every vector's score, aligned with the ids (higher is better; a euclidean distance is negated)."""
        if self.built is None:
            ids = list(self)
            postings: dict[int, list[tuple[int, float]]] = {}
            for row, vector_id in enumerate(ids):
                for term, weight in self[vector_id].sparse.items():
                    postings.setdefault(term, []).append((row, weight))
            matrix = np.array([self[i].values for i in ids], dtype=np.float32).reshape(len(ids), -1)
            self.built = ids, matrix, postings
        ids, matrix, postings = self.built
        query = np.asarray(dense, dtype=np.float32)
        if metric == "euclidean":
            return ids, -np.linalg.norm(matrix - query, axis=1)
        scores = (matrix @ query).astype(np.float64)
        if metric == "cosine":
            scores = scores / np.maximum(np.linalg.norm(matrix, axis=1) * np.linalg.norm(query), 1e-30)
        for term, weight in sparse.items():
            for row, value in postings.get(term, ()):
                scores[row] += weight * value
        return ids, scores


@dataclass
class FakeIndex:
    name: str
    dimension: int
    metric: str
    namespaces: dict[str, Space] = field(default_factory=dict)


@dataclass
class FakePinecone:
    api_key: str = "pcsk_fake_0123456789"
    base_url: str = ""  # set by the test once the server runs (the hosts describe_index reports)
    indexes: dict[str, FakeIndex] = field(default_factory=dict)
    requests: int = 0

    def create_index(self, name: str, dimension: int, metric: str = "dotproduct") -> str:
        """Create an index (an operator's job on the service); returns its data-plane host."""
        self.indexes[name] = FakeIndex(name, dimension, metric)
        return self.host(name)

    def host(self, name: str) -> str:
        return f"{self.base_url}/data/{name}"

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/indexes/{name}", self._control(self._describe_index), methods=["GET"]),
            Route("/data/{name}/vectors/upsert", self._data(self._upsert), methods=["POST"]),
            Route("/data/{name}/query", self._data(self._query), methods=["POST"]),
            Route("/data/{name}/vectors/fetch", self._data(self._fetch), methods=["GET"]),
            Route("/data/{name}/vectors/list", self._data(self._list), methods=["GET"]),
            Route("/data/{name}/vectors/delete", self._data(self._delete), methods=["POST"]),
            Route("/data/{name}/describe_index_stats", self._data(self._stats), methods=["POST"]),
        ])

    # -- request plumbing ----------------------------------------------------------------------
    def _check(self, request: Request) -> None:
        self.requests += 1
        if request.headers.get("api-key") != self.api_key:
            raise Rejected(401, "Invalid API Key")
        version = request.headers.get("x-pinecone-api-version")
        if version not in API_VERSIONS:
            raise Rejected(400, f"Unsupported API version {version!r}")

    def _control(self, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                self._check(request)
                return _json(await handler(request))
            except Rejected as exc:
                code = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND"}[exc.status]
                return _json({"error": {"code": code, "message": exc.message}, "status": exc.status}, exc.status)
        return endpoint

    def _data(self, handler: Callable[[FakeIndex, Any, Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                self._check(request)
                index = self.indexes.get(request.path_params["name"])
                if index is None:
                    raise Rejected(404, "Index not found")
                body: Any = None
                if request.method == "POST":
                    raw = await request.body()
                    if len(raw) > MAX_REQUEST_BYTES:
                        raise Rejected(413, f"Request size {len(raw)} bytes exceeds the limit of {MAX_REQUEST_BYTES}")
                    try:
                        body = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        raise Rejected(400, "Failed to parse the request body as JSON") from None
                    if not isinstance(body, dict):
                        raise Rejected(400, "The request body must be a JSON object")
                return _json(handler(index, body, request))
            except Rejected as exc:
                code = {400: 3, 401: 16, 404: 5, 413: 3}[exc.status]
                return _json({"code": code, "message": exc.message, "details": []}, exc.status)
        return endpoint

    # -- control plane -----------------------------------------------------------------------------
    async def _describe_index(self, request: Request) -> dict[str, Any]:
        index = self.indexes.get(request.path_params["name"])
        if index is None:
            raise Rejected(404, f"Resource {request.path_params['name']} not found")
        return {"name": index.name, "host": self.host(index.name), "status": {"ready": True, "state": "Ready"},
                "schema": {"fields": {"_values": {"type": "dense_vector", "dimension": index.dimension,
                                                  "metric": index.metric, "description": None}}},
                "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1",
                               "environment": "aped-4627-b74a"},
                "deletion_protection": "disabled", "tags": None}

    # -- data plane --------------------------------------------------------------------------------
    def _upsert(self, index: FakeIndex, body: dict[str, Any], request: Request) -> dict[str, Any]:
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise Rejected(400, "vectors must be a non-empty list")
        if len(vectors) > MAX_UPSERT_VECTORS:
            raise Rejected(400, f"Batch size exceeds {MAX_UPSERT_VECTORS}. Maximum batch size is "
                                f"{MAX_UPSERT_VECTORS} vectors per request.")
        parsed = [(_id(v.get("id") if isinstance(v, dict) else None), _stored(index, v)) for v in vectors]
        space = index.namespaces.setdefault(_namespace(body.get("namespace", "")), Space())
        space.update(parsed)
        space.built = None
        return {"upsertedCount": len(parsed)}

    def _query(self, index: FakeIndex, body: dict[str, Any], request: Request) -> dict[str, Any]:
        top_k = body.get("topK")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise Rejected(400, f"topK must be an integer between 1 and {MAX_TOP_K}")
        with_data = body.get("includeMetadata") is True or body.get("includeValues") is True
        if with_data and top_k > MAX_TOP_K_WITH_DATA:
            raise Rejected(400, f"topK must be at most {MAX_TOP_K_WITH_DATA} when including metadata or values")
        namespace = _namespace(body.get("namespace", ""))
        space = index.namespaces.get(namespace, Space())
        if "id" in body:
            found = space.get(_id(body["id"]))
            dense, sparse = (found.values, found.sparse) if found else ([0.0] * index.dimension, {})
        else:
            if "vector" not in body:
                raise Rejected(400, "A dense index needs a dense `vector` in a query (or an `id`)")
            dense = _dense(index, body["vector"], zero_ok=True)
            sparse = _sparse(body["sparseVector"]) if "sparseVector" in body else {}
            if sparse and index.metric != "dotproduct":
                raise Rejected(400, "Cannot query with sparse values an index whose metric is not dotproduct")
        where = body.get("filter")
        test = _compile(where) if where is not None else None
        ids, scores = space.scores(dense, sparse, index.metric) if space else ([], np.zeros(0))
        if test is not None:  # the filter applies before the top k are taken
            keep = np.array([test(space[i].metadata or {}) for i in ids], dtype=bool)
            scores = np.where(keep, scores, -np.inf)
        best = np.argsort(-scores, kind="stable")[:top_k] if len(ids) <= top_k else \
            np.argpartition(-scores, top_k)[:top_k]
        scored = sorted(((float(scores[r]), ids[r]) for r in best if scores[r] != -np.inf), key=lambda p: (-p[0], p[1]))
        if index.metric == "euclidean":
            scored = [(-s, i) for s, i in scored]
        matches = []
        for score, vector_id in scored:
            match: dict[str, Any] = {"id": vector_id, "score": score, "values": []}
            if body.get("includeValues") is True:
                match["values"] = space[vector_id].values
            if body.get("includeMetadata") is True and space[vector_id].metadata is not None:
                match["metadata"] = space[vector_id].metadata
            matches.append(match)
        return {"matches": matches, "namespace": namespace, "usage": {"readUnits": 1 + len(space) // 1000}}

    def _fetch(self, index: FakeIndex, body: None, request: Request) -> dict[str, Any]:
        ids = request.query_params.getlist("ids")
        if not ids or len(ids) > MAX_IDS:
            raise Rejected(400, f"ids must name between 1 and {MAX_IDS} vectors")
        namespace = _namespace(request.query_params.get("namespace", ""))
        space = index.namespaces.get(namespace, {})
        vectors = {}
        for vector_id in ids:
            if vector_id in space:
                stored = space[vector_id]
                vectors[vector_id] = {"id": vector_id, "values": stored.values,
                                      **({"sparseValues": {"indices": list(stored.sparse),
                                                           "values": list(stored.sparse.values())}}
                                         if stored.sparse else {}),
                                      **({"metadata": stored.metadata} if stored.metadata is not None else {})}
        return {"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1}}

    def _list(self, index: FakeIndex, body: None, request: Request) -> dict[str, Any]:
        params = request.query_params
        namespace = _namespace(params.get("namespace", ""))
        try:
            limit = int(params.get("limit", "100"))
        except ValueError:
            raise Rejected(400, "limit must be an integer") from None
        if not 1 <= limit <= 100:
            raise Rejected(400, "limit must be between 1 and 100")
        prefix = params.get("prefix", "")
        after = ""
        if "paginationToken" in params:
            try:
                after = base64.urlsafe_b64decode(params["paginationToken"].encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise Rejected(400, "Invalid pagination token") from None
        ids = sorted(i for i in index.namespaces.get(namespace, {}) if i.startswith(prefix) and i > after)
        page = ids[:limit]
        answer: dict[str, Any] = {"vectors": [{"id": i} for i in page], "namespace": namespace,
                                  "usage": {"readUnits": 1}}
        if len(ids) > limit:
            answer["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return answer

    def _delete(self, index: FakeIndex, body: dict[str, Any], request: Request) -> dict[str, Any]:
        namespace = _namespace(body.get("namespace", ""))
        if "filter" in body:
            raise Rejected(400, "Serverless and Starter indexes do not support deleting with metadata filtering")
        if body.get("deleteAll") is True:
            if "ids" in body:
                raise Rejected(400, "No explicit IDs allowed when delete_all=true")
            if index.namespaces.pop(namespace, None) is None:
                raise Rejected(404, "Namespace not found")
            return {}
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
            raise Rejected(400, f"ids must name between 1 and {MAX_IDS} vectors (or set deleteAll)")
        space = index.namespaces.get(namespace, Space())
        for vector_id in ids:
            space.pop(_id(vector_id), None)
        space.built = None
        return {}

    def _stats(self, index: FakeIndex, body: dict[str, Any], request: Request) -> dict[str, Any]:
        counts = {name: len(space) for name, space in index.namespaces.items() if space}
        return {"namespaces": {name: {"vectorCount": n} for name, n in counts.items()}, "dimension": index.dimension,
                "indexFullness": 0.0, "totalVectorCount": sum(counts.values()), "metric": index.metric,
                "vectorType": "dense"}


# -- validation and scoring ------------------------------------------------------------------------
def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"x-pinecone-request-id": "fake-1"})


def _namespace(value: Any) -> str:
    if not isinstance(value, str) or not value.isascii() or len(value) > 512:
        raise Rejected(400, "namespace must be an ASCII string of at most 512 characters")
    return value


def _id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 512 or not value.isascii() or "\x00" in value:
        raise Rejected(400, "Vector ID must be a non-empty ASCII string of at most 512 characters")
    return value


def _dense(index: FakeIndex, values: Any, *, zero_ok: bool = False, vector_id: str = "") -> list[float]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in values):
        raise Rejected(400, "Dense vector values must be a list of numbers")
    if len(values) != index.dimension:
        raise Rejected(400, f"Vector dimension {len(values)} does not match the dimension of the index "
                            f"{index.dimension}")
    if not zero_ok and not any(values):
        raise Rejected(400, f"Dense vectors must contain at least one non-zero value. Vector ID '{vector_id}' "
                            "contains only zeros")
    return [float(v) for v in values]


def _sparse(raw: Any) -> dict[int, float]:
    if not isinstance(raw, dict) or not isinstance(raw.get("indices"), list) or not isinstance(raw.get("values"), list):
        raise Rejected(400, "Sparse vectors need `indices` and `values` lists")
    indices, values = raw["indices"], raw["values"]
    if len(indices) != len(values):
        raise Rejected(400, "Sparse vector indices and values must have the same length")
    if len(indices) > MAX_SPARSE:
        raise Rejected(400, f"Sparse vectors can contain no more than {MAX_SPARSE} non-zero values")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**32 for i in indices):
        raise Rejected(400, "Sparse vector indices must be unsigned 32-bit integers")
    if len(set(indices)) != len(indices):
        raise Rejected(400, "Sparse vector indices must be unique")
    return {int(i): float(v) for i, v in zip(indices, values)}


def _stored(index: FakeIndex, raw: Any) -> Stored:
    if not isinstance(raw, dict) or set(raw) - {"id", "values", "sparseValues", "metadata"}:
        raise Rejected(400, "A vector is an object of id, values, sparseValues and metadata")
    dense = _dense(index, raw.get("values"), vector_id=raw["id"])
    sparse = _sparse(raw["sparseValues"]) if "sparseValues" in raw else {}
    metadata = raw.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise Rejected(400, "Metadata must be a JSON object")
        for key, value in metadata.items():
            if key.startswith("$"):
                raise Rejected(400, f"Metadata key {key!r} must not start with '$'")
            ok = isinstance(value, (str, int, float, bool)) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))
            if not ok:
                raise Rejected(400, f"Metadata value for field {key!r} must be a string, number, boolean or "
                                    "list of strings (no null, no nested object)")
        size = len(orjson.dumps(metadata))
        if size > MAX_METADATA_BYTES:
            raise Rejected(400, f"Metadata size is {size} bytes, which exceeds the limit of {MAX_METADATA_BYTES} "
                                "bytes per vector")
    return Stored(dense, sparse, metadata)


def _compile(where: Any) -> Callable[[Mapping[str, Any]], bool]:
    """A metadata filter as a predicate; malformed filters are rejected with 400 before any search."""
    if not isinstance(where, dict) or not where:
        raise Rejected(400, "A filter must be a non-empty JSON object")
    tests: list[Callable[[Mapping[str, Any]], bool]] = []
    for key, condition in where.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise Rejected(400, f"{key} needs a non-empty list of filters")
            parts = [_compile(c) for c in condition]
            tests.append((lambda ps: lambda m: all(p(m) for p in ps))(parts) if key == "$and"
                         else (lambda ps: lambda m: any(p(m) for p in ps))(parts))
        elif key.startswith("$"):
            raise Rejected(400, f"Unknown filter operator {key}")
        else:
            conditions = condition if isinstance(condition, dict) else {"$eq": condition}
            if not conditions:
                raise Rejected(400, f"The filter on {key!r} is empty")
            for op, value in conditions.items():
                tests.append(_leaf(key, op, value))
    return lambda metadata: all(t(metadata) for t in tests)


def _leaf(key: str, op: str, value: Any) -> Callable[[Mapping[str, Any]], bool]:
    if op not in LEAF_OPS:
        raise Rejected(400, f"Unknown filter operator {op}")
    scalar = (str, int, float, bool)
    if op == "$exists":
        if not isinstance(value, bool):
            raise Rejected(400, "$exists takes true or false")
        return lambda m: (key in m) == value
    if op in RANGE_OPS:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Rejected(400, f"{op} compares numbers only")
        compare = {"$gt": lambda a: a > value, "$gte": lambda a: a >= value,
                   "$lt": lambda a: a < value, "$lte": lambda a: a <= value}[op]
        return lambda m: _number(m.get(key)) and compare(m[key])
    if op in ("$in", "$nin"):
        if not isinstance(value, list) or not value or not all(isinstance(v, scalar) for v in value):
            raise Rejected(400, f"{op} takes a non-empty list of strings, numbers or booleans")
        found = lambda m: key in m and any(_same(m[key], v) for v in value)  # noqa: E731
        return found if op == "$in" else (lambda m: not found(m))
    if not isinstance(value, scalar):
        raise Rejected(400, f"{op} takes a string, number or boolean")
    equal = lambda m: key in m and _same(m[key], value)  # noqa: E731
    # Like MongoDB's, `$ne` and `$nin` hold for a record without the key.
    return equal if op == "$eq" else (lambda m: not equal(m))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(stored: Any, wanted: Any) -> bool:
    """Typed equality (a string never equals a number; true is not 1); a list of strings matches any element."""
    if isinstance(stored, list):
        return any(_same(s, wanted) for s in stored)
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if isinstance(stored, str) or isinstance(wanted, str):
        return isinstance(stored, str) and isinstance(wanted, str) and stored == wanted
    return bool(stored == wanted)
