"""A fake OpenSearch (2.x/3.x REST API with the k-NN plugin): the subset the opensearch RAG store uses.

Real semantics where the adapter depends on them, real error shapes
(`{"error": {"root_cause": [...], "type", "reason"}, "status"}`) where it could go wrong:
- indices: create (settings + mappings checked: known field types, knn_vector with dimension/method,
  known settings), HEAD exists, DELETE; bad names are invalid_index_name_exception, a missing index
  index_not_found_exception (404), a second create resource_already_exists_exception;
- documents: `_doc` get/put/delete, `_mget`, `_bulk` (NDJSON index/create/delete, per-item errors),
  mapped by the index's mapping: dynamic true/false/strict, dynamic_templates (path_match, match,
  match_mapping_type), a value the field's type cannot parse is a mapper_parsing_exception;
- near-real-time search: a write is visible to `_search`/`_count`/`_delete_by_query` only after a
  refresh (`?refresh=true|wait_for` or `_refresh`); GET and `_mget` are real-time, as on OpenSearch.
  Unlike OpenSearch there is no 1 s background refresh: a missing refresh shows as missing hits;
- `_search`: match_all, match_none, match (BM25 as Lucene's: idf ln(1 + (N - n + .5)/(n + .5)), tf
  f/(f + k1(1 - b + b dl/avgdl)), k1 1.2, b .75; analyzer: lowercase + \\w+ words, no stop words),
  term, terms, range, exists, prefix, ids, bool (must/filter/should/must_not, minimum_should_match)
  and knn (exact search over the stored vectors, the `filter` applied before the top k, scores by
  the k-NN plugin's space formulas: cosinesimil (1 + cos)/2); size/from (from + size <= 10,000),
  sort + search_after on keyword/numeric fields, `_source` filtering, total hits capped at 10,000;
  an unknown query type, an unknown body key or a bad knn clause is a 400.
Non-text leaf queries score 1.0 (OpenSearch scores a term query by BM25 too); one shard per index.
A route the fake does not implement answers OpenSearch's 400 "no handler found for uri".
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.opensearch_index import BAD_INDEX, MAX_WINDOW, Index, OpenSearchError, bad, missing
from tests.fakes.server import Recorded, Recorder, serve_app


# -- the REST layer ------------------------------------------------------------------------------------
def _source(source: dict[str, Any], spec: Any, params: dict[str, str]) -> dict[str, Any] | None:
    if spec is False or params.get("_source") == "false":
        return None
    includes = spec if isinstance(spec, list) else params["_source_includes"].split(",") \
        if "_source_includes" in params else None
    excludes = params["_source_excludes"].split(",") if "_source_excludes" in params else []
    return {k: v for k, v in source.items() if (includes is None or k in includes) and k not in excludes}


def _after(values: list[Any], after: list[Any], orders: list[str]) -> bool:
    """Whether a hit with these sort values comes after `search_after` in the sort order."""
    for value, bound, order in zip(values, after, orders):
        if value != bound:
            return bool(value > bound) if order == "asc" else bool(value < bound)
    return False


class FakeOpenSearch:
    """The cluster state and its request handlers (one asyncio thread serves them in order)."""

    def __init__(self, recorder: Recorder, credentials: tuple[str, str] | None = None) -> None:
        self.recorder = recorder
        self.indices: dict[str, Index] = {}
        self.auth = "Basic " + base64.b64encode(":".join(credentials).encode()).decode() if credentials else None

    def index(self, name: str) -> Index:
        if name not in self.indices:
            raise missing(name)
        return self.indices[name]

    def targets(self, names: str, params: dict[str, str]) -> list[Index]:
        if names in ("_all", "*"):
            return list(self.indices.values())
        lenient = params.get("ignore_unavailable") == "true"
        return [self.index(n) for n in names.split(",") if not (lenient and n not in self.indices)]

    def _refresh(self, indices: list[Index], params: dict[str, str]) -> None:
        if params.get("refresh") in ("true", "", "wait_for"):
            for found in indices:
                found.refresh()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        path = [unquote(p) for p in scope["raw_path"].decode().split("?")[0].split("/") if p]
        params = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()}
        self.recorder.requests.append(Recorded(request.method, "/" + "/".join(path), dict(request.headers), None,
                                               scope["query_string"].decode()))
        if self.auth and request.headers.get("authorization") != self.auth:
            response = Response(b"Unauthorized", 401, {"www-authenticate": 'Basic realm="OpenSearch Security"'},
                                media_type="text/plain")
        else:
            try:
                status, body = self.handle(request.method, path, params, raw)
                content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY) if request.method != "HEAD" else b""
                response = Response(content, status,
                                    media_type="application/json; charset=UTF-8")
            except OpenSearchError as exc:
                response = Response(orjson.dumps(exc.body()), exc.status, media_type="application/json; charset=UTF-8")
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
                error = bad(f"failed to parse request: {exc!r}", "x_content_parse_exception")
                response = Response(orjson.dumps(error.body()), 400, media_type="application/json; charset=UTF-8")
        await response(scope, receive, send)

    def handle(self, method: str, path: list[str], params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        body = orjson.loads(raw) if raw and path[-1:] != ["_bulk"] else {}
        route = (method, tuple(p if i < 2 and p.startswith("_") else "*" for i, p in enumerate(path)))
        if route in (("GET", ()), ("HEAD", ())):
            return 200, {"name": "fake", "cluster_name": "fake", "version": {"distribution": "opensearch",
                                                                              "number": "2.19.0"}}
        if route == ("PUT", ("*",)):
            if BAD_INDEX.search(path[0]):
                raise bad(f"Invalid index name [{path[0]}], must be lowercase and must not contain \\, /, *, ?, "
                           '", <, >, |, space, comma, #, :', "invalid_index_name_exception")
            if path[0] in self.indices:
                raise bad(f"index [{path[0]}] already exists", "resource_already_exists_exception")
            self.indices[path[0]] = Index(path[0], body)
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": path[0]}
        if route == ("HEAD", ("*",)):
            return (200 if path[0] in self.indices else 404), {}
        if route == ("DELETE", ("*",)):
            for found in self.targets(path[0], params):
                del self.indices[found.name]
            return 200, {"acknowledged": True}
        if route[1][-1:] == ("_refresh",):
            for found in self.targets(path[0], params) if len(path) == 2 else self.indices.values():
                found.refresh()
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if route[1][-1:] == ("_bulk",) and method in ("POST", "PUT"):
            return 200, self.bulk(path[0] if len(path) == 2 else None, params, raw)
        if route[1][-1:] == ("_mget",) and method in ("GET", "POST"):
            return 200, self.mget(path[0] if len(path) == 2 else None, params, body)
        if route[1] == ("*", "_doc", "*"):
            return self.document(method, path[0], path[2], params, body)
        if route[1] == ("*", "_search") and method in ("GET", "POST"):
            return 200, self.search(self.targets(path[0], params), params, body)
        if route[1] == ("*", "_count") and method in ("GET", "POST"):
            found = self.targets(path[0], params)
            return 200, {"count": sum(len(i.run(body.get("query", {"match_all": {}}))) for i in found)}
        if route[1] == ("*", "_delete_by_query") and method == "POST":
            found = self.targets(path[0], params)
            deleted = 0
            for index in found:
                for doc_id in index.run(body["query"]):
                    deleted += index.delete(doc_id)
            self._refresh(found, params)
            return 200, {"took": 1, "timed_out": False, "total": deleted, "deleted": deleted, "batches": 1,
                         "version_conflicts": 0, "noops": 0, "failures": []}
        return 400, {"error": f"no handler found for uri [/{'/'.join(path)}] and method [{method}]"}

    def document(self, method: str, name: str, doc_id: str, params: dict[str, str],
                 body: dict[str, Any]) -> tuple[int, Any]:
        head = {"_index": name, "_id": doc_id}
        if method in ("PUT", "POST"):
            if name not in self.indices:  # OpenSearch creates a missing index on first write (dynamic mapping)
                self.indices[name] = Index(name, {})
            version, result = self.indices[name].put(doc_id, body)
            self._refresh([self.indices[name]], params)
            return (201 if result == "created" else 200), {**head, "_version": version, "result": result}
        index = self.index(name)
        if method == "GET":
            found = index.docs.get(doc_id)
            if found is None:
                return 404, {**head, "found": False}
            return 200, {**head, "_version": found[0], "found": True, "_source": _source(found[1], None, params)}
        if method == "DELETE":
            result = "deleted" if index.delete(doc_id) else "not_found"
            self._refresh([index], params)
            return (200 if result == "deleted" else 404), {**head, "result": result}
        return 400, {"error": f"no handler found for uri [/{name}/_doc/{doc_id}] and method [{method}]"}

    def mget(self, name: str | None, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("docs") or [{"_index": name, "_id": i} for i in body.get("ids", [])]
        if not wanted:
            raise bad("Validation Failed: 1: no documents to get;", "action_request_validation_exception")
        docs = []
        for item in wanted:
            index_name, doc_id = item.get("_index") or name, item["_id"]
            if index_name not in self.indices:
                docs.append({"_index": index_name, "_id": doc_id, "error": missing(index_name).body()["error"]})
                continue
            found = self.indices[index_name].docs.get(doc_id)
            docs.append({"_index": index_name, "_id": doc_id, "found": False} if found is None else
                        {"_index": index_name, "_id": doc_id, "_version": found[0], "found": True,
                         "_source": _source(found[1], item.get("_source"), params)})
        return {"docs": docs}

    def bulk(self, name: str | None, params: dict[str, str], raw: bytes) -> dict[str, Any]:
        lines = [line for line in raw.split(b"\n") if line.strip()]
        items, touched, i = [], set(), 0
        while i < len(lines):
            action = orjson.loads(lines[i])
            kind, meta = next(iter(action.items()))
            if kind not in ("index", "create", "delete"):
                raise bad(f"Malformed action/metadata line [{i + 1}], expected one of [create, delete, index, "
                           f"update] but found [{kind}]", "illegal_argument_exception")
            index_name, doc_id = meta.get("_index") or name, meta.get("_id")
            source = orjson.loads(lines[i + 1]) if kind != "delete" else None
            i += 1 if kind == "delete" else 2
            item: dict[str, Any] = {"_index": index_name, "_id": doc_id}
            try:
                if kind == "delete":
                    found = self.index(index_name).delete(doc_id)
                    item.update(result="deleted" if found else "not_found", status=200 if found else 404)
                else:
                    if index_name not in self.indices:
                        self.indices[index_name] = Index(index_name, {})
                    if kind == "create" and doc_id in self.indices[index_name].docs:
                        raise OpenSearchError(409, "version_conflict_engine_exception",
                                              f"[{doc_id}]: version conflict, document already exists")
                    version, result = self.indices[index_name].put(doc_id, source)
                    item.update(_version=version, result=result, status=201 if result == "created" else 200)
                touched.add(index_name)
            except OpenSearchError as exc:
                item.update(status=exc.status, error={"type": exc.kind, "reason": exc.reason, **exc.extra})
            items.append({kind: item})
        self._refresh([self.indices[n] for n in touched if n in self.indices], params)
        return {"took": 1, "errors": any("error" in next(iter(x.values())) for x in items), "items": items}

    def search(self, indices: list[Index], params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"query", "size", "from", "_source", "sort", "search_after", "track_total_hits"}
        if unknown:
            raise bad(f"Unknown key for a START_OBJECT in [{sorted(unknown)[0]}].")
        size, start = int(body.get("size", params.get("size", 10))), int(body.get("from", params.get("from", 0)))
        if start + size > MAX_WINDOW:
            raise bad(f"Result window is too large, from + size must be less than or equal to: [{MAX_WINDOW}] but "
                       f"was [{start + size}].", "illegal_argument_exception")
        matched = [(index, doc_id, score) for index in indices
                   for doc_id, score in index.run(body.get("query", {"match_all": {}})).items()]
        sort = body.get("sort")
        if sort:
            keys = [next(iter(s.items())) if isinstance(s, dict) else (s, "asc") for s in sort]
            keys = [(field, order["order"] if isinstance(order, dict) else order) for field, order in keys]
            for field, _ in keys:
                if any(index.field(field).get("type") == "text" for index in indices):
                    raise bad(f"Text fields are not optimised for operations that require per-document field data "
                               f"like aggregations and sorting, so these operations are disabled by default. "
                               f"[{field}]", "illegal_argument_exception")
            hits = [(index, doc_id, score, [min(index.live[doc_id][2].get(f) or [None]) for f, _ in keys])
                    for index, doc_id, score in matched]
            for position in reversed(range(len(keys))):  # stable sorts, last key first; missing values last
                hits.sort(key=lambda h: (h[3][position] is None, h[3][position] if h[3][position] is not None else 0),
                          reverse=keys[position][1] == "desc")
            after = body.get("search_after")
            if after is not None:
                hits = [h for h in hits if _after(h[3], list(after), [o for _, o in keys])]
        else:
            best = heapq.nsmallest(start + size, matched, key=lambda h: (-h[2], h[0].name, h[1]))  # a top-k queue
            hits = [(i, d, s, None) for i, d, s in best]
        total = len(matched)
        cap = body.get("track_total_hits", MAX_WINDOW)
        limit = total if cap is True else int(cap)
        page = hits[start:start + size]
        return {"took": 1, "timed_out": False, "_shards": {"total": len(indices), "successful": len(indices),
                                                           "skipped": 0, "failed": 0},
                "hits": {"total": {"value": min(total, limit), "relation": "eq" if total <= limit else "gte"},
                         "max_score": None if sort or not page else page[0][2],
                         "hits": [{"_index": index.name, "_id": doc_id, "_score": None if sort else score,
                                   **({"_source": s} if (s := _source(index.live[doc_id][1], body.get("_source"),
                                                                      params)) is not None else {}),
                                   **({"sort": values} if sort else {})}
                                  for index, doc_id, score, values in page]}}


@contextmanager
def serve(credentials: tuple[str, str] | None = None, **tls: Any) -> Iterator[tuple[str, FakeOpenSearch]]:
    """(base URL, the fake) of a fake OpenSearch on 127.0.0.1 (https with `ssl_certfile`/`ssl_keyfile`)."""
    fake = FakeOpenSearch(Recorder(), credentials)
    with serve_app(fake, **tls) as url:
        yield url, fake
