"""Metadata filters (`search.parse_filter` trees) compiled to a PostgreSQL condition over a chunk table.

The chunk fields are typed columns (`source`, `section` text; `page`, `chunk_index` integer), the
document attributes one `jsonb` column. The semantics are `search.matches`: values compare only
with values of their own type (numbers as numbers, strings as strings in code point order, booleans
as booleans), and a missing key or a JSON null never matches, not even `ne` / `nin`. jsonb's own
ordering would compare across types (every number sorts below every string), hence the type tests.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from proxy.rag.search import Compare, Filter

TEXT_COLUMNS = ("source", "section")
INTEGER_COLUMNS = ("page", "chunk_index")
_OPERATORS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_FALSE = sql.SQL("false")


def to_postgres_where(where: Filter) -> sql.Composable:
    """A boolean SQL expression for `where` (values as literals composed by psycopg, never pasted)."""
    if isinstance(where, Compare):
        return _compare(where)
    parts = [to_postgres_where(f) for f in where.filters]
    return sql.SQL("(") + sql.SQL(f" {where.op.upper()} ").join(parts) + sql.SQL(")")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def _compare(where: Compare) -> sql.Composable:
    values = list(where.value) if where.op in ("in", "nin") else [where.value]
    if where.key in TEXT_COLUMNS or where.key in INTEGER_COLUMNS:
        return _column(where, values)
    return _attribute(where, values)


def _column(where: Compare, values: list[Any]) -> sql.Composable:
    column = sql.Identifier(where.key)
    kind = "string" if where.key in TEXT_COLUMNS else "number"
    typed = [_literal(v) for v in values if _kind(v) == kind]
    present = sql.SQL("{} IS NOT NULL").format(column)
    if where.op in ("in", "nin"):
        if not typed:
            return _FALSE if where.op == "in" else present
        test = sql.SQL("{} IN ({})").format(column, sql.SQL(", ").join(typed))
        return test if where.op == "in" else sql.SQL("({} AND NOT {})").format(present, test)
    if not typed:  # a value of another type: equal to nothing, different from every present value
        return present if where.op == "ne" else _FALSE
    return sql.SQL("{}{} {} {}").format(column, _collation(where.op, kind), sql.SQL(_OPERATORS[where.op]), typed[0])


def _attribute(where: Compare, values: list[Any]) -> sql.Composable:
    node = sql.SQL("(attributes -> {})").format(sql.Literal(where.key))
    if where.op in ("eq", "ne", "in", "nin"):
        # jsonb equality is typed already: '1' = '1.0' (numbers by value), '"1"' <> '1'.
        listed = sql.SQL(", ").join(sql.Literal(json.dumps(v)) + sql.SQL("::jsonb") for v in values)
        test = sql.SQL("{} IN ({})").format(node, listed)
        if where.op in ("eq", "in"):
            return test
        present = sql.SQL("coalesce(jsonb_typeof({}) <> 'null', false)").format(node)
        return sql.SQL("({} AND NOT {})").format(present, test)
    kind = _kind(where.value)
    extract = {"number": sql.SQL("({})::numeric").format(node),
               "boolean": sql.SQL("({})::boolean").format(node),
               "string": sql.SQL("(attributes ->> {})").format(sql.Literal(where.key))}[kind]
    # CASE keeps the cast from running on a value of another type (no error, no match).
    return sql.SQL("(CASE WHEN jsonb_typeof({}) = {} THEN {}{} {} {} ELSE false END)").format(
        node, sql.Literal(kind), extract, _collation(where.op, kind), sql.SQL(_OPERATORS[where.op]),
        _literal(where.value, jsonb=True))


def _literal(value: Any, jsonb: bool = False) -> sql.Composable:
    """A typed literal: strings as text, integers as bigint (a plain column's index still applies),
    other numbers as numeric, booleans as boolean."""
    kind = _kind(value)
    if kind == "string":
        return sql.Literal(value) + sql.SQL("::text")
    if kind == "boolean":
        return sql.Literal(value) + sql.SQL("::boolean")
    if isinstance(value, int) and not jsonb:
        return sql.Literal(value) + sql.SQL("::bigint")
    return sql.Literal(repr(float(value)) if isinstance(value, float) else str(value)) + sql.SQL("::numeric")


def _collation(op: str, kind: str) -> sql.Composable:
    """Strings order by code point (as in Python), whatever the database's collation; equality needs none."""
    return sql.SQL(' COLLATE "C"') if kind == "string" and op in ("gt", "gte", "lt", "lte") else sql.SQL("")
