"""Virtual keys: create (shown once, stored hashed), list, revoke, resolve; and the usage log writer.

Keys are `sk-omni-` + 32 random bytes; the store keeps their SHA-256 (a slow
hash buys nothing against 256 random bits). Resolving a key is cached in this
process for `state.key_cache_ttl_s` (unknown keys too, so a flood of bad keys
does not reach the database); a revoke on this instance drops its entries at
once, other instances see it within the TTL. Usage rows are buffered and
written in batches by a background task, never on the request path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
import time
from typing import Any

from proxy.config import StateConfig
from proxy.errors import AuthenticationFailed, InvalidRequest
from proxy.keys.budget import PERIODS
from proxy.keys.store import KeyRecord, Store, UsageQuery, UsageRow, open_store

log = logging.getLogger("omni")

KEY_PREFIX = "sk-omni-"
_LOOKUP_BOUND = 10_000
_FLUSH_BATCH = 500
_FLUSH_DELAY_S = 0.2  # how long a row may wait for others to share its write


def hash_key(token: str | bytes) -> str:
    return hashlib.sha256(token if isinstance(token, bytes) else token.encode()).hexdigest()


def parse_time(value: Any, param: str) -> float:
    """ISO 8601 date or date-time (UTC unless it says otherwise) -> Unix seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{param}' must be an ISO 8601 date or date-time", param=param)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"'{param}' must be an ISO 8601 date or date-time, got {value!r}", param=param) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _names(value: Any, param: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest(f"'{param}' must be a list of names", param=param)
    return tuple(value)


def _count(value: Any, param: str, integer: bool = True) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise InvalidRequest(f"'{param}' must be a non-negative {'integer' if integer else 'number'}", param=param)
    if value < 0:
        raise InvalidRequest(f"'{param}' must be a non-negative {'integer' if integer else 'number'}", param=param)
    return int(value) if integer else float(value)


def new_record(fields: dict[str, Any], known_models: set[str] | None = None) -> tuple[str, KeyRecord]:
    """(the key, its record) from the create fields of the CLI and the admin API (validated)."""
    allowed = {"name", "models", "rpm", "tpm", "budget_usd", "budget_period", "expires", "expires_at",
               "mcp_servers", "collections"}
    for unknown in fields.keys() - allowed:
        raise InvalidRequest(f"Unknown field '{unknown}'", param=unknown)
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("'name' is required", param="name")
    models = _names(fields.get("models"), "models")
    if known_models is not None:
        for model in models or ():
            if model not in known_models:
                raise InvalidRequest(f"Unknown model '{model}'", param="models")
    period = fields.get("budget_period")
    if period is not None and period not in PERIODS:
        raise InvalidRequest(f"'budget_period' must be one of {', '.join(PERIODS)}", param="budget_period")
    expires = fields.get("expires", fields.get("expires_at"))
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(
        id="key_" + secrets.token_hex(8), name=name.strip(), key_hash=hash_key(token), prefix=token[:12],
        created_at=time.time(), models=models,
        mcp_servers=_names(fields.get("mcp_servers"), "mcp_servers"),
        collections=_names(fields.get("collections"), "collections"),
        rpm=_count(fields.get("rpm"), "rpm"), tpm=_count(fields.get("tpm"), "tpm"),
        budget_usd=_count(fields.get("budget_usd"), "budget_usd", integer=False), budget_period=period,
        expires_at=None if expires is None else parse_time(expires, "expires"),
    )
    return token, record


def status_of(record: KeyRecord, now: float) -> str:
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


class KeyService:
    def __init__(self, state: StateConfig) -> None:
        self.state = state
        self._store: Store | None = None
        self._opening: asyncio.Lock | None = None
        self._lookups: dict[str, tuple[float, KeyRecord | None]] = {}
        self._rows: list[UsageRow] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None

    async def store(self) -> Store:
        if self._store is None:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if self._store is None:
                    store = open_store(self.state.database)
                    await store.migrate()
                    self._store = store
        return self._store

    # -- keys --------------------------------------------------------------------
    async def create(self, fields: dict[str, Any], known_models: set[str] | None = None) -> tuple[str, KeyRecord]:
        token, record = new_record(fields, known_models)
        await (await self.store()).insert_key(record)
        return token, record

    async def list(self) -> list[KeyRecord]:
        return await (await self.store()).list_keys()

    async def revoke(self, key_id: str) -> bool:
        done = await (await self.store()).revoke_key(key_id, time.time())
        self._lookups = {h: v for h, v in self._lookups.items() if v[1] is None or v[1].id != key_id}
        return done

    async def resolve(self, token: bytes) -> KeyRecord:
        """The active key for a presented token, or AuthenticationFailed (unknown, revoked, expired)."""
        digest = hash_key(token)
        now = time.monotonic()
        cached = self._lookups.get(digest)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            record = await (await self.store()).key_by_hash(digest)
            if len(self._lookups) >= _LOOKUP_BOUND:
                self._lookups.clear()
            self._lookups[digest] = (now + self.state.key_cache_ttl_s, record)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        status = status_of(record, time.time())
        if status != "active":
            raise AuthenticationFailed(f"This API key has been {status}." if status == "revoked"
                                       else "This API key has expired.")
        return record

    # -- usage log ---------------------------------------------------------------
    async def spent(self, key_id: str, since: float) -> float:
        await self.flush()
        return await (await self.store()).spent(key_id, since)

    def log(self, row: UsageRow) -> None:
        self._rows.append(row)
        if self._writer is None:
            self._wake = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        if self._wake is not None:
            self._wake.set()

    async def _write_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._rows) < _FLUSH_BATCH:
                await asyncio.sleep(_FLUSH_DELAY_S)
            try:
                await self.flush()
            except Exception:  # the database is down: keep the rows for the next round
                log.exception("usage log: write failed; %d rows kept for retry", len(self._rows))

    async def flush(self) -> None:
        """Write the buffered rows now (also before reading the usage log)."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        try:
            await (await self.store()).insert_usage(rows)
        except BaseException:
            self._rows[:0] = rows
            raise

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        await self.flush()
        return await (await self.store()).usage(query)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        if self._store is not None:
            try:
                await self.flush()
            finally:
                await self._store.aclose()
                self._store = None
