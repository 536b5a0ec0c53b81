"""The admin API (CONTRACT §12): `/admin/keys` POST/GET/DELETE and `/admin/usage`, master keys only."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest, NotFound, PermissionDenied
from proxy.keys.gate import Gate
from proxy.keys.service import parse_time, status_of
from proxy.keys.store import KeyRecord, UsageQuery, UsageRow
from proxy.schemas import parse_json_object

if TYPE_CHECKING:
    from proxy.app import Gateway


def _gate(gateway: Gateway, request: Request) -> Gate:
    if "key" in request.scope["state"]:
        raise PermissionDenied("The admin API needs a master key (server.api_keys), not a virtual key.",
                               code="admin_only")
    gate: Gate | None = gateway.gate
    if gate is None:
        raise NotFound("The admin API is off: configure server.api_keys or a `state` section.")
    return gate


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _iso(when: float | None) -> str | None:
    return None if when is None else dt.datetime.fromtimestamp(when, dt.UTC).isoformat().replace("+00:00", "Z")


def key_json(record: KeyRecord, now: float) -> dict[str, Any]:
    out = record.public()
    for field in ("created_at", "expires_at", "revoked_at"):
        out[field] = _iso(out[field])  # type: ignore[arg-type]
    return {"object": "key", **out, "status": status_of(record, now)}


def usage_json(row: UsageRow) -> dict[str, Any]:
    return {"request_id": row.request_id, "key_id": row.key_id, "model": row.model, "provider": row.provider,
            "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens, "cost_usd": row.cost_usd,
            "latency_ms": row.latency_ms, "status": row.status, "cached": row.cached, "route": row.route,
            "created_at": _iso(row.created_at)}


async def create_key(gateway: Gateway, request: Request) -> Response:
    gate = _gate(gateway, request)
    fields = parse_json_object(await request.body())
    known = set(gate.config.models) | set(gate.config.strategies)
    token, record = await gate.keys.create(fields, known)
    return _json({**key_json(record, time.time()), "key": token})


async def list_keys(gateway: Gateway, request: Request) -> Response:
    gate = _gate(gateway, request)
    now = time.time()
    return _json({"object": "list", "data": [key_json(r, now) for r in await gate.keys.list()]})


async def revoke_key(gateway: Gateway, request: Request) -> Response:
    gate = _gate(gateway, request)
    key_id = request.path_params["key_id"]
    if not await gate.keys.revoke(key_id):
        if not any(r.id == key_id for r in await gate.keys.list()):
            raise NotFound(f"No key with id '{key_id}'.")
    return _json({"id": key_id, "object": "key", "deleted": True})


async def usage(gateway: Gateway, request: Request) -> Response:
    gate = _gate(gateway, request)
    params = request.query_params
    since = params.get("since")
    query = UsageQuery(key_id=params.get("key") or None, model=params.get("model") or None,
                       since=parse_time(since, "since") if since else None, limit=100_000)
    try:
        limit = int(params.get("limit", "1000"))
    except ValueError:
        raise InvalidRequest("'limit' must be an integer", param="limit") from None
    rows = await gate.keys.usage(query)
    total = {"requests": len(rows), "prompt_tokens": sum(r.prompt_tokens for r in rows),
             "completion_tokens": sum(r.completion_tokens for r in rows),
             "cost_usd": round(sum(r.cost_usd for r in rows), 10)}
    return _json({"object": "list", "data": [usage_json(r) for r in rows[-limit:]], "total": total})
