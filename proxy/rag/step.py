"""The `rag` chat field (CONTRACT §10): retrieve, add one numbered context message, return `rag_context`.

    "rag": {"collection": "handbook" | [...], "sources": [...], "top_k": 5, "score_threshold": 0.0,
            "search": "hybrid" | "dense" | "keyword", "rerank": null, "query": null,
            "include_sources": true, "filters": {...}}

Retrieval happens once, before the first model call, so fallbacks and the
inner steps (MCP rounds, structured output) all see the same context. With
`rerank` the search returns a larger pool (`rerank_pool`), the rerank model
orders it and the best `top_k` are kept, scored by their relevance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from proxy.errors import InvalidRequest, ProxyError
from proxy.pipeline import ChatCall, Complete, OpenStream
from proxy.rag.search import MODES, Filter, parse_filter
from proxy.rag.store import Hit
from translators.common import content_text

if TYPE_CHECKING:
    from proxy.app import Gateway
    from proxy.router import Served
    from proxy.streaming import Stream
    from translators.base import JSON

_KEYS = frozenset({"collection", "sources", "top_k", "score_threshold", "search", "rerank", "query",
                   "include_sources", "filters", "enabled"})
INSTRUCTIONS = ("Answer using the numbered sources below when they are relevant, and cite each source you use "
                "as [n] right after the statement it supports. If the sources do not contain the answer, say so.")


@dataclass(frozen=True)
class RagRequest:
    collections: tuple[str, ...]
    sources: tuple[str, ...]
    top_k: int
    score_threshold: float
    search: str
    query: str | None
    include_sources: bool
    filters: Filter | None
    rerank: str | None = None  # a `mode: rerank` model (or strategy of them) that orders the candidates


# With `rerank`, the search returns this many candidates for the reranker to order (then top_k are kept).
def rerank_pool(top_k: int) -> int:
    return max(top_k * 4, 20)


def build(gateway: Gateway, value: Any, body: JSON) -> RagStep | None:
    request = parse_rag(value)
    if request is None:
        return None
    chain = None
    if request.rerank is not None:  # checked before any retrieval or model call: a 400 naming rag.rerank
        from proxy.rerank import rerank_chain

        chain = rerank_chain(gateway.config, {"model": request.rerank}, "rag.rerank")
    return RagStep(gateway, request, chain)


def parse_rag(value: Any) -> RagRequest | None:
    if not isinstance(value, dict):
        raise InvalidRequest("rag must be an object", param="rag")
    for key in value:
        if key not in _KEYS:
            raise InvalidRequest(f"unknown rag field {key!r} (one of: {', '.join(sorted(_KEYS))})", param=f"rag.{key}")
    if value.get("enabled") is False:
        return None
    collection = value.get("collection")
    collections = [collection] if isinstance(collection, str) else collection if collection is not None else []
    if not isinstance(collections, list) or not all(isinstance(c, str) and c for c in collections):
        raise InvalidRequest("rag.collection must be a collection name or id, or a list of them", param="rag.collection")
    sources = value.get("sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise InvalidRequest("rag.sources must be a list of paths or URLs", param="rag.sources")
    if not collections and not sources:
        raise InvalidRequest("rag needs a `collection` or `sources`", param="rag.collection")
    top_k = value.get("top_k", 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise InvalidRequest("rag.top_k must be an integer from 1 to 100", param="rag.top_k")
    threshold = value.get("score_threshold")
    if threshold is None:
        threshold = 0.0
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidRequest("rag.score_threshold must be a number", param="rag.score_threshold")
    search = value.get("search") or "hybrid"
    if search not in MODES:
        raise InvalidRequest(f"rag.search must be one of {', '.join(MODES)}", param="rag.search")
    rerank = value.get("rerank")
    if rerank is not None and (not isinstance(rerank, str) or not rerank):
        raise InvalidRequest("rag.rerank must be the name of a `mode: rerank` model, or null", param="rag.rerank")
    query = value.get("query")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise InvalidRequest("rag.query must be a non-empty string or null", param="rag.query")
    include = value.get("include_sources", True)
    if not isinstance(include, bool):
        raise InvalidRequest("rag.include_sources must be true or false", param="rag.include_sources")
    try:
        filters = parse_filter(value.get("filters"))
    except ValueError as exc:
        raise InvalidRequest(f"rag.filters: {exc}", param="rag.filters") from None
    return RagRequest(tuple(collections), tuple(sources), top_k, float(threshold), search, query, include, filters,
                      rerank)


class RagStep:
    def __init__(self, gateway: Gateway, request: RagRequest, rerank_chain: list[Any] | None = None) -> None:
        self.gateway = gateway
        self.request = request
        self.rerank_chain = rerank_chain

    async def complete(self, call: ChatCall, nxt: Complete) -> Served[JSON]:
        await self._retrieve(call)
        return await nxt(call)

    async def stream(self, call: ChatCall, nxt: OpenStream) -> Served[Stream]:
        await self._retrieve(call)  # before the first chunk: a missing collection is a real 404
        return await nxt(call)

    async def _retrieve(self, call: ChatCall) -> None:
        from proxy.rag.engine import engine_for

        engine = engine_for(self.gateway)
        request = self.request
        collections = [await engine.get(name, "rag.collection") for name in request.collections]
        if request.sources:
            collections.append(await engine.adhoc(request.sources))
        query = request.query or last_user_text(call.body.get("messages") or [])
        started = time.perf_counter()
        tracing = getattr(self.gateway, "tracing", None)
        if tracing is None:
            hits = await self._search(engine, collections, query)
        else:  # one span per retrieval (proxy/otel.py)
            names = ",".join(request.collections) or "sources"
            with tracing.span(f"retrieval {names}", {"gen_ai.operation.name": "retrieval",
                                                     "omni_llm.rag.collections": names,
                                                     "omni_llm.rag.search": request.search}) as span:
                hits = await self._search(engine, collections, query)
                span.set_attribute("omni_llm.rag.chunks", len(hits))
        if self.rerank_chain is not None and hits:
            hits = await self._reranked(hits, query, call.state)
        call.state["rag_retrieval_ms"] = round((time.perf_counter() - started) * 1000, 3)  # EMF (proxy/emf.py)
        if hits:
            call.body = {**call.body, "messages": with_context(call.body["messages"], hits)}
        if request.include_sources:
            call.extra["rag_context"] = [rag_context_item(hit) for hit in hits]
        call.state["log"]["rag_chunks"] = len(hits)


    async def _search(self, engine: Any, collections: list[Any], query: str) -> list[Any]:
        request = self.request
        if not query:
            return []
        top_k, threshold = request.top_k, request.score_threshold
        if self.rerank_chain is not None:  # a larger pool; the threshold applies to the rerank scores
            top_k, threshold = rerank_pool(request.top_k), 0.0
        hits: list[Any] = await engine.search(collections, query, top_k=top_k, mode=request.search,
                                              score_threshold=threshold, where=request.filters)
        return hits

    async def _reranked(self, hits: list[Hit], query: str, state: dict[str, Any]) -> list[Hit]:
        """The candidates ordered by the rerank model (router: retries, fallbacks); top_k kept, score = relevance.

        A rerank that still fails fails the request with its error: answering from the unreranked
        candidates would hide that the model the client asked for did not run.
        """
        from proxy.rerank import rerank_texts

        assert self.rerank_chain is not None
        request = self.request
        texts = [hit.content for hit in hits]
        tracing = getattr(self.gateway, "tracing", None)
        try:
            if tracing is None:
                ranked = await rerank_texts(self.gateway, self.rerank_chain, query, texts, request.top_k,
                                            state["log"])
            else:
                with tracing.span(f"rerank {request.rerank}", {"gen_ai.operation.name": "rerank",
                                                               "gen_ai.request.model": request.rerank,
                                                               "omni_llm.rag.candidates": len(texts)}) as span:
                    ranked = await rerank_texts(self.gateway, self.rerank_chain, query, texts, request.top_k,
                                                state["log"])
                    span.set_attribute("omni_llm.rag.chunks", len(ranked))
        except ProxyError as exc:
            exc.message = f"rag.rerank with '{request.rerank}' failed: {exc.message}"
            raise
        return [replace(hits[index], score=round(score, 6)) for index, score in ranked
                if score >= request.score_threshold]


def last_user_text(messages: list[JSON]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content")).strip()
    return ""


def context_message(hits: list[Hit]) -> JSON:
    blocks = [INSTRUCTIONS]
    for n, hit in enumerate(hits, start=1):
        where = [f"source: {hit.source}"]
        if hit.page is not None:
            where.append(f"page {hit.page}")
        if hit.section:
            where.append(f"section: {hit.section}")
        blocks.append(f"[{n}] ({', '.join(where)})\n{hit.content}")
    return {"role": "system", "content": "\n\n".join(blocks)}


def with_context(messages: list[JSON], hits: list[Hit]) -> list[JSON]:
    """The context goes after the leading system/developer messages (vendors that merge system text keep order)."""
    at = 0
    while at < len(messages) and isinstance(messages[at], dict) and messages[at].get("role") in ("system", "developer"):
        at += 1
    return [*messages[:at], context_message(hits), *messages[at:]]


def rag_context_item(hit: Hit) -> JSON:
    return {"content": hit.content, "source": hit.source, "page": hit.page, "section": hit.section,
            "score": hit.score, "chunk_id": hit.chunk_id}
