"""The gateway YAML the RAG end-to-end tests run: the mock chat model (`demo`), the offline local
embedding model (`local-embedding`), optionally an OpenAI-shaped upstream (`gpt-test` on `up`), and
`rag:` on the store under test."""

from __future__ import annotations


CHUNKING = "{strategy: recursive, chunk_size: 400, chunk_overlap: 50}"


def gateway_yaml(store: str, *, upstream: str | None = None, server: str = "{api_keys: []}",
                 chunking: str = CHUNKING, rag: str = "") -> str:
    """`store` and `server` are YAML flow mappings; `rag` is more lines under `rag:` (two-space indent)."""
    up_provider = up_model = ""
    if upstream:
        up_provider = (f'  up: {{type: openai, api_key: sk-upstream-0123456789, base_url: "{upstream}/v1",'
                       " max_retries: 0}\n")
        up_model = "  gpt-test: {provider: up, model: echo-model}\n"
    return (f"server: {server}\n"
            f"providers:\n{up_provider}  local: {{type: local}}\n  demo: {{type: mock}}\n"
            f"models:\n{up_model}  demo: {{provider: demo, model: mock-1}}\n"
            "  local-embedding: {provider: local, model: l2_supercat, mode: embedding}\n"
            f"rag:\n  store: {store}\n  chunking: {chunking}\n{rag}")
