"""The RAG engine of one gateway: its store, its embedders, ingest and search.

Built on first use (`engine_for`) and kept on the gateway, so a plain request
never pays for it. An ingest loads, chunks and embeds everything first and
writes it in one transaction: a failing embedding call leaves the collection
exactly as it was. Unchanged files (same source, same content hash) are not
embedded again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.errors import CollectionNotFound, InvalidRequest, ProviderUnavailable
from proxy.rag.chunking import Chunk, ChunkSettings, chunk_document, sentences_of
from proxy.rag.embed import Embedder, Progress
from proxy.rag.loaders import Document, Skipped, load_sources
from proxy.rag.search import MODES, Filter, rrf
from proxy.rag.store import Collection, Hit, Ingested, Store, open_store

if TYPE_CHECKING:
    from proxy.app import Gateway

ADHOC_PREFIX = "adhoc-"


@dataclass
class IngestReport:
    collection: Collection
    added: list[str] = field(default_factory=list)  # sources (re)written
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks: int = 0


def engine_for(gateway: Gateway) -> RagEngine:
    """The gateway's engine, built on first use (503 naming the extra when it is not installed)."""
    if gateway.rag is None:
        try:
            import numpy  # noqa: F401  (dense search and the store need it)
        except ImportError:
            raise ProviderUnavailable("RAG needs the `rag` extra: pip install 'omni-llm[rag]'") from None
        gateway.rag = RagEngine(gateway, open_store(gateway.config.rag.store))
    return gateway.rag  # type: ignore[no-any-return]


