"""OpenAI-compatible `/v1/files` and `/v1/vector_stores` over the RAG engine (CONTRACT §10).

So `client.files.create`, `client.vector_stores.*` and
`client.vector_stores.files.*` of the OpenAI SDK work against the gateway. A
vector store is a collection (its `name` is the collection name); a file
added to a store is parsed, chunked and embedded before the call returns, so
its status is `completed` (or `failed` with `last_error`) at once. Uploads are
capped by `server.max_request_bytes` like every body (413).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import hashlib
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import CollectionNotFound, InvalidRequest, PermissionDenied
from proxy.rag.engine import RagEngine, engine_for
from proxy.rag.loaders import Document, document_from_bytes
from proxy.rag.search import parse_filter
from proxy.rag.store import Collection, Hit, StoredDocument, StoredFile
from proxy.schemas import parse_json_object

if TYPE_CHECKING:
    from proxy.app import Gateway
    from proxy.rag.engine import IngestReport


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _engine(request: Request) -> RagEngine:
    return engine_for(request.app.state.gateway)  # the same gateway the route handlers receive


# -- files --------------------------------------------------------------------------------
async def create_file(gateway: Gateway, request: Request) -> Response:
    fields = parse_multipart(request.headers.get("content-type", ""), await request.body())
    upload = fields.get("file")
    if upload is None or upload[0] is None:
        raise InvalidRequest("multipart field 'file' (a file) is required", param="file")
    purpose = (fields.get("purpose") or (None, b"assistants"))[1].decode("utf-8", "replace") or "assistants"
    stored = await asyncio.to_thread(_engine(request).store.add_file, upload[0], purpose, upload[1])
    return _json(file_json(stored))


async def list_files(gateway: Gateway, request: Request) -> Response:
    files = await asyncio.to_thread(_engine(request).store.list_files)
    purpose = request.query_params.get("purpose")
    files = [f for f in files if purpose is None or f.purpose == purpose]
    if request.query_params.get("order", "desc") == "desc":
        files.reverse()
    return _json(page([file_json(f) for f in files], request))


async def get_file(gateway: Gateway, request: Request) -> Response:
    return _json(file_json(await _file(request, request.path_params["file_id"])))


async def file_content(gateway: Gateway, request: Request) -> Response:
    stored = await _file(request, request.path_params["file_id"])
    content = await asyncio.to_thread(_engine(request).store.file_content, stored.id)
    return Response(content or b"", media_type="application/octet-stream")


async def delete_file(gateway: Gateway, request: Request) -> Response:
    stored = await _file(request, request.path_params["file_id"])
    await asyncio.to_thread(_engine(request).store.delete_file, stored.id)
    return _json({"id": stored.id, "object": "file", "deleted": True})


async def _file(request: Request, file_id: str) -> StoredFile:
    stored = await asyncio.to_thread(_engine(request).store.get_file, file_id)
    if stored is None:
        raise CollectionNotFound(f"No such file: {file_id!r}", param="file_id", code="not_found")
    return stored


# -- vector stores ----------------------------------------------------------------------------
async def create_vector_store(gateway: Gateway, request: Request) -> Response:
    body = parse_json_object(await request.body())
    engine = _engine(request)
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidRequest("name must be a non-empty string", param="name")
    file_ids = _file_ids(body.get("file_ids"))
    chunking = chunking_from_openai(body.get("chunking_strategy"))
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be an object", param="metadata")
    allowed = _allowed(request)
    if allowed is not None and name not in allowed:
        raise PermissionDenied(f"This key may not create the vector store {name!r} (its collections: "
                               f"{', '.join(allowed) or 'none'}).", param="name", code="collection_not_allowed")
    if name and await asyncio.to_thread(engine.store.get_collection, name) is not None:
        raise InvalidRequest(f"a vector store named {name!r} already exists", param="name", code="collection_exists")
    stored = [await _file(request, file_id) for file_id in file_ids]
    collection = await engine.get_or_create(name or "vs-" + uuid.uuid4().hex[:12], chunking=chunking,
                                            metadata=metadata)
    try:
        await _add_files(engine, collection, stored, {}, chunking)
    except BaseException:
        await engine.delete(collection.id)  # a failed create leaves nothing behind
        raise
    return _json(vector_store_json(await engine.get(collection.id)))


async def list_vector_stores(gateway: Gateway, request: Request) -> Response:
    collections = await asyncio.to_thread(_engine(request).store.list_collections)
    allowed = _allowed(request)
    collections = [c for c in collections if allowed is None or c.name in allowed or c.id in allowed]
    if request.query_params.get("order", "desc") == "desc":
        collections.reverse()
    return _json(page([vector_store_json(c) for c in collections], request))


async def get_vector_store(gateway: Gateway, request: Request) -> Response:
    return _json(vector_store_json(await _store(request)))


async def delete_vector_store(gateway: Gateway, request: Request) -> Response:
    collection = await _store(request)
    await _engine(request).delete(collection.id)
    return _json({"id": collection.id, "object": "vector_store.deleted", "deleted": True})


async def create_vector_store_file(gateway: Gateway, request: Request) -> Response:
    body = parse_json_object(await request.body())
    collection = await _store(request)
    file_id = body.get("file_id")
    if not isinstance(file_id, str):
        raise InvalidRequest("file_id is required", param="file_id")
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidRequest("attributes must be an object", param="attributes")
    stored = await _file(request, file_id)
    chunking = chunking_from_openai(body.get("chunking_strategy"))
    report, failed = await _add_files(_engine(request), collection, [stored], attributes, chunking)
    if failed:
        return _json(vector_store_file_json(collection.id, stored.id, stored.bytes, collection.created_at,
                                            attributes, error=failed[stored.id]))
    documents = await asyncio.to_thread(_engine(request).store.list_documents, collection.id)
    document = next(d for d in documents if d.file_id == stored.id)
    return _json(document_json(document))


async def list_vector_store_files(gateway: Gateway, request: Request) -> Response:
    collection = await _store(request)
    documents = await asyncio.to_thread(_engine(request).store.list_documents, collection.id)
    if request.query_params.get("order", "desc") == "desc":
        documents.reverse()
    return _json(page([document_json(d) for d in documents], request))


async def get_vector_store_file(gateway: Gateway, request: Request) -> Response:
    return _json(document_json(await _document(request)))


async def delete_vector_store_file(gateway: Gateway, request: Request) -> Response:
    document = await _document(request)
    await asyncio.to_thread(_engine(request).store.delete_document, document.collection_id, document.source)
    return _json({"id": request.path_params["file_id"], "object": "vector_store.file.deleted", "deleted": True})


async def search_vector_store(gateway: Gateway, request: Request) -> Response:
    body = parse_json_object(await request.body())
    collection = await _store(request)
    query = body.get("query")
    if isinstance(query, list) and all(isinstance(q, str) for q in query):
        text = " ".join(query)
    elif isinstance(query, str):
        text = query
    else:
        raise InvalidRequest("query must be a string or a list of strings", param="query")
    limit = body.get("max_num_results", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50:
        raise InvalidRequest("max_num_results must be an integer from 1 to 50", param="max_num_results")
    ranking = body.get("ranking_options") or {}
    threshold = ranking.get("score_threshold") if isinstance(ranking, dict) else None
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise InvalidRequest("ranking_options.score_threshold must be a number", param="ranking_options")
    try:
        where = parse_filter(body.get("filters"))
    except ValueError as exc:
        raise InvalidRequest(f"filters: {exc}", param="filters") from None
    hits = await _engine(request).search([collection], text, top_k=limit, mode="hybrid",
                                         score_threshold=float(threshold or 0.0), where=where) if text.strip() else []
    return _json({"object": "vector_store.search_results.page", "search_query": query,
                  "data": [search_result_json(hit) for hit in hits], "has_more": False, "next_page": None})


async def _store(request: Request) -> Collection:
    collection = await _engine(request).get(request.path_params["vector_store_id"], param="vector_store_id")
    allowed = _allowed(request)
    if allowed is not None and collection.name not in allowed and collection.id not in allowed:
        raise PermissionDenied(f"This key may not use the collection '{collection.name}'.", param="vector_store_id",
                               code="collection_not_allowed")
    return collection


def _allowed(request: Request) -> tuple[str, ...] | None:
    """A virtual key's `collections` (None: any collection)."""
    return getattr((request.scope.get("state") or {}).get("key"), "collections", None)


