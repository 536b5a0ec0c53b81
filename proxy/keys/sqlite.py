"""The SQLite store: stdlib sqlite3 on one dedicated thread (one file, no server).

One thread owns the connection, so statements never run concurrently and the
event loop never blocks on disk. WAL mode lets the CLI create or revoke keys
while a server reads the same file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from proxy.keys.store import (
    INSERT_KEY, INSERT_USAGE, MIGRATIONS, REVOKE, SELECT_KEY, SELECT_USAGE, SPENT, KeyRecord, UsageQuery, UsageRow,
)

T = TypeVar("T")


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omni-sqlite")
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(self._connection()))

    async def migrate(self) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute("INSERT OR IGNORE INTO schema_migrations (version) VALUES (?)", (version,))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

        await self._run(apply)

    async def insert_key(self, record: KeyRecord) -> None:
        await self._run(lambda c: c.execute(INSERT_KEY, record.to_row()))

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = await self._run(lambda c: c.execute(SELECT_KEY + " WHERE key_hash = ?", (key_hash,)).fetchone())
        return KeyRecord.from_row(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._run(lambda c: c.execute(SELECT_KEY + " ORDER BY created_at").fetchall())
        return [KeyRecord.from_row(r) for r in rows]

    async def revoke_key(self, key_id: str, at: float) -> bool:
        cursor = await self._run(lambda c: c.execute(REVOKE, (at, key_id)))
        return bool(cursor.rowcount)

    async def insert_usage(self, rows: list[UsageRow]) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")
            conn.executemany(INSERT_USAGE, [r.to_row() for r in rows])
            conn.execute("COMMIT")

        await self._run(insert)

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        sql = SELECT_USAGE + query.where() + f" ORDER BY created_at LIMIT {int(query.limit)}"
        rows: list[Any] = await self._run(lambda c: c.execute(sql, query.params).fetchall())
        return [UsageRow.from_row(r) for r in rows]

    async def spent(self, key_id: str, since: float) -> float:
        row = await self._run(lambda c: c.execute(SPENT, (key_id, since)).fetchone())
        return float(row[0] or 0)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._run(lambda c: c.close())
            self._conn = None
        self._thread.shutdown(wait=False)
