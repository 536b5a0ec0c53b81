"""The store interface: collections of chunks with vectors, searchable densely and by keyword.

The embedded default is `sqlite_store.SqliteStore` (one file, FTS5 for BM25,
an in-process numpy matrix per collection for dense search). Server-backed
stores (pgvector, qdrant, ...) implement the same methods. Methods are
synchronous and thread-safe: the engine calls them off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from proxy.rag.chunking import Chunk
    from proxy.rag.loaders import Document


@dataclass(frozen=True)
class Collection:
    id: str  # vs_...: the vector store id
    name: str
    embedding_model: str
    chunking: Mapping[str, Any]
    created_at: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    dimensions: int | None = None  # set by the first ingest
    documents: int = 0
    chunks: int = 0
    usage_bytes: int = 0


@dataclass(frozen=True)
class StoredDocument:
    """One ingested file of a collection (a `vector_store.file` on the HTTP API)."""

    collection_id: str
    source: str
    file_id: str | None
    content_hash: str
    bytes: int
    chunks: int
    created_at: int
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredFile:
    """An upload (`POST /v1/files`), kept until deleted."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    collection: str  # the collection's name
    content: str
    source: str
    chunk_index: int
    page: int | None
    section: str | None
    file_id: str | None
    attributes: Mapping[str, Any]
    score: float = 0.0


@dataclass(frozen=True)
class Ingested:
    """What one document brings to a collection: its chunks and their vectors (rows in order)."""

    document: Document
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    file_id: str | None = None


class Store(Protocol):
    # collections
    def create_collection(self, name: str, embedding_model: str, chunking: Mapping[str, Any],
                          metadata: Mapping[str, Any] | None = None) -> Collection: ...

    def get_collection(self, name_or_id: str) -> Collection | None: ...

    def list_collections(self) -> list[Collection]: ...

    def delete_collection(self, collection_id: str) -> bool: ...

    # documents
    def document_hashes(self, collection_id: str) -> dict[str, str]: ...

    def write_documents(self, collection_id: str, items: Sequence[Ingested]) -> None:
        """Replace each item's document (by source) with its new chunks, all in one transaction."""

    def list_documents(self, collection_id: str) -> list[StoredDocument]: ...

    def delete_document(self, collection_id: str, source: str) -> bool: ...

    # search: (chunk id, score) best first; `where` is a metadata filter (search.parse_filter)
    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Any | None = None) -> list[tuple[str, float]]: ...

    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Any | None = None) -> list[tuple[str, float]]: ...

    def hits(self, chunk_ids: Sequence[str]) -> dict[str, Hit]: ...

    # uploads
    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile: ...

    def get_file(self, file_id: str) -> StoredFile | None: ...

    def file_content(self, file_id: str) -> bytes | None: ...

    def list_files(self) -> list[StoredFile]: ...

    def delete_file(self, file_id: str) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StoreSpec:
    """One `rag.store.type`: where its class lives, the pip extra it needs, and its settings."""

    target: str  # "module:Class", imported on first use
    extra: str | None  # the pip extra that installs its client
    probe: str | None  # a module the extra installs: `omni-llm check` looks for it
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()  # string settings unless listed in `flags`
    flags: tuple[str, ...] = ()  # true/false settings
    one_of: tuple[str, ...] = ()  # exactly one of these must be set (e.g. a server url or a local path)


STORES: dict[str, StoreSpec] = {
    "sqlite": StoreSpec("proxy.rag.sqlite_store:SqliteStore", "rag", "numpy", optional=("path",)),
    "pgvector": StoreSpec("proxy.rag.stores.pgvector:PgvectorStore", "pgvector", "psycopg", required=("dsn",)),
    "qdrant": StoreSpec("proxy.rag.stores.qdrant:QdrantStore", "qdrant", "qdrant_client",
                        optional=("url", "api_key", "path", "prefix"), one_of=("url", "path")),
    "chroma": StoreSpec("proxy.rag.stores.chroma:ChromaStore", "chroma", "chromadb",
                        optional=("url", "path", "api_key", "prefix"), one_of=("url", "path")),
    "faiss": StoreSpec("proxy.rag.stores.faiss:FaissStore", "faiss", "faiss", required=("path",)),
    "opensearch": StoreSpec("proxy.rag.stores.opensearch:OpenSearchStore", "opensearch", "opensearchpy",
                            required=("url",), optional=("username", "password", "prefix"),
                            flags=("verify_certs",)),
    "pinecone": StoreSpec("proxy.rag.stores.pinecone:PineconeStore", "pinecone", "pinecone",
                          required=("api_key", "index"), optional=("host", "prefix")),
}


def missing_extra(settings: Mapping[str, Any]) -> str | None:
    """`pip install 'omni-llm[x]'` when the store's client library is not installed, else None."""
    import importlib.util

    spec = STORES.get(settings.get("type", "sqlite"))
    if spec is None or spec.probe is None or importlib.util.find_spec(spec.probe) is not None:
        return None
    return f"pip install 'omni-llm[{spec.extra}]'"


def open_store(settings: Mapping[str, Any]) -> Store:
    """The store a validated `rag.store` config block names (its client library is imported here)."""
    import importlib

    kind = settings.get("type", "sqlite")
    spec = STORES.get(kind)
    if spec is None:
        raise ValueError(f"unsupported rag store type {kind!r}")
    hint = missing_extra(settings)
    if hint is not None:
        from proxy.errors import ProviderUnavailable

        raise ProviderUnavailable(f"the {kind} RAG store needs its client library: {hint}")
    module_name, class_name = spec.target.split(":")
    options = {k: v for k, v in settings.items() if k != "type"}
    return getattr(importlib.import_module(module_name), class_name)(**options)  # type: ignore[no-any-return]
