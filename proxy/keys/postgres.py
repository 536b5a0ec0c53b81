"""The PostgreSQL store (asyncpg, extra `postgres`), for several gateway instances on one database.

Same migrations and SQL as SQLite; `?` placeholders are renumbered to `$n`.
Migrations take an advisory lock so instances starting together apply them once.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.keys.store import (
    INSERT_KEY, INSERT_USAGE, MIGRATIONS, REVOKE, SELECT_KEY, SELECT_USAGE, SPENT, KeyRecord, UsageQuery, UsageRow,
)

_PLACEHOLDER = re.compile(r"\?")
_MIGRATION_LOCK = 0x6F6D6E69  # "omni"


def to_dollar(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    async def _get_pool(self) -> Any:
        if self._pool is None:
            try:
                import asyncpg
            except ImportError as exc:
                raise RuntimeError("state.database is PostgreSQL: pip install 'omni-llm[postgres]'") from exc
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=5)
        return self._pool

    async def migrate(self) -> None:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version not in done:
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)

    async def insert_key(self, record: KeyRecord) -> None:
        pool = await self._get_pool()
        await pool.execute(to_dollar(INSERT_KEY), *record.to_row())

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(to_dollar(SELECT_KEY + " WHERE key_hash = ?"), key_hash)
        return KeyRecord.from_row(tuple(row)) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        pool = await self._get_pool()
        return [KeyRecord.from_row(tuple(r)) for r in await pool.fetch(SELECT_KEY + " ORDER BY created_at")]

    async def revoke_key(self, key_id: str, at: float) -> bool:
        pool = await self._get_pool()
        status = await pool.execute(to_dollar(REVOKE), at, key_id)
        return bool(status.endswith(" 1"))

    async def insert_usage(self, rows: list[UsageRow]) -> None:
        pool = await self._get_pool()
        await pool.executemany(to_dollar(INSERT_USAGE), [r.to_row() for r in rows])

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        pool = await self._get_pool()
        sql = SELECT_USAGE + query.where() + f" ORDER BY created_at LIMIT {int(query.limit)}"
        return [UsageRow.from_row(tuple(r)) for r in await pool.fetch(to_dollar(sql), *query.params)]

    async def spent(self, key_id: str, since: float) -> float:
        pool = await self._get_pool()
        return float(await pool.fetchval(to_dollar(SPENT), key_id, since) or 0)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
