"""RAG chunkers: sizes, overlaps, boundaries and per-chunk metadata for every strategy."""

from __future__ import annotations

import pytest

from proxy.rag.chunking import ChunkSettings, chunk_document, count_tokens, semantic_split, split_sentences, token_encoding
from proxy.rag.loaders import Document
from proxy.rag.parsers import Part

WORDS = " ".join(f"word{i}" for i in range(400))  # 400 words, ~3,000 characters
PROSE = "\n\n".join(
    ". ".join(f"Paragraph {p} sentence {s} talks about topic {p}" for s in range(6)) + "." for p in range(8))


def doc(*parts: Part, attributes: dict[str, str] | None = None) -> Document:
    return Document("src.txt", parts, "h", 1, attributes or {})


def settings(strategy: str, size: int, overlap: int, **more: object) -> ChunkSettings:
    return ChunkSettings.from_mapping({"strategy": strategy, "chunk_size": size, "chunk_overlap": overlap, **more})


def test_fixed_size_windows_overlap_exactly() -> None:
    text = "".join(chr(97 + i % 26) for i in range(2500))
    chunks = chunk_document(doc(Part(text)), settings("fixed_size", 1000, 200))
    assert [len(c.content) for c in chunks] == [1000, 1000, 900]
    assert chunks[0].content[-200:] == chunks[1].content[:200]
    assert chunks[1].content[-200:] == chunks[2].content[:200]


@pytest.mark.parametrize("strategy", ["character", "recursive"])
def test_boundary_splitters_respect_size_and_lose_nothing(strategy: str) -> None:
    chunks = chunk_document(doc(Part(PROSE)), settings(strategy, 400, 0))
    assert len(chunks) > 3
    assert all(len(c.content) <= 400 for c in chunks)
    assert " ".join(" ".join(c.content.split()) for c in chunks) == " ".join(PROSE.split())


def test_recursive_prefers_paragraphs_then_sentences() -> None:
    chunks = chunk_document(doc(Part(PROSE)), settings("recursive", 400, 0))
    assert all(c.content.startswith("Paragraph") for c in chunks)
    assert all(c.content.endswith(".") for c in chunks)


def test_recursive_overlap_repeats_the_seam() -> None:
    chunks = chunk_document(doc(Part(WORDS)), settings("recursive", 300, 60))
    assert all(len(c.content) <= 300 for c in chunks)
    for first, second in zip(chunks, chunks[1:]):
        tail = first.content.split()[-3:]
        assert " ".join(tail) in second.content  # the end of a chunk starts the next one


def test_custom_separators() -> None:
    text = "a|b|c|d|e|f"
    chunks = chunk_document(doc(Part(text)), settings("recursive", 4, 0, separators=["|"]))
    assert [c.content for c in chunks] == ["a|b|", "c|d|", "e|f"]


def test_token_chunks_count_tokens_offline() -> None:
    chunks = chunk_document(doc(Part(WORDS)), settings("token", 100, 20))
    counts = [count_tokens(c.content) for c in chunks]
    assert all(95 <= n <= 101 for n in counts[:-1]) and counts[-1] <= 100
    ids = token_encoding("cl100k_base").encode_ordinary(WORDS)
    assert len(chunks) == -(-(len(ids) - 20) // 80)
    assert token_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]


def test_token_windows_never_split_a_character_into_garbage() -> None:
    chunks = chunk_document(doc(Part("日本語のテキスト " * 50)), settings("token", 7, 2))
    assert all("\ufffd" not in c.content for c in chunks)


def test_semantic_breaks_where_the_topic_changes() -> None:
    sentences = ["Cats purr.", "Cats nap a lot.", "Cats chase mice.", "Stocks fell.", "Bonds rose.", "Markets closed."]
    vectors = [[1.0, 0.1, 0.0]] * 3 + [[0.0, 0.1, 1.0]] * 3
    chunks = semantic_split(sentences, vectors, settings("semantic", 1000, 0, breakpoint_percentile=80))
    assert chunks == ["Cats purr. Cats nap a lot. Cats chase mice.", "Stocks fell. Bonds rose. Markets closed."]
    capped = semantic_split(sentences, vectors, settings("semantic", 30, 0))
    assert all(len(c) <= 30 or " " not in c for c in capped) and len(capped) > 2


def test_semantic_chunk_document_uses_sentence_vectors_per_part() -> None:
    document = doc(Part("A one. A two.", page=1), Part("B one. B two.", page=2))
    assert split_sentences("A one. A two.") == ["A one.", "A two."]
    chunks = chunk_document(document, settings("semantic", 1000, 0), [[1, 0], [1, 0], [0, 1], [0, 1]])
    assert [(c.content, c.page) for c in chunks] == [("A one. A two.", 1), ("B one. B two.", 2)]


def test_every_chunk_carries_source_page_section_index_and_attributes() -> None:
    document = doc(Part("page one text " * 20, page=1, section="Intro"), Part("page two text " * 20, page=2),
                   attributes={"team": "docs"})
    chunks = chunk_document(document, settings("recursive", 120, 0))
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == {1, 2}
    assert all(c.source == "src.txt" and c.metadata == {"team": "docs"} for c in chunks)
    assert all((c.section == "Intro") == (c.page == 1) for c in chunks)


@pytest.mark.parametrize("bad", [{"strategy": "magic"}, {"chunk_size": 0}, {"chunk_size": 10, "chunk_overlap": 10}])
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ChunkSettings.from_mapping(bad)
