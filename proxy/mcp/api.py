"""`GET /v1/mcp/tools`: every configured server's tools, named as the models see them (after `allowed_tools`)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.mcp.manager import manager_for


async def list_tools(gateway: Any, request: Request) -> Response:
    manager = manager_for(gateway)
    catalog = await manager.catalog(manager.servers)
    data = [{"type": "function", "server": entry.server, "function": entry.function()["function"]}
            for entry in catalog.entries.values()]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")
