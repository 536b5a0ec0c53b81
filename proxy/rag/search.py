"""Search helpers shared by the stores: reciprocal rank fusion, keyword queries, metadata filters."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RRF_K = 60  # the constant of Cormack et al. (2009): damps the weight of the very first ranks
MODES = ("hybrid", "dense", "keyword")

# Words too common to say anything about relevance; they also make BM25 score most of the corpus.
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my no not of on or our "
    "so that the their them then there these they this to was we were what when where which who why will with you "
    "your".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


def rrf(rankings: Sequence[Sequence[tuple[str, float]]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse best-first rankings: score = sum of 1/(k + rank), normalised so 1.0 means first in every list."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    best = len(rankings) / (k + 1)
    return sorted(((item, score / best) for item, score in scores.items()), key=lambda pair: -pair[1])


def keyword_terms(query: str, limit: int = 24) -> list[str]:
    words = [w for w in _WORD.findall(query.lower()) if w not in _STOPWORDS]
    return list(dict.fromkeys(words))[:limit]


# -- metadata filters (the OpenAI vector store `filters` shape) ------------------------
# A parsed filter is a tree of `Compare` and `Group`; each store compiles it to its own query language
# (`sql` below for SQLite, `matches` evaluates it in Python against a chunk's fields).
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
CHUNK_FIELDS = ("source", "page", "section", "chunk_index")  # every other key is a document attribute
_SQL_OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "IN", "nin": "NOT IN"}
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Compare:
    op: str  # one of COMPARISONS
    key: str
    value: Any  # a scalar, or a non-empty tuple of scalars for in / nin


@dataclass(frozen=True)
class Group:
    op: str  # "and" | "or"
    filters: tuple[Filter, ...]


Filter = Compare | Group


def parse_filter(raw: Any, depth: int = 0) -> Filter | None:
    """`{type: eq|ne|gt|gte|lt|lte|in|nin, key, value}` or `{type: and|or, filters: [...]}`. Raises ValueError.

    Keys are a chunk's `source`, `page`, `section`, `chunk_index` or its document's attributes.
    """
    if raw is None and depth == 0:
        return None
    if not isinstance(raw, Mapping) or depth > 8:
        raise ValueError("a filter is an object with a `type`")
    kind = raw.get("type")
    if kind in ("and", "or"):
        filters = raw.get("filters")
        if not isinstance(filters, list) or not filters:
            raise ValueError(f"an `{kind}` filter needs a non-empty `filters` list")
        return Group(kind, tuple(parse_filter(f, depth + 1) for f in filters))  # type: ignore[misc]
    if kind not in COMPARISONS:
        raise ValueError(f"unknown filter type {kind!r} (one of {', '.join([*COMPARISONS, 'and', 'or'])})")
    key, value = raw.get("key"), raw.get("value")
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError("a comparison filter needs a `key` of letters, digits, '_', '.', '-'")
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not value or not all(_scalar(v) for v in value):
            raise ValueError(f"an `{kind}` filter needs a non-empty list of strings, numbers or booleans")
        return Compare(kind, key, tuple(value))
    if not _scalar(value):
        raise ValueError("a comparison filter needs a string, number or boolean `value`")
    return Compare(kind, key, value)


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def sql(where: Filter, columns: Mapping[str, str], attribute: str) -> tuple[str, list[Any]]:
    """SQL for `where`: chunk fields through `columns`, attributes through `attribute` (a template with one `?`
    for the key's JSON path, e.g. "json_extract(c.metadata, ?)"), values as parameters."""
    if isinstance(where, Group):
        parts = [sql(f, columns, attribute) for f in where.filters]
        return "(" + f" {where.op.upper()} ".join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]
    column = columns.get(where.key) or attribute
    params: list[Any] = [] if where.key in columns else [f'$."{where.key}"']
    if where.op in ("in", "nin"):
        marks = ", ".join("?" * len(where.value))
        return f"{column} {_SQL_OPERATORS[where.op]} ({marks})", params + list(where.value)
    return f"{column} {_SQL_OPERATORS[where.op]} ?", params + [where.value]


def matches(where: Filter, fields: Mapping[str, Any]) -> bool:
    """Whether a chunk with these fields (its chunk fields and attributes, one mapping) passes `where`.

    A missing key or a value of another type never matches (as in SQL, where NULL compares false);
    `ne` and `nin` hold for a missing key only when the store's language says so: here they do not.
    """
    if isinstance(where, Group):
        test = all if where.op == "and" else any
        return test(matches(f, fields) for f in where.filters)
    value = fields.get(where.key)
    if value is None:
        return False
    try:
        if where.op == "eq":
            return bool(value == where.value)
        if where.op == "ne":
            return bool(value != where.value)
        if where.op == "in":
            return value in where.value
        if where.op == "nin":
            return value not in where.value
        if isinstance(value, str) != isinstance(where.value, str):
            return False
        return bool({"gt": value > where.value, "gte": value >= where.value,
                     "lt": value < where.value, "lte": value <= where.value}[where.op])
    except TypeError:
        return False


# -- sparse keyword vectors (stores without a full-text index of their own) ----------------
BM25_K1 = 1.2
BM25_B = 0.75
AVERAGE_WORDS = 150.0  # a typical chunk's length in words: the length normalisation's reference


def term_index(term: str) -> int:
    """A stable 31-bit index for a term (the same in every process, unlike `hash`)."""
    import zlib

    return zlib.crc32(term.encode()) & 0x7FFFFFFF


def document_terms(text: str) -> dict[int, float]:
    """Sparse BM25 term weights of a chunk: saturated term frequency with length normalisation.

    The inverse document frequency is the store's part (Qdrant's `idf` modifier) or is left out.
    """
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
    counts: dict[int, int] = {}
    for word in words:
        index = term_index(word)
        counts[index] = counts.get(index, 0) + 1
    norm = BM25_K1 * (1 - BM25_B + BM25_B * len(words) / AVERAGE_WORDS)
    return {index: tf * (BM25_K1 + 1) / (tf + norm) for index, tf in counts.items()}


def query_terms(query: str) -> dict[int, float]:
    """Sparse weights of a query: 1.0 per distinct word (stop words dropped)."""
    return {term_index(word): 1.0 for word in keyword_terms(query)}