async def _document(request: Request) -> StoredDocument:
    collection = await _store(request)
    file_id = request.path_params["file_id"]
    documents = await asyncio.to_thread(_engine(request).store.list_documents, collection.id)
    for document in documents:
        if document_id(document) == file_id:
            return document
    raise CollectionNotFound(f"No file {file_id!r} in vector store {collection.id!r}", param="file_id",
                             code="not_found")


async def _add_files(engine: RagEngine, collection: Collection, files: list[StoredFile],
                     attributes: dict[str, Any], chunking: dict[str, Any] | None,
                     ) -> tuple[IngestReport | None, dict[str, str]]:
    """Parse and ingest uploads; returns the ingest report and {file id: why it failed}."""
    documents: list[Document] = []
    failed: dict[str, str] = {}
    for stored in files:
        content = await asyncio.to_thread(engine.store.file_content, stored.id) or b""
        loaded = document_from_bytes(stored.filename, content, attributes=attributes)
        if isinstance(loaded, Document):
            documents.append(loaded)
        else:
            failed[stored.id] = loaded.reason
    if not documents:
        return None, failed
    report = await engine.ingest_documents(collection, documents, chunking=chunking,
                                           file_ids={f.filename: f.id for f in files})
    for skipped in report.skipped:
        failed.update({f.id: skipped.reason for f in files if f.filename == skipped.source})
    return report, failed


