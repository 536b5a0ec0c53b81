"""The server-backed RAG stores (CONTRACT §10 `rag.store`), one module each, imported on first use.

`base.RecordStore` holds what they share: the catalog (collections, documents, uploads) kept as
records in the store itself, so every gateway instance pointed at the same server sees the same
collections. Each module adds its vector index: add/delete chunks, dense and keyword search.
"""
