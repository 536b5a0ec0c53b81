"""A fake Qdrant server: the REST routes the `qdrant` RAG store uses, answered by qdrant-client's local mode.

The real qdrant-client in url mode serialises its requests and parses the answers, so the store's
server-mode code path and the request shapes are exercised over real HTTP. What the fake cannot
show is the server's own behaviour: its filtering, payload indexes and IDF are local mode's here.
Bodies are parsed with the client's own REST models (qdrant_client.http.models), answers are
`{"result": ..., "status": "ok", "time": 0}` as the server sends them; `api_key` makes it check
the `api-key` header (401 otherwise).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.server import Recorded, Recorder


def make_app(recorder: Recorder, api_key: str | None = None) -> Starlette:
    from qdrant_client.http import models
    from qdrant_client.local.qdrant_local import QdrantLocal

    local = QdrantLocal(":memory:")

    def ok(result: Any) -> JSONResponse:
        if hasattr(result, "model_dump"):
            result = result.model_dump(mode="json", exclude_unset=True)
        return JSONResponse({"result": result, "status": "ok", "time": 0.0})

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"status": {"error": message}, "time": 0.0}, status_code=status)

    def updated() -> JSONResponse:
        return ok({"operation_id": 0, "status": "completed"})

    async def route(request: Request) -> JSONResponse:
        body = await request.json() if request.method in ("PUT", "POST") else None
        recorder.requests.append(Recorded(request.method, request.url.path, dict(request.headers), body,
                                          request.url.query))
        if api_key is not None and request.headers.get("api-key") != api_key:
            return error(401, "Unauthorized: invalid api key")
        name, action = request.path_params["name"], request.path_params.get("action", "")
        if action == "exists":
            return ok({"exists": name in local.collections})
        if request.method == "PUT" and not action:
            if name in local.collections:
                return error(409, f"Wrong input: Collection `{name}` already exists!")
            create = models.CreateCollection(**body)
            local.create_collection(name, vectors_config=create.vectors,
                                    sparse_vectors_config=create.sparse_vectors)
            return ok(True)
        if name not in local.collections:
            return error(404, f"Not found: Collection `{name}` doesn't exist!")
        if request.method == "GET" and not action:
            return ok(local.get_collection(name))
        if request.method == "DELETE" and not action:
            return ok(local.delete_collection(name))
        if action == "index":
            models.CreateFieldIndex(**body)  # the shape must parse; local mode keeps no payload index
            return updated()
        if action == "points" and request.method == "PUT":
            local.upsert(name, models.PointsList(**body).points)
            return updated()
        if action == "points":
            asked = models.PointRequest(**body)
            return ok([r.model_dump(mode="json") for r in local.retrieve(
                name, asked.ids, with_payload=asked.with_payload, with_vectors=asked.with_vector)])
        if action == "points/scroll":
            scroll = models.ScrollRequest(**body)
            points, offset = local.scroll(name, scroll_filter=scroll.filter, limit=scroll.limit or 10,
                                          offset=scroll.offset, with_payload=scroll.with_payload,
                                          with_vectors=scroll.with_vector)
            return ok({"points": [p.model_dump(mode="json") for p in points], "next_page_offset": offset})
        if action == "points/delete":
            selector = models.PointIdsList(**body) if "points" in body else models.FilterSelector(**body)
            local.delete(name, selector)
            return updated()
        if action == "points/query":
            query = models.QueryRequest(**body)
            found = local.query_points(name, query=query.query, using=query.using, query_filter=query.filter,
                                       limit=query.limit or 10, with_payload=query.with_payload)
            return ok({"points": [p.model_dump(mode="json") for p in found.points]})
        return error(404, f"the fake has no route {request.method} {request.url.path}")

    return Starlette(routes=[
        Route("/collections/{name}", route, methods=["GET", "PUT", "DELETE"]),
        Route("/collections/{name}/{action:path}", route, methods=["GET", "PUT", "POST"]),
    ])