class RagEngine:
    def __init__(self, gateway: Gateway, store: Store) -> None:
        self.gateway = gateway
        self.settings = gateway.config.rag
        self.store = store
        self._embedders: dict[str, Embedder] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await asyncio.to_thread(self.store.close)

    def embedder(self, model: str) -> Embedder:
        if model not in self._embedders:
            self._embedders[model] = Embedder(self.gateway, model)
        return self._embedders[model]

    # -- collections --------------------------------------------------------------------
    async def get(self, name_or_id: str, param: str | None = "collection") -> Collection:
        found = await asyncio.to_thread(self.store.get_collection, name_or_id)
        if found is None:
            raise CollectionNotFound(f"collection {name_or_id!r} does not exist", param=param)
        return found

    async def get_or_create(self, name: str, *, embedding_model: str | None = None,
                            chunking: Mapping[str, Any] | None = None,
                            metadata: Mapping[str, Any] | None = None) -> Collection:
        """An existing collection, or a new one with the declared / configured model and chunking."""
        async with self._lock(name):
            found = await asyncio.to_thread(self.store.get_collection, name)
            if found is not None:
                return found
            declared = self.settings.collections.get(name, {})
            model = embedding_model or declared.get("embedding_model") or self.settings.embedding_model
            if not model:
                raise InvalidRequest("no embedding model: set rag.embedding_model to a `mode: embedding` model")
            self.embedder(model)  # an unknown model fails here, before anything is written
            settings = ChunkSettings.from_mapping({**self.settings.chunking, **declared.get("chunking", {}),
                                                   **(chunking or {})})
            return await asyncio.to_thread(self.store.create_collection, name, model, settings.to_dict(), metadata)

    async def delete(self, name_or_id: str) -> Collection:
        collection = await self.get(name_or_id)
        await asyncio.to_thread(self.store.delete_collection, collection.id)
        return collection

    # -- ingest -----------------------------------------------------------------------------
    async def ingest(self, collection: Collection, sources: Sequence[str], *,
                     chunking: Mapping[str, Any] | None = None, allowed_paths: Sequence[str] | None = None,
                     progress: Progress | None = None) -> IngestReport:
        documents, skipped = await load_sources(sources, allowed_paths=allowed_paths)
        report = await self.ingest_documents(collection, documents, chunking=chunking, progress=progress)
        report.skipped = skipped + report.skipped
        return report

    async def ingest_documents(self, collection: Collection, documents: Sequence[Document], *,
                               chunking: Mapping[str, Any] | None = None, file_ids: Mapping[str, str] | None = None,
                               progress: Progress | None = None) -> IngestReport:
        settings = ChunkSettings.from_mapping({**collection.chunking, **(chunking or {})})
        embedder = self.embedder(collection.embedding_model)
        report = IngestReport(collection)
        async with self._lock(collection.id):
            known = await asyncio.to_thread(self.store.document_hashes, collection.id)
            todo: list[Document] = []
            for document in documents:
                (report.unchanged.append(document.source) if known.get(document.source) == document.content_hash
                 else todo.append(document))
            chunked: list[tuple[Document, list[Chunk]]] = []
            for document in todo:
                vectors = await embedder.embed(sentences_of(document)) if settings.strategy == "semantic" else None
                chunks = chunk_document(document, settings, vectors)
                if chunks:
                    chunked.append((document, chunks))
                else:
                    report.skipped.append(Skipped(document.source, "no text to index"))
            texts = [c.content for _, chunks in chunked for c in chunks]
            matrix = await embedder.embed(texts, progress)
            items, row = [], 0
            for document, chunks in chunked:
                items.append(Ingested(document, chunks, matrix[row:row + len(chunks)],
                                      (file_ids or {}).get(document.source)))
                row += len(chunks)
            try:
                await asyncio.to_thread(self.store.write_documents, collection.id, items)
            except ValueError as exc:
                raise InvalidRequest(f"cannot add to collection {collection.name!r}: {exc}") from None
            report.added = [item.document.source for item in items]
            report.chunks = row
        report.collection = await self.get(collection.id)
        return report

    async def remove_document(self, collection: Collection, source: str) -> bool:
        """Drop one document's chunks (under the collection's ingest lock, so it cannot interleave with an
        ingest of the same collection); False when the collection did not hold it."""
        async with self._lock(collection.id):
            return await asyncio.to_thread(self.store.delete_document, collection.id, source)

    async def adhoc(self, sources: Sequence[str]) -> Collection:
        """A collection holding exactly these sources, named after their content (so it is built once)."""
        documents, skipped = await load_sources(sources, allowed_paths=self.settings.allowed_paths,
                                                param="rag.sources")
        if not documents:
            reasons = "; ".join(str(s) for s in skipped) or "nothing found"
            raise InvalidRequest(f"none of the sources could be read: {reasons}", param="rag.sources")
        model = self.settings.embedding_model or ""
        key = json.dumps([sorted(d.content_hash for d in documents), model, dict(self.settings.chunking)])
        name = ADHOC_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]
        collection = await self.get_or_create(name, metadata={"adhoc": True})
        if collection.documents < len(documents):
            await self.ingest_documents(collection, documents)
            collection = await self.get(collection.id)
        return collection

    # -- search -----------------------------------------------------------------------------
    async def search(self, collections: Sequence[Collection], query: str, *, top_k: int = 5, mode: str = "hybrid",
                     score_threshold: float = 0.0, where: Filter | None = None) -> list[Hit]:
        if mode not in MODES:
            raise InvalidRequest(f"search must be one of {', '.join(MODES)}", param="search")
        pool = top_k if mode != "hybrid" else max(4 * top_k, 20)
        rankings: list[list[tuple[str, float]]] = []
        if mode in ("hybrid", "dense"):
            by_model: dict[str, list[str]] = {}
            for collection in collections:
                by_model.setdefault(collection.embedding_model, []).append(collection.id)
            dense: list[tuple[str, float]] = []
            for model, ids in by_model.items():
                vector = (await self.embedder(model).embed([query]))[0]
                dense += await asyncio.to_thread(self.store.dense, ids, vector, pool, where)
            rankings.append(sorted(dense, key=lambda pair: -pair[1])[:pool])
        if mode in ("hybrid", "keyword"):
            ids = [c.id for c in collections]
            rankings.append(await asyncio.to_thread(self.store.keyword, ids, query, pool, where))
        ranked = rrf(rankings) if mode == "hybrid" else rankings[0]
        ranked = [(chunk_id, score) for chunk_id, score in ranked if score >= score_threshold][:top_k]
        found = await asyncio.to_thread(self.store.hits, [chunk_id for chunk_id, _ in ranked])
        return [_scored(found[chunk_id], score) for chunk_id, score in ranked if chunk_id in found]

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


def _scored(hit: Hit, score: float) -> Hit:
    from dataclasses import replace

    return replace(hit, score=round(score, 6))
