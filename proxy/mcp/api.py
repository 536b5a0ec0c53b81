"""`GET /v1/mcp/tools`: every configured server's tools, named as the models see them (after `allowed_tools`).

A server that cannot be reached does not hide the others: it is named under
`unavailable` (`[{"server", "message"}]`) beside the listing.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.mcp.manager import manager_for


def servers_for(scope: Any, servers: Any) -> list[str]:
    """The configured servers a request's key may use: a virtual key's `mcp_servers`, else all."""
    key = ((scope or {}).get("state") or {}).get("key")
    allowed = getattr(key, "mcp_servers", None)
    return [name for name in servers if allowed is None or name in allowed]


async def list_tools(gateway: Any, request: Request) -> Response:
    manager = manager_for(gateway)
    catalog = await manager.catalog(servers_for(request.scope, manager.servers), skip_unavailable=True)
    data = [{"type": "function", "server": entry.server, "function": entry.function()["function"]}
            for entry in catalog.entries.values()]
    body: dict[str, Any] = {"object": "list", "data": data}
    if catalog.unavailable:
        body["unavailable"] = [{"server": name, "message": gateway.scrub(message)}
                               for name, message in catalog.unavailable.items()]
    return Response(orjson.dumps(body), media_type="application/json")
