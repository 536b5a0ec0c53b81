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
import fnmatch
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.server import Recorded, Recorder, serve_app

_WORD = re.compile(r"\w+", re.UNICODE)
_BAD_INDEX = re.compile(r'[\\/*?"<>| ,#:A-Z]|^[-_+]|^\.{1,2}$')
_TYPES = {"keyword", "text", "integer", "long", "float", "double", "boolean", "object", "knn_vector"}
_NUMERIC = {"integer", "long", "float", "double"}
_SETTINGS = {"knn", "number_of_shards", "number_of_replicas", "refresh_interval", "knn.algo_param.ef_search"}
_SPACES = {"cosinesimil", "l2", "innerproduct"}
MAX_WINDOW = 10_000
K1, B = 1.2, 0.75


class OpenSearchError(Exception):
    def __init__(self, status: int, kind: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason, self.extra = status, kind, reason, extra

    def body(self) -> dict[str, Any]:
        cause = {"type": self.kind, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


def _missing(name: str) -> OpenSearchError:
    return OpenSearchError(404, "index_not_found_exception", f"no such index [{name}]", index=name,
                           **{"resource.type": "index_or_alias", "resource.id": name})


def _bad(reason: str, kind: str = "parsing_exception") -> OpenSearchError:
    return OpenSearchError(400, kind, reason)


def analyze(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# -- mapping: a document's source -> typed field values ------------------------------------------------
def _parse_value(field: str, spec: dict[str, Any], value: Any) -> Any:
    kind = spec["type"]
    try:
        if kind == "keyword":
            if isinstance(value, (dict, list)):
                raise ValueError
            return "true" if value is True else "false" if value is False else str(value)
        if kind == "text":
            return analyze(str(value))
        if kind in ("integer", "long"):
            if isinstance(value, bool):
                raise ValueError
            return int(float(value))
        if kind in ("float", "double"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "boolean":
            if value in (True, "true"):
                return True
            if value in (False, "false"):
                return False
            raise ValueError
        if kind == "knn_vector":
            vector = np.asarray(value, dtype=np.float32)
            if vector.shape != (spec["dimension"],):
                raise _bad(f"Vector dimension mismatch. Expected: {spec['dimension']}, Given: {vector.size}",
                           "mapper_parsing_exception")
            return vector
    except (ValueError, TypeError):
        pass
    raise _bad(f"failed to parse field [{field}] of type [{kind}]", "mapper_parsing_exception")


def _dynamic_mapping(path: str, value: Any, templates: list[dict[str, Any]]) -> dict[str, Any]:
    detected = ("boolean" if isinstance(value, bool) else "long" if isinstance(value, int) else
                "double" if isinstance(value, float) else "object" if isinstance(value, dict) else "string")
    for template in templates:
        rule = next(iter(template.values()))
        if rule.get("match_mapping_type", "*") not in ("*", detected):
            continue
        if "path_match" in rule and not fnmatch.fnmatchcase(path, rule["path_match"]):
            continue
        if "match" in rule and not fnmatch.fnmatchcase(path.rsplit(".", 1)[-1], rule["match"]):
            continue
        return dict(rule["mapping"])
    if detected == "string":
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return {"type": {"double": "float"}.get(detected, detected), **({"properties": {}} if detected == "object" else {})}


def _check_mapping(properties: dict[str, Any], knn: bool, prefix: str = "") -> None:
    for name, spec in properties.items():
        kind = spec.get("type", "object")
        if kind not in _TYPES:
            raise _bad(f"No handler for type [{kind}] declared on field [{prefix}{name}]", "mapper_parsing_exception")
        if kind == "object":
            _check_mapping(spec.get("properties", {}), knn, f"{prefix}{name}.")
        if kind == "knn_vector":
            if not isinstance(spec.get("dimension"), int) or spec["dimension"] < 1:
                raise _bad(f"Dimension value missing for vector: {prefix}{name}", "mapper_parsing_exception")
            method = spec.get("method", {})
            engine, space = method.get("engine", "faiss"), method.get("space_type", spec.get("space_type", "l2"))
            if method.get("name", "hnsw") != "hnsw" or engine not in ("lucene", "faiss", "nmslib") or space not in _SPACES:
                raise _bad(f"Invalid method for vector field [{prefix}{name}]: {method}", "mapper_parsing_exception")


def _flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_settings(value, full + "."))
        else:
            flat[full.removeprefix("index.")] = value
    return flat


class Index:
    def __init__(self, name: str, body: dict[str, Any]) -> None:
        unknown = set(body) - {"settings", "mappings", "aliases"}
        if unknown:
            raise _bad(f"unknown key [{sorted(unknown)[0]}] for create index")
        self.name = name
        self.settings = _flat_settings(body.get("settings") or {})
        for key in self.settings:
            if key not in _SETTINGS:
                raise _bad(f"unknown setting [index.{key}] please check that any required plugins are installed",
                           "illegal_argument_exception")
        self.mapping = dict(body.get("mappings") or {})
        self.mapping.setdefault("properties", {})
        _check_mapping(self.mapping["properties"], self.settings.get("knn") in (True, "true"))
        self.docs: dict[str, tuple[int, dict[str, Any], dict[str, list[Any]]]] = {}  # id -> (version, source, fields)
        self.pending: set[str] = set()  # written since the last refresh
        self.live: dict[str, tuple[int, dict[str, Any], dict[str, list[Any]]]] = {}  # what search sees
        self.postings: dict[str, dict[str, dict[str, int]]] = {}  # text field -> term -> id -> tf
        self.lengths: dict[str, dict[str, int]] = {}  # text field -> id -> words
        self._vectors: tuple[int, str, list[str], np.ndarray] | None = None
        self.refreshes = 0

    # -- writing ----------------------------------------------------------------------
    def parse(self, source: dict[str, Any]) -> dict[str, list[Any]]:
        fields: dict[str, list[Any]] = {}
        self._parse_object(self.mapping, source, "", fields)
        return fields

    def _parse_object(self, spec: dict[str, Any], obj: dict[str, Any], prefix: str, out: dict[str, list[Any]]) -> None:
        properties = spec.setdefault("properties", {})
        dynamic = str(spec.get("dynamic", self.mapping.get("dynamic", "true"))).lower()
        for key, value in obj.items():
            path = prefix + key
            if value is None:
                continue
            field = properties.get(key)
            if field is None:
                if dynamic == "false":
                    continue
                if dynamic == "strict":
                    raise _bad(f"mapping set to strict, dynamic introduction of [{key}] within [{prefix or '_doc'}] "
                               "is not allowed", "strict_dynamic_mapping_exception")
                sample = value[0] if isinstance(value, list) and value else value
                field = properties[key] = _dynamic_mapping(path, sample, self.mapping.get("dynamic_templates", []))
            kind = field.get("type", "object")
            if kind == "object":
                if field.get("enabled", True) is False:
                    continue
                if not isinstance(value, dict):
                    raise _bad(f"object mapping for [{path}] tried to parse field [{key}] as object, but found a "
                               "concrete value", "mapper_parsing_exception")
                self._parse_object(field, value, path + ".", out)
                continue
            values = [value] if kind == "knn_vector" or not isinstance(value, list) else value
            for name, spec_ in ((path, field), *((f"{path}.{sub}", s) for sub, s in field.get("fields", {}).items())):
                parsed = [_parse_value(path, spec_, v) for v in values
                          if not (spec_.get("ignore_above") and len(str(v)) > spec_["ignore_above"])]
                words = [w for p in parsed for w in p] if spec_["type"] == "text" else parsed  # text: its words
                out.setdefault(name, []).extend(words)

    def put(self, doc_id: str, source: dict[str, Any]) -> tuple[int, str]:
        fields = self.parse(source)
        for name, values in fields.items():  # a vector's source kept as float32, not 24-byte Python floats
            if name in source and self.field(name).get("type") == "knn_vector":
                source = {**source, name: values[0]}
        version = self.docs[doc_id][0] + 1 if doc_id in self.docs else 1
        self.docs[doc_id] = (version, source, fields)
        self.pending.add(doc_id)
        return version, "created" if version == 1 else "updated"

    def delete(self, doc_id: str) -> bool:
        found = self.docs.pop(doc_id, None)
        self.pending.add(doc_id)
        return found is not None

    def refresh(self) -> None:
        for doc_id in self.pending:
            old = self.live.pop(doc_id, None)
            if old is not None:
                for field, words in self._texts(old[2]):
                    self.lengths[field].pop(doc_id)
                    for word in set(words):
                        self.postings[field][word].pop(doc_id)
            if doc_id in self.docs:
                self.live[doc_id] = self.docs[doc_id]
                for field, words in self._texts(self.docs[doc_id][2]):
                    self.lengths.setdefault(field, {})[doc_id] = len(words)
                    terms = self.postings.setdefault(field, {})
                    for word in words:
                        terms.setdefault(word, {}).setdefault(doc_id, 0)
                        terms[word][doc_id] += 1
        self.pending.clear()
        self.refreshes += 1

    def _texts(self, fields: dict[str, list[Any]]) -> Iterator[tuple[str, list[str]]]:
        for field, values in fields.items():
            if self.field(field).get("type") == "text":
                yield field, values

    def field(self, path: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.mapping
        parts = path.split(".")
        for i, part in enumerate(parts):
            found = spec.get("properties", {}).get(part)
            if found is None:
                parent = spec.get("fields", {}).get(part) if i == len(parts) - 1 else None
                return parent or {}
            spec = found
        return spec

    # -- searching: each query is a dict id -> score over the live documents -------------
    def run(self, query: dict[str, Any]) -> dict[str, float]:
        if not isinstance(query, dict) or len(query) != 1:
            raise _bad("query malformed, must start with start_object" if not isinstance(query, dict)
                       else "[_na] query malformed, no start_object after query name")
        kind, args = next(iter(query.items()))
        handler = getattr(self, f"_q_{kind}", None)
        if handler is None:
            raise _bad(f"unknown query [{kind}]", "parsing_exception")
        return handler(args)  # type: ignore[no-any-return]

    def _where(self, test: Any) -> dict[str, float]:
        return {doc_id: 1.0 for doc_id, entry in self.live.items() if test(entry[2])}

    def _q_match_all(self, args: dict[str, Any]) -> dict[str, float]:
        return dict.fromkeys(self.live, 1.0)

    def _q_match_none(self, args: dict[str, Any]) -> dict[str, float]:
        return {}

    def _field_arg(self, kind: str, args: Any) -> tuple[str, Any]:
        if not isinstance(args, dict) or len(args) != 1:
            raise _bad(f"[{kind}] query doesn't support multiple fields")
        return next(iter(args.items()))

    def _term_value(self, field: str, value: Any) -> Any:
        spec = self.field(field)
        if not spec:
            return value
        if spec["type"] == "text":
            return str(value)
        try:
            return _parse_value(field, spec, value)
        except OpenSearchError:
            raise _bad(f"failed to create query: cannot parse [{value}] as [{spec['type']}]",
                       "query_shard_exception") from None

    def _q_term(self, args: dict[str, Any]) -> dict[str, float]:
        field, value = self._field_arg("term", args)
        value = value["value"] if isinstance(value, dict) else value
        wanted = self._term_value(field, value)
        return self._where(lambda f: wanted in f.get(field, ()))

    def _q_terms(self, args: dict[str, Any]) -> dict[str, float]:
        field, values = self._field_arg("terms", args)
        if not isinstance(values, list):
            raise _bad("[terms] query does not support [{field}]".format(field=field))
        wanted = {self._term_value(field, v) for v in values}
        return self._where(lambda f: any(v in wanted for v in f.get(field, ())))

    def _q_range(self, args: dict[str, Any]) -> dict[str, float]:
        field, bounds = self._field_arg("range", args)
        unknown = set(bounds) - {"gt", "gte", "lt", "lte"}
        if unknown:
            raise _bad(f"[range] query does not support [{sorted(unknown)[0]}]")
        if self.field(field).get("type") == "text":
            return {}
        numeric = self.field(field).get("type") in _NUMERIC  # bounds keep their fraction: page < 1.5 holds 1
        tests = {op: float(v) if numeric and not isinstance(v, (bool, str)) else self._term_value(field, v)
                 for op, v in bounds.items()}
        compare = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
                   "lte": lambda a, b: a <= b}
        return self._where(lambda f: any(all(compare[op](v, bound) for op, bound in tests.items())
                                         for v in f.get(field, ())))

    def _q_exists(self, args: dict[str, Any]) -> dict[str, float]:
        field = args.get("field")
        if not isinstance(field, str):
            raise _bad("[exists] must be provided with a [field]")
        return self._where(lambda f: any(k == field or k.startswith(field + ".") for k in f))

    def _q_prefix(self, args: dict[str, Any]) -> dict[str, float]:
        field, value = self._field_arg("prefix", args)
        value = str(value["value"] if isinstance(value, dict) else value)
        return self._where(lambda f: any(isinstance(v, str) and v.startswith(value) for v in f.get(field, ())))

    def _q_ids(self, args: dict[str, Any]) -> dict[str, float]:
        wanted = set(args.get("values", []))
        return {doc_id: 1.0 for doc_id in self.live if doc_id in wanted}

    def _q_bool(self, args: dict[str, Any]) -> dict[str, float]:
        unknown = set(args) - {"must", "filter", "should", "must_not", "minimum_should_match", "boost"}
        if unknown:
            raise _bad(f"[bool] query does not support [{sorted(unknown)[0]}]")
        clauses = {k: [self.run(q) for q in (args[k] if isinstance(args[k], list) else [args[k]])]
                   for k in ("must", "filter", "should", "must_not") if k in args}
        required = clauses.get("must", []) + clauses.get("filter", [])
        ids = set(self.live) if not required else set.intersection(*(set(r) for r in required))
        should = clauses.get("should", [])
        least = int(args.get("minimum_should_match", 0 if required else 1 if should else 0))
        scores: dict[str, float] = {}
        for doc_id in ids:
            if any(doc_id in r for r in clauses.get("must_not", [])):
                continue
            matched = [r[doc_id] for r in should if doc_id in r]
            if len(matched) < least:
                continue
            scores[doc_id] = sum(r[doc_id] for r in clauses.get("must", [])) + sum(matched)
        return scores

    def _q_match(self, args: dict[str, Any]) -> dict[str, float]:
        field, spec = self._field_arg("match", args)
        spec = spec if isinstance(spec, dict) else {"query": spec}
        unknown = set(spec) - {"query", "operator", "boost"}
        if unknown:
            raise _bad(f"[match] query does not support [{sorted(unknown)[0]}]")
        words = analyze(str(spec.get("query", "")))
        operator = str(spec.get("operator", "or")).lower()
        postings, lengths = self.postings.get(field, {}), self.lengths.get(field, {})
        if self.field(field).get("type") != "text" or not words or not lengths:
            return {}
        n_docs, average = len(lengths), sum(lengths.values()) / len(lengths)
        scores: dict[str, float] = {}
        hits: dict[str, int] = {}
        for word in words:
            docs = postings.get(word, {})
            idf = math.log(1 + (n_docs - len(docs) + 0.5) / (len(docs) + 0.5))
            for doc_id, tf in docs.items():
                norm = K1 * (1 - B + B * lengths[doc_id] / average)
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf / (tf + norm)
                hits[doc_id] = hits.get(doc_id, 0) + 1
        if operator == "and":
            return {d: s for d, s in scores.items() if hits[d] == len(words)}
        return scores

    def _q_knn(self, args: dict[str, Any]) -> dict[str, float]:
        field, spec = self._field_arg("knn", args)
        mapping = self.field(field)
        if mapping.get("type") != "knn_vector":
            raise _bad(f"Field '{field}' is not knn_vector type.", "illegal_argument_exception")
        unknown = set(spec) - {"vector", "k", "filter", "boost"}
        if unknown or not isinstance(spec.get("k"), int) or not isinstance(spec.get("vector"), list):
            raise _bad(f"[knn] unknown token or missing [vector]/[k]: {sorted(unknown)}")
        if not 0 < spec["k"] <= MAX_WINDOW:
            raise _bad(f"[knn] requires 0 < k <= {MAX_WINDOW}", "illegal_argument_exception")
        method = mapping.get("method", {})
        space = method.get("space_type", mapping.get("space_type", "l2"))
        if "filter" in spec and method.get("engine") == "nmslib":
            raise _bad("Engine [NMSLIB] does not support filters", "illegal_argument_exception")
        query = np.asarray(spec["vector"], dtype=np.float32)
        if query.shape != (mapping["dimension"],):
            raise _bad(f"Query vector has invalid dimension: {query.size}. Dimension should be: "
                       f"{mapping['dimension']}", "illegal_argument_exception")
        if space == "cosinesimil" and not np.any(query):
            raise _bad("zero vector is not supported when space type is [cosinesimil]", "illegal_argument_exception")
        ids, matrix = self._matrix(field, mapping["dimension"])
        if "filter" in spec:
            allowed = self.run(spec["filter"])
            rows = [i for i, doc_id in enumerate(ids) if doc_id in allowed]
            ids, matrix = [ids[i] for i in rows], matrix[rows]
        if not ids:
            return {}
        dot = np.einsum("ij,j->i", matrix, query)  # not BLAS: no thread pool spinning in a test process
        if space == "cosinesimil":
            norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix)) * np.linalg.norm(query)
            scores = (1 + dot / np.maximum(norms, 1e-30)) / 2
        elif space == "l2":
            scores = 1 / (1 + ((matrix - query) ** 2).sum(axis=1))
        else:
            scores = np.where(dot > 0, dot + 1, 1 / (1 - dot))
        top = np.argsort(-scores, kind="stable")[:spec["k"]]
        return {ids[i]: float(scores[i]) for i in top}

    def _matrix(self, field: str, dims: int) -> tuple[list[str], np.ndarray]:
        if self._vectors is None or self._vectors[:2] != (self.refreshes, field):
            ids = [d for d, entry in self.live.items() if field in entry[2]]
            matrix = np.stack([self.live[d][2][field][0] for d in ids]) if ids else np.zeros((0, dims), np.float32)
            self._vectors = (self.refreshes, field, ids, matrix)
        return self._vectors[2], self._vectors[3]


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
            raise _missing(name)
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
                error = _bad(f"failed to parse request: {exc!r}", "x_content_parse_exception")
                response = Response(orjson.dumps(error.body()), 400, media_type="application/json; charset=UTF-8")
        await response(scope, receive, send)

    def handle(self, method: str, path: list[str], params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        body = orjson.loads(raw) if raw and path[-1:] != ["_bulk"] else {}
        route = (method, tuple(p if i < 2 and p.startswith("_") else "*" for i, p in enumerate(path)))
        if route in (("GET", ()), ("HEAD", ())):
            return 200, {"name": "fake", "cluster_name": "fake", "version": {"distribution": "opensearch",
                                                                              "number": "2.19.0"}}
        if route == ("PUT", ("*",)):
            if _BAD_INDEX.search(path[0]):
                raise _bad(f"Invalid index name [{path[0]}], must be lowercase and must not contain \\, /, *, ?, "
                           '", <, >, |, space, comma, #, :', "invalid_index_name_exception")
            if path[0] in self.indices:
                raise _bad(f"index [{path[0]}] already exists", "resource_already_exists_exception")
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
            raise _bad("Validation Failed: 1: no documents to get;", "action_request_validation_exception")
        docs = []
        for item in wanted:
            index_name, doc_id = item.get("_index") or name, item["_id"]
            if index_name not in self.indices:
                docs.append({"_index": index_name, "_id": doc_id, "error": _missing(index_name).body()["error"]})
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
                raise _bad(f"Malformed action/metadata line [{i + 1}], expected one of [create, delete, index, "
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
            raise _bad(f"Unknown key for a START_OBJECT in [{sorted(unknown)[0]}].")
        size, start = int(body.get("size", params.get("size", 10))), int(body.get("from", params.get("from", 0)))
        if start + size > MAX_WINDOW:
            raise _bad(f"Result window is too large, from + size must be less than or equal to: [{MAX_WINDOW}] but "
                       f"was [{start + size}].", "illegal_argument_exception")
        matched = [(index, doc_id, score) for index in indices
                   for doc_id, score in index.run(body.get("query", {"match_all": {}})).items()]
        sort = body.get("sort")
        if sort:
            keys = [next(iter(s.items())) if isinstance(s, dict) else (s, "asc") for s in sort]
            keys = [(field, order["order"] if isinstance(order, dict) else order) for field, order in keys]
            for field, _ in keys:
                if any(index.field(field).get("type") == "text" for index in indices):
                    raise _bad(f"Text fields are not optimised for operations that require per-document field data "
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
            hits = [(i, d, s, None) for i, d, s in sorted(matched, key=lambda h: (-h[2], h[0].name, h[1]))]
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
def serve(credentials: tuple[str, str] | None = None) -> Iterator[tuple[str, FakeOpenSearch]]:
    """(base URL, the fake) of a fake OpenSearch on 127.0.0.1."""
    fake = FakeOpenSearch(Recorder(), credentials)
    with serve_app(fake) as url:
        yield url, fake
