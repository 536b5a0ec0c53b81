"""Retrieval-augmented generation (CONTRACT §10): documents -> chunks -> embeddings -> store -> search.

    loaders (local, s3://, https://) -> parsers (PDF, DOCX, HTML, Markdown, text)
    -> chunking -> embed (through the gateway's router) -> store (sqlite) -> search (hybrid RRF)

`engine.RagEngine` ties them together for the chat step (`step.py`), the
OpenAI-compatible files / vector_stores routes (`api.py`) and the command line
(`cli.py`). Nothing here is imported by `import proxy.app`: the pipeline and
the routes import it on the first request that needs it.
"""
