"""The state store: one small async interface over SQLite (default) or PostgreSQL.

Both backends run the same numbered migrations (`MIGRATIONS`) and the same
SQL, written once with `?` placeholders (the PostgreSQL backend renumbers them).
Lists (models, MCP servers, collections) are stored as JSON text; times are
Unix seconds (float).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import orjson

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS keys (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
            models TEXT, mcp_servers TEXT, collections TEXT, rpm BIGINT, tpm BIGINT,
            budget_usd DOUBLE PRECISION, budget_period TEXT, expires_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)""",
        """CREATE TABLE IF NOT EXISTS usage (
            request_id TEXT NOT NULL, key_id TEXT, model TEXT, provider TEXT,
            prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL, status INTEGER NOT NULL, cached INTEGER NOT NULL,
            route TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS usage_key_time ON usage (key_id, created_at)",
        "CREATE INDEX IF NOT EXISTS usage_time ON usage (created_at)",
    ),
)

KEY_COLUMNS = ("id", "name", "key_hash", "prefix", "models", "mcp_servers", "collections", "rpm", "tpm",
               "budget_usd", "budget_period", "expires_at", "created_at", "revoked_at")
USAGE_COLUMNS = ("request_id", "key_id", "model", "provider", "prompt_tokens", "completion_tokens", "cost_usd",
                 "latency_ms", "status", "cached", "route", "created_at")
_LISTS = ("models", "mcp_servers", "collections")


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    key_hash: str
    prefix: str  # the first characters of the key, to recognise it in listings
    created_at: float
    models: tuple[str, ...] | None = None  # None = every model
    mcp_servers: tuple[str, ...] | None = None
    collections: tuple[str, ...] | None = None
    rpm: int | None = None  # None = the `limits` default
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None  # daily | weekly | monthly; None = lifetime
    expires_at: float | None = None
    revoked_at: float | None = None

    def to_row(self) -> tuple[object, ...]:
        values = []
        for column in KEY_COLUMNS:
            value = getattr(self, column)
            values.append(orjson.dumps(list(value)).decode() if column in _LISTS and value is not None else value)
        return tuple(values)

    @classmethod
    def from_row(cls, row: tuple[object, ...]) -> KeyRecord:
        data = dict(zip(KEY_COLUMNS, row))
        for column in _LISTS:
            if data[column] is not None:
                data[column] = tuple(orjson.loads(str(data[column])))
        return cls(**data)  # type: ignore[arg-type]

    def public(self) -> dict[str, object]:
        """The record as the admin API and `keys list` show it (never the hash)."""
        out = {c: getattr(self, c) for c in KEY_COLUMNS if c != "key_hash"}
        for column in _LISTS:
            if out[column] is not None:
                out[column] = list(out[column])  # type: ignore[arg-type]
        return out


@dataclass(frozen=True)
class UsageRow:
    request_id: str
    key_id: str | None
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    status: int
    cached: bool
    route: str
    created_at: float

    def to_row(self) -> tuple[object, ...]:
        return tuple(int(v) if isinstance(v, bool) else v for v in (getattr(self, c) for c in USAGE_COLUMNS))

    @classmethod
    def from_row(cls, row: tuple[object, ...]) -> UsageRow:
        data = dict(zip(USAGE_COLUMNS, row))
        data["cached"] = bool(data["cached"])
        return cls(**data)  # type: ignore[arg-type]


@dataclass
class UsageQuery:
    key_id: str | None = None
    model: str | None = None
    since: float | None = None
    limit: int = 1000
    params: list[object] = field(default_factory=list)

    def where(self) -> str:
        clauses = []
        for column, value, op in (("key_id", self.key_id, "="), ("model", self.model, "="),
                                  ("created_at", self.since, ">=")):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                self.params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else ""


class Store(Protocol):
    async def migrate(self) -> None: ...

    async def insert_key(self, record: KeyRecord) -> None: ...

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def revoke_key(self, key_id: str, at: float) -> bool: ...

    async def insert_usage(self, rows: list[UsageRow]) -> None: ...

    async def usage(self, query: UsageQuery) -> list[UsageRow]: ...

    async def spent(self, key_id: str, since: float) -> float: ...

    async def aclose(self) -> None: ...


SELECT_KEY = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"
INSERT_KEY = f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) VALUES ({', '.join('?' * len(KEY_COLUMNS))})"
INSERT_USAGE = f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
SELECT_USAGE = f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage"
SPENT = "SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE key_id = ? AND created_at >= ?"
REVOKE = "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"


def open_store(url: str) -> Store:
    """`sqlite:///path` (or a bare path) or `postgresql://…`; nothing is opened until first use."""
    if url.startswith(("postgresql://", "postgres://")):
        from proxy.keys.postgres import PostgresStore

        return PostgresStore(url)
    from proxy.keys.sqlite import SQLiteStore

    path = url.removeprefix("sqlite://").removeprefix("/") if url.startswith("sqlite://") else url
    if url.startswith("sqlite:////"):
        path = "/" + path.lstrip("/")
    return SQLiteStore(path)
