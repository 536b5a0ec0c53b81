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
_COMPARISONS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "IN", "nin": "NOT IN"}
COLUMNS = {"source": "c.source", "page": "c.page", "section": "c.section", "chunk_index": "c.chunk_index"}
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class Filter:
    sql: str
    params: tuple[Any, ...]


def parse_filter(raw: Any) -> Filter | None:
    """`{type: eq|ne|gt|gte|lt|lte|in|nin, key, value}` or `{type: and|or, filters: [...]}` -> SQL over chunk `c`.

    Keys are a chunk's `source`, `page`, `section`, `chunk_index` or its file's attributes. Raises ValueError.
    """
    if raw is None:
        return None
    sql, params = _filter_sql(raw, 0)
    return Filter(sql, tuple(params))


def _filter_sql(raw: Any, depth: int) -> tuple[str, list[Any]]:
    if not isinstance(raw, Mapping) or depth > 8:
        raise ValueError("a filter is an object with a `type`")
    kind = raw.get("type")
    if kind in ("and", "or"):
        filters = raw.get("filters")
        if not isinstance(filters, list) or not filters:
            raise ValueError(f"an `{kind}` filter needs a non-empty `filters` list")
        parts = [_filter_sql(f, depth + 1) for f in filters]
        return "(" + f" {kind.upper()} ".join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]
    if kind not in _COMPARISONS:
        raise ValueError(f"unknown filter type {kind!r} (one of {', '.join([*_COMPARISONS, 'and', 'or'])})")
    key, value = raw.get("key"), raw.get("value")
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError("a comparison filter needs a `key` of letters, digits, '_', '.', '-'")
    column = COLUMNS.get(key) or "json_extract(c.metadata, ?)"
    params: list[Any] = [] if key in COLUMNS else [f'$."{key}"']
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not value or not all(_scalar(v) for v in value):
            raise ValueError(f"an `{kind}` filter needs a non-empty list of strings, numbers or booleans")
        return f"{column} {_COMPARISONS[kind]} ({', '.join('?' * len(value))})", params + list(value)
    if not _scalar(value):
        raise ValueError("a comparison filter needs a string, number or boolean `value`")
    return f"{column} {_COMPARISONS[kind]} ?", params + [value]


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))
