"""The `rag:` config section: defaults, validation with YAML paths (CONTRACT §10)."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, default_config_path, load_config, parse_config

BASE = """
providers:
  demo: {type: mock}
  local: {type: local}
models:
  demo: {provider: demo, model: mock-1}
  demo-embedding: {provider: demo, model: e, mode: embedding}
  local-embedding: {provider: local, model: l2_supercat, mode: embedding}
strategies:
  embedders: [local-embedding, demo-embedding]
"""


def test_defaults_without_a_rag_section() -> None:
    rag = parse_config(BASE, {"OMNI_LLM_DATA": "/data"}).rag
    assert rag.store == {"type": "sqlite", "path": "/data/rag.db"}
    assert (rag.embedding_model, rag.allowed_paths, dict(rag.collections)) == ("local-embedding", (), {})
    assert parse_config(BASE, {}).rag.store["path"] == "./.omni/rag.db"


def test_a_full_section() -> None:
    rag = parse_config(BASE + """
rag:
  store: {type: sqlite, path: "${DATA}/x.db"}
  allowed_paths: ["/srv/docs", "${UNSET:-}"]
  embedding_model: embedders
  chunking: {strategy: token, chunk_size: 200, chunk_overlap: 20}
  collections:
    handbook: {sources: ["./docs", "s3://b/p/"], embedding_model: demo-embedding, chunking: {chunk_size: 500}}
""", {"DATA": "/d"}).rag
    assert rag.store["path"] == "/d/x.db" and rag.allowed_paths == ("/srv/docs",)
    assert rag.embedding_model == "embedders"
    assert dict(rag.collections["handbook"]) == {
        "sources": ("./docs", "s3://b/p/"), "embedding_model": "demo-embedding",
        "chunking": {"strategy": "token", "chunk_size": 500, "chunk_overlap": 20}}


@pytest.mark.parametrize(("rag", "problem"), [
    ("{store: {type: milvus, dsn: x}}", "rag.store.type: unsupported store type 'milvus'"),
    ("{store: {type: pgvector}}", "rag.store.dsn: store type 'pgvector' needs `dsn`"),
    ("{store: {type: qdrant}}", "rag.store.url: store type 'qdrant' needs exactly one of `url` or `path`"),
    ("{store: {type: chroma, url: 'http://h', path: /p}}", "rag.store.url: store type 'chroma' needs exactly one of"),
    ("{store: {type: pinecone, api_key: k}}", "rag.store.index: store type 'pinecone' needs `index`"),
    ("{store: {type: opensearch, url: 'http://h', verify_certs: maybe}}", "rag.store.verify_certs: expected true or false"),
    ("{store: {type: sqlite, file: x}}", "rag.store.file: unknown key"),
    ("{embedding_model: nope}", "rag.embedding_model: unknown model 'nope'"),
    ("{embedding_model: demo}", "rag.embedding_model: model 'demo' is not a `mode: embedding` model"),
    ("{chunking: {strategy: magic}}", "rag.chunking.strategy: expected one of"),
    ("{chunking: {chunk_size: 100, chunk_overlap: 100}}", "rag.chunking.chunk_overlap: must be smaller"),
    ("{chunking: {size: 1}}", "rag.chunking.size: unknown key"),
    ("{collections: {h: {sources: x}}}", "rag.collections.h.sources: expected a list"),
    ("{collections: {h: {embedding_model: nope}}}", "rag.collections.h.embedding_model: unknown model 'nope'"),
    ("{allowed_path: []}", "rag.allowed_path: unknown key"),
    ("[]", "rag: expected a mapping"),
])
def test_problems_name_their_yaml_path(rag: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"rag: {rag}\n", {})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_the_shipped_config_uses_the_local_model() -> None:
    config = load_config(default_config_path(), env={})
    assert config.rag.embedding_model == "local-embedding"
    assert config.models["local-embedding"][0].mode == "embedding"
    assert config.providers["local"].not_ready is None


def test_importing_the_app_and_cli_loads_no_rag_library() -> None:
    import subprocess
    import sys

    code = ("import sys, proxy.app, proxy.cli; heavy = ('numpy', 'wordllama', 'pypdf', 'docx', 'bpe_openai', 'boto3', "
            "'proxy.rag.engine', 'proxy.rag.step', 'proxy.rag.api'); print([m for m in heavy if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
