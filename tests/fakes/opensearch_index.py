"""The fake OpenSearch's index: mappings (tests/fakes/opensearch.py serves it over REST).

A document's source is mapped to typed field values on write (as OpenSearch's mapping does, errors
included); a refresh makes written documents searchable; each query is a dict id -> score over the
searchable documents, with OpenSearch's semantics (see tests/fakes/opensearch.py for the list).
"""

from __future__ import annotations

import fnmatch
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
BAD_INDEX = re.compile(r'[\\/*?"<>| ,#:A-Z]|^[-_+]|^\.{1,2}$')
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


def missing(name: str) -> OpenSearchError:
    return OpenSearchError(404, "index_not_found_exception", f"no such index [{name}]", index=name,
                           **{"resource.type": "index_or_alias", "resource.id": name})


def bad(reason: str, kind: str = "parsing_exception") -> OpenSearchError:
    return OpenSearchError(400, kind, reason)


def analyze(text: str) -> list[str]:
    return [sys.intern(word) for word in _WORD.findall(text.lower())]  # one object per distinct word


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
                raise bad(f"Vector dimension mismatch. Expected: {spec['dimension']}, Given: {vector.size}",
                           "mapper_parsing_exception")
            return vector
    except (ValueError, TypeError):
        pass
    raise bad(f"failed to parse field [{field}] of type [{kind}]", "mapper_parsing_exception")


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
            raise bad(f"No handler for type [{kind}] declared on field [{prefix}{name}]", "mapper_parsing_exception")
        if kind == "object":
            _check_mapping(spec.get("properties", {}), knn, f"{prefix}{name}.")
        if kind == "knn_vector":
            if not isinstance(spec.get("dimension"), int) or spec["dimension"] < 1:
                raise bad(f"Dimension value missing for vector: {prefix}{name}", "mapper_parsing_exception")
            method = spec.get("method", {})
            engine, space = method.get("engine", "faiss"), method.get("space_type", spec.get("space_type", "l2"))
            if method.get("name", "hnsw") != "hnsw" or engine not in ("lucene", "faiss", "nmslib") or space not in _SPACES:
                raise bad(f"Invalid method for vector field [{prefix}{name}]: {method}", "mapper_parsing_exception")


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
            raise bad(f"unknown key [{sorted(unknown)[0]}] for create index")
        self.name = name
        self.settings = _flat_settings(body.get("settings") or {})
        for key in self.settings:
            if key not in _SETTINGS:
                raise bad(f"unknown setting [index.{key}] please check that any required plugins are installed",
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
                    raise bad(f"mapping set to strict, dynamic introduction of [{key}] within [{prefix or '_doc'}] "
                               "is not allowed", "strict_dynamic_mapping_exception")
                sample = value[0] if isinstance(value, list) and value else value
                field = properties[key] = _dynamic_mapping(path, sample, self.mapping.get("dynamic_templates", []))
            kind = field.get("type", "object")
            if kind == "object":
                if field.get("enabled", True) is False:
                    continue
                if not isinstance(value, dict):
                    raise bad(f"object mapping for [{path}] tried to parse field [{key}] as object, but found a "
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
                    for word, count in Counter(words).items():
                        terms.setdefault(word, {})[doc_id] = count
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
            raise bad("query malformed, must start with start_object" if not isinstance(query, dict)
                       else "[_na] query malformed, no start_object after query name")
        kind, args = next(iter(query.items()))
        handler = getattr(self, f"_q_{kind}", None)
        if handler is None:
            raise bad(f"unknown query [{kind}]", "parsing_exception")
        return handler(args)  # type: ignore[no-any-return]

    def _where(self, test: Any) -> dict[str, float]:
        return {doc_id: 1.0 for doc_id, entry in self.live.items() if test(entry[2])}

    def _q_match_all(self, args: dict[str, Any]) -> dict[str, float]:
        return dict.fromkeys(self.live, 1.0)

    def _q_match_none(self, args: dict[str, Any]) -> dict[str, float]:
        return {}

    def _field_arg(self, kind: str, args: Any) -> tuple[str, Any]:
        if not isinstance(args, dict) or len(args) != 1:
            raise bad(f"[{kind}] query doesn't support multiple fields")
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
            raise bad(f"failed to create query: cannot parse [{value}] as [{spec['type']}]",
                       "query_shard_exception") from None

    def _q_term(self, args: dict[str, Any]) -> dict[str, float]:
        field, value = self._field_arg("term", args)
        value = value["value"] if isinstance(value, dict) else value
        wanted = self._term_value(field, value)
        return self._where(lambda f: wanted in f.get(field, ()))

    def _q_terms(self, args: dict[str, Any]) -> dict[str, float]:
        field, values = self._field_arg("terms", args)
        if not isinstance(values, list):
            raise bad("[terms] query does not support [{field}]".format(field=field))
        wanted = {self._term_value(field, v) for v in values}
        return self._where(lambda f: any(v in wanted for v in f.get(field, ())))

    def _q_range(self, args: dict[str, Any]) -> dict[str, float]:
        field, bounds = self._field_arg("range", args)
        unknown = set(bounds) - {"gt", "gte", "lt", "lte"}
        if unknown:
            raise bad(f"[range] query does not support [{sorted(unknown)[0]}]")
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
            raise bad("[exists] must be provided with a [field]")
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
            raise bad(f"[bool] query does not support [{sorted(unknown)[0]}]")
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
            raise bad(f"[match] query does not support [{sorted(unknown)[0]}]")
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
            raise bad(f"Field '{field}' is not knn_vector type.", "illegal_argument_exception")
        unknown = set(spec) - {"vector", "k", "filter", "boost"}
        if unknown or not isinstance(spec.get("k"), int) or not isinstance(spec.get("vector"), list):
            raise bad(f"[knn] unknown token or missing [vector]/[k]: {sorted(unknown)}")
        if not 0 < spec["k"] <= MAX_WINDOW:
            raise bad(f"[knn] requires 0 < k <= {MAX_WINDOW}", "illegal_argument_exception")
        method = mapping.get("method", {})
        space = method.get("space_type", mapping.get("space_type", "l2"))
        if "filter" in spec and method.get("engine") == "nmslib":
            raise bad("Engine [NMSLIB] does not support filters", "illegal_argument_exception")
        query = np.asarray(spec["vector"], dtype=np.float32)
        if query.shape != (mapping["dimension"],):
            raise bad(f"Query vector has invalid dimension: {query.size}. Dimension should be: "
                       f"{mapping['dimension']}", "illegal_argument_exception")
        if space == "cosinesimil" and not np.any(query):
            raise bad("zero vector is not supported when space type is [cosinesimil]", "illegal_argument_exception")
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