# -- shapes -------------------------------------------------------------------------------------
def file_json(stored: StoredFile) -> dict[str, Any]:
    return {"id": stored.id, "object": "file", "bytes": stored.bytes, "created_at": stored.created_at,
            "filename": stored.filename, "purpose": stored.purpose, "status": "processed", "expires_at": None,
            "status_details": None}


def vector_store_json(c: Collection) -> dict[str, Any]:
    return {"id": c.id, "object": "vector_store", "created_at": c.created_at, "name": c.name, "status": "completed",
            "usage_bytes": c.usage_bytes, "last_active_at": c.created_at,
            "file_counts": {"in_progress": 0, "completed": c.documents, "failed": 0, "cancelled": 0,
                            "total": c.documents},
            "metadata": {str(k): str(v) for k, v in c.metadata.items()}, "expires_after": None, "expires_at": None}


def document_id(document: StoredDocument) -> str:
    """An uploaded file keeps its id; a document ingested from a path gets a stable one from its source."""
    return document.file_id or "file-src" + hashlib.sha256(document.source.encode()).hexdigest()[:21]


def document_json(d: StoredDocument) -> dict[str, Any]:
    return vector_store_file_json(d.collection_id, document_id(d), d.bytes, d.created_at, dict(d.attributes))


def vector_store_file_json(store_id: str, file_id: str, size: int, created_at: int, attributes: dict[str, Any],
                           error: str | None = None) -> dict[str, Any]:
    return {"id": file_id, "object": "vector_store.file", "created_at": created_at, "vector_store_id": store_id,
            "status": "failed" if error else "completed", "usage_bytes": 0 if error else size,
            "last_error": {"code": "unsupported_file", "message": error} if error else None,
            "attributes": attributes, "chunking_strategy": {"type": "other"}}


def search_result_json(hit: Hit) -> dict[str, Any]:
    attributes = {k: v for k, v in hit.attributes.items() if isinstance(v, (str, int, float, bool))}
    if hit.page is not None:
        attributes["page"] = hit.page
    if hit.section:
        attributes["section"] = hit.section
    return {"file_id": hit.file_id or document_id(StoredDocument("", hit.source, None, "", 0, 0, 0)),
            "filename": hit.source, "score": hit.score, "attributes": attributes,
            "content": [{"type": "text", "text": hit.content}]}


def page(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    after = request.query_params.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = max(1, min(int(request.query_params.get("limit", "100")), 10000))
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    shown = items[:limit]
    return {"object": "list", "data": shown, "has_more": len(items) > limit,
            "first_id": shown[0]["id"] if shown else None, "last_id": shown[-1]["id"] if shown else None}


def chunking_from_openai(raw: Any) -> dict[str, Any] | None:
    """OpenAI `chunking_strategy`: `auto` (the configured chunking) or `static` token sizes."""
    if raw is None or (isinstance(raw, dict) and raw.get("type") == "auto"):
        return None
    if not isinstance(raw, dict) or raw.get("type") != "static" or not isinstance(raw.get("static"), dict):
        raise InvalidRequest("chunking_strategy must be {type: auto} or {type: static, static: {...}}",
                             param="chunking_strategy")
    static = raw["static"]
    size, overlap = static.get("max_chunk_size_tokens", 800), static.get("chunk_overlap_tokens", 400)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, overlap)) \
            or not 100 <= size <= 4096 or not 0 <= overlap <= size // 2:
        raise InvalidRequest("static chunking needs 100 <= max_chunk_size_tokens <= 4096 and "
                             "0 <= chunk_overlap_tokens <= max_chunk_size_tokens / 2", param="chunking_strategy")
    return {"strategy": "token", "chunk_size": size, "chunk_overlap": overlap}


def _file_ids(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
        raise InvalidRequest("file_ids must be a list of file ids", param="file_ids")
    return raw


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data -> {field: (filename or None, bytes)}, with the standard library's MIME parser."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise InvalidRequest("expected a multipart/form-data body with a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise InvalidRequest("malformed multipart/form-data body")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields
