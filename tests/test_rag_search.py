"""RAG engine in-process: retrieval quality with the local model, idempotent ingest, atomic failure, filters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.app import Gateway
from proxy.config import parse_config
from proxy.errors import CollectionNotFound, InvalidRequest, ProxyError
from proxy.rag.engine import RagEngine, engine_for
from proxy.rag.search import parse_filter, rrf
from tests.fakes.server import Recorder
from tests.rag import corpus
from tests.rag.documents import write_corpus


def make_engine(db: Path, upstream: str = "http://127.0.0.1:9", remote_model: str = "text-embedding-3-small",
                chunking: str = "{strategy: recursive, chunk_size: 300, chunk_overlap: 50}") -> RagEngine:
    config = parse_config(f"""
providers:
  local: {{type: local}}
  up: {{type: openai, api_key: sk-test, base_url: "{upstream}/v1", max_retries: 1}}
models:
  local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}
  remote-embedding: {{provider: up, model: {remote_model}, mode: embedding}}
  broken-embedding: {{provider: up, model: fail-500, mode: embedding}}
rag:
  store: {{type: sqlite, path: "{db}"}}
  chunking: {chunking}
""", {})
    return engine_for(Gateway(config))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[RagEngine]:
    built = make_engine(tmp_path / "rag.db")
    yield built
    await built.aclose()


def names(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [Path(h.source).name for h in hits]


async def test_retrieval_quality_keyword_dense_hybrid(engine: RagEngine, tmp_path: Path) -> None:
    collection = await engine.get_or_create("quality")
    report = await engine.ingest(collection, [str(corpus.write(tmp_path / "corpus"))])
    assert len(report.added) == len(corpus.FILES) and not report.skipped
    found: dict[str, set[str]] = {}
    for mode in ("keyword", "dense", "hybrid"):
        found[mode] = set()
        for query, answer in corpus.KEYWORD + corpus.PARAPHRASE:
            hits = await engine.search([collection], query, top_k=3, mode=mode)
            if hits and names(hits)[0] == answer:
                found[mode].add(query)
    keyword_queries = {q for q, _ in corpus.KEYWORD}
    paraphrases = {q for q, _ in corpus.PARAPHRASE}
    assert found["keyword"] == keyword_queries  # exact words: BM25 finds them, and nothing for paraphrases
    assert found["dense"] >= paraphrases  # the local model understands paraphrases offline
    assert found["hybrid"] == keyword_queries | paraphrases  # fusion keeps the best of both


async def test_scores_thresholds_and_top_k(engine: RagEngine, tmp_path: Path) -> None:
    collection = await engine.get_or_create("scores")
    await engine.ingest(collection, [str(corpus.write(tmp_path / "corpus"))])
    hybrid = await engine.search([collection], "sourdough starter", top_k=5)
    assert len(hybrid) == 5 and hybrid[0].score == 1.0  # first in both rankings
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    dense = await engine.search([collection], "sourdough starter", top_k=12, mode="dense")
    assert all(-1.0 <= h.score <= 1.0 for h in dense)
    cut = await engine.search([collection], "sourdough starter", top_k=12, mode="dense", score_threshold=0.3)
    assert cut and all(h.score >= 0.3 for h in cut) and len(cut) < len(dense)
    assert await engine.search([collection], "sourdough", top_k=5, mode="keyword", score_threshold=0.99) == []
    assert await engine.search([collection], "the and of", top_k=5, mode="keyword") == []  # only stopwords


async def test_every_format_is_searchable_with_page_and_section(engine: RagEngine, tmp_path: Path) -> None:
    collection = await engine.get_or_create("formats")
    report = await engine.ingest(collection, [str(write_corpus(tmp_path / "docs"))])
    assert sorted(Path(s.source).name for s in report.skipped) == ["broken.pdf", "photo.png"]
    pdf = await engine.search([collection], "Nordwind Shipping revenue", top_k=1)
    assert (names(pdf), pdf[0].page) == (["report.pdf"], 2)
    md = await engine.search([collection], "refund within 30 days", top_k=1)
    assert (names(md), md[0].section, md[0].page) == (["guide.md"], "Refunds", None)
    docx = await engine.search([collection], "train travel journeys", top_k=1)
    assert (names(docx), docx[0].section) == (["handbook.docx"], "Travel policy")
    html = await engine.search([collection], "aphids tomato plants", top_k=1)
    assert (names(html), html[0].section) == (["garden.html"], "Pests")
    assert await engine.search([collection], "SECRET_SCRIPT_TEXT NAVIGATION_LINKS", top_k=3, mode="keyword") == []


async def test_reingest_is_idempotent_and_a_changed_file_replaces_its_chunks(engine: RagEngine, tmp_path: Path) -> None:
    folder = corpus.write(tmp_path / "corpus")
    collection = await engine.get_or_create("idem")
    first = await engine.ingest(collection, [str(folder)])
    again = await engine.ingest(collection, [str(folder)])
    assert again.added == [] and len(again.unchanged) == len(corpus.FILES) and again.chunks == 0
    assert again.collection.chunks == first.collection.chunks
    (folder / "cats.txt").write_text("Dogs bark at the postman every single morning.")
    changed = await engine.ingest(collection, [str(folder)])
    assert names_of(changed.added) == ["cats.txt"] and changed.collection.chunks == first.collection.chunks
    assert await engine.search([collection], "purr content sixteen", top_k=3, mode="keyword") == []
    assert names(await engine.search([collection], "postman bark", top_k=1, mode="keyword")) == ["cats.txt"]


def names_of(sources: list[str]) -> list[str]:
    return [Path(s).name for s in sources]


async def test_a_failing_embedding_fails_the_ingest_and_changes_nothing(
        tmp_path: Path, openai_upstream: tuple[str, Recorder]) -> None:
    folder = corpus.write(tmp_path / "corpus")
    db = tmp_path / "rag.db"
    working = make_engine(db, openai_upstream[0])
    collection = await working.get_or_create("atomic", embedding_model="remote-embedding")
    await working.ingest(collection, [str(folder / "cats.txt")])
    before = await working.get("atomic")
    await working.aclose()
    # The same collection, its embedding model now failing upstream (500 after the router's retry).
    failing = make_engine(db, openai_upstream[0], remote_model="fail-500")
    with pytest.raises(ProxyError) as caught:
        await failing.ingest(before, [str(folder)])
    assert caught.value.status == 502 and "embedding with 'remote-embedding' failed" in caught.value.message
    after = await failing.get("atomic")
    assert (after.documents, after.chunks) == (before.documents, before.chunks) == (1, 1)
    await failing.aclose()


async def test_embeddings_go_through_the_router_with_retries(
        tmp_path: Path, openai_upstream: tuple[str, Recorder]) -> None:
    url, recorder = openai_upstream
    engine = make_engine(tmp_path / "rag.db", url, remote_model="flaky-1-rag")
    collection = await engine.get_or_create("routed", embedding_model="remote-embedding")
    report = await engine.ingest(collection, [str(corpus.write(tmp_path / "corpus"))])
    assert report.chunks == len(corpus.FILES)
    calls = [r for r in recorder.requests if r.path == "/v1/embeddings" and r.body["model"] == "flaky-1-rag"]
    assert len(calls) == 2 and calls[0].body == calls[1].body  # one retried batch
    assert len(calls[0].body["input"]) == len(corpus.FILES)
    await engine.aclose()


async def test_filters_restrict_every_mode(engine: RagEngine, tmp_path: Path) -> None:
    collection = await engine.get_or_create("filters")
    folder = corpus.write(tmp_path / "corpus")
    await engine.ingest(collection, [str(folder)])
    only = parse_filter({"type": "eq", "key": "source", "value": str(folder / "cats.txt")})
    for mode in ("keyword", "dense", "hybrid"):
        hits = await engine.search([collection], "sourdough bread cats", top_k=5, mode=mode, where=only)
        assert names(hits) == ["cats.txt"], mode
    either = parse_filter({"type": "or", "filters": [
        {"type": "eq", "key": "source", "value": str(folder / "cats.txt")},
        {"type": "in", "key": "source", "value": [str(folder / "baking.txt")]}]})
    hits = await engine.search([collection], "sourdough bread cats", top_k=5, where=either)
    assert sorted(names(hits)) == ["baking.txt", "cats.txt"]
    for bad in ({"type": "eq", "key": "x"}, {"type": "like", "key": "x", "value": 1}, {"type": "and", "filters": []},
                {"type": "eq", "key": "bad key!", "value": 1}):
        with pytest.raises(ValueError):
            parse_filter(bad)


async def test_collections_adhoc_and_missing(engine: RagEngine, tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFound):
        await engine.get("nope")
    engine.settings = engine.settings.__class__(**{**engine.settings.__dict__, "allowed_paths": (str(tmp_path),)})
    folder = corpus.write(tmp_path / "corpus")
    first = await engine.adhoc([str(folder / "cats.txt"), str(folder / "baking.txt")])
    second = await engine.adhoc([str(folder / "baking.txt"), str(folder / "cats.txt")])
    assert first.id == second.id and first.documents == 2  # keyed by content: built once
    with pytest.raises(InvalidRequest):
        await engine.adhoc(["/etc/hostname"])
    with pytest.raises(InvalidRequest, match="none of the sources could be read"):
        await engine.adhoc([str(tmp_path / "missing.txt")])
    other = await engine.get_or_create("other")
    await engine.ingest(other, [str(folder / "travel.txt")])
    both = await engine.search([first, other], "night train to Venice", top_k=2)
    assert names(both)[0] == "travel.txt" and {h.collection for h in both} == {first.name, "other"}


def test_rrf_fuses_ranks() -> None:
    fused = rrf([[("a", 0.9), ("b", 0.8)], [("b", 5.0), ("c", 1.0)]])
    assert [item for item, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx((1 / 62 + 1 / 61) / (2 / 61))


async def test_keyword_search_skips_words_most_chunks_contain(engine: RagEngine, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.rag import sqlite_store

    folder = tmp_path / "common"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.txt").write_text(f"shared words everywhere, item {i}" + (" unicorns" if i == 3 else ""))
    collection = await engine.get_or_create("common")
    await engine.ingest(collection, [str(folder)])
    monkeypatch.setattr(sqlite_store, "COMMON_WORD_FLOOR", 1)
    monkeypatch.setattr(sqlite_store, "COMMON_WORD_SHARE", 0.2)
    store = engine.store
    assert store._match("shared everywhere unicorns") == '"unicorns"'  # type: ignore[attr-defined]
    assert store._match("shared everywhere") in ('"shared"', '"everywhere"')  # all common: the rarest stays
    assert store._match("missing") is None
    hits = await engine.search([collection], "shared everywhere unicorns", top_k=3, mode="keyword")
    assert [Path(h.source).name for h in hits] == ["3.txt"]
    (folder / "3.txt").write_text("no magic here")  # the vocabulary follows changes to the index
    await engine.ingest(collection, [str(folder)])
    assert store._match("unicorns") is None  # type: ignore[attr-defined]


async def test_a_config_without_embedding_models_uses_the_builtin_local_model(tmp_path: Path) -> None:
    config = parse_config(f"""
providers: {{demo: {{type: mock}}}}
models: {{demo: {{provider: demo, model: mock-1}}}}
rag: {{store: {{type: sqlite, path: "{tmp_path}/rag.db"}}}}
""", {})
    assert config.rag.embedding_model == "local-embedding"
    engine = engine_for(Gateway(config))
    collection = await engine.get_or_create("plain")
    await engine.ingest(collection, [str(corpus.write(tmp_path / "corpus"))])
    hits = await engine.search([collection], "how long do kittens doze", top_k=1, mode="dense")
    assert names(hits) == ["cats.txt"]
    await engine.aclose()
