"""Documents -> chunks: `fixed_size`, `character`, `recursive`, `token`, `semantic`.

Sizes are characters except for `token` (tokens of an OpenAI encoding,
counted offline by `bpe-openai`, which ships cl100k/o200k in its wheel —
tiktoken would download them on first use). Each part of a document (a PDF
page, a Markdown section) is chunked on its own, so every chunk has one
`page` and one `section`; `chunk_index` counts across the document.
`semantic` needs the embeddings of the document's sentences: the caller
computes them (through the router) from `sentences_of` and passes them in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from proxy.rag.loaders import Document

STRATEGIES = ("fixed_size", "character", "recursive", "token", "semantic")


@dataclass(frozen=True)
class ChunkSettings:
    strategy: str = "recursive"
    chunk_size: int = 1000
    chunk_overlap: int = 200
    separators: tuple[str, ...] = ("\n\n", "\n", ". ", " ", "")
    encoding: str = "cl100k_base"  # for `token`
    breakpoint_percentile: float = 95.0  # for `semantic`: break at the largest 5% of sentence-to-sentence jumps

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> ChunkSettings:
        known = {k: v for k, v in (raw or {}).items() if k in cls.__dataclass_fields__}
        if "separators" in known:
            known["separators"] = tuple(known["separators"])
        settings = cls(**known)
        if settings.strategy not in STRATEGIES:
            raise ValueError(f"unknown chunking strategy {settings.strategy!r} (one of {', '.join(STRATEGIES)})")
        if settings.chunk_size < 1 or not 0 <= settings.chunk_overlap < settings.chunk_size:
            raise ValueError("chunk_size must be >= 1 and 0 <= chunk_overlap < chunk_size")
        return settings

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap}


@dataclass(frozen=True)
class Chunk:
    content: str
    source: str
    chunk_index: int
    page: int | None = None
    section: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the document's attributes


def chunk_document(document: Document, settings: ChunkSettings,
                   sentence_vectors: Sequence[Sequence[float]] | None = None) -> list[Chunk]:
    """The chunks of one document (for `semantic`, with the vectors of `sentences_of(document)`)."""
    texts_per_part: list[list[str]]
    if settings.strategy == "semantic":
        if sentence_vectors is None:
            raise ValueError("semantic chunking needs the sentence embeddings")
        texts_per_part, offset = [], 0
        for part in document.parts:
            sentences = split_sentences(part.text)
            vectors = sentence_vectors[offset:offset + len(sentences)]
            offset += len(sentences)
            texts_per_part.append(semantic_split(sentences, vectors, settings))
    else:
        split = _SPLITTERS[settings.strategy]
        texts_per_part = [split(part.text, settings) for part in document.parts]
    chunks: list[Chunk] = []
    for part, texts in zip(document.parts, texts_per_part):
        for text in texts:
            if text.strip():
                chunks.append(Chunk(text.strip(), document.source, len(chunks), part.page, part.section,
                                    dict(document.attributes)))
    return chunks


def sentences_of(document: Document) -> list[str]:
    return [s for part in document.parts for s in split_sentences(part.text)]


# -- splitters --------------------------------------------------------------------
def fixed_size(text: str, settings: ChunkSettings) -> list[str]:
    step = settings.chunk_size - settings.chunk_overlap
    return [text[i:i + settings.chunk_size] for i in range(0, max(len(text) - settings.chunk_overlap, 1), step)]


def character(text: str, settings: ChunkSettings) -> list[str]:
    separator = settings.separators[0] if settings.separators else "\n\n"
    return merge_splits(_split_keep(text, separator), settings.chunk_size, settings.chunk_overlap)


def recursive(text: str, settings: ChunkSettings) -> list[str]:
    return merge_splits(_recursive_pieces(text, settings.separators, settings.chunk_size),
                        settings.chunk_size, settings.chunk_overlap)


def _recursive_pieces(text: str, separators: Sequence[str], size: int) -> list[str]:
    """Pieces no longer than `size`, split at the coarsest separator that occurs, finer ones inside."""
    if len(text) <= size:
        return [text]
    for i, separator in enumerate(separators):
        if separator == "" or separator in text:
            finer = separators[i + 1:]
            pieces = _split_keep(text, separator) if separator else list(text)
            out: list[str] = []
            for piece in pieces:
                out.extend([piece] if len(piece) <= size or not finer else _recursive_pieces(piece, finer, size))
            return out
    return [text]


def _split_keep(text: str, separator: str) -> list[str]:
    """Split after each separator, keeping it on the left piece (nothing is lost)."""
    pieces = text.split(separator)
    return [p + separator for p in pieces[:-1]] + [pieces[-1]]


def merge_splits(splits: Sequence[str], size: int, overlap: int) -> list[str]:
    """Greedy packing of small pieces into chunks of at most `size`, repeating up to `overlap` at the seams."""
    chunks: list[str] = []
    current: list[str] = []
    total = 0
    for piece in splits:
        if current and total + len(piece) > size:
            chunks.append("".join(current))
            while current and (total > overlap or total + len(piece) > size):
                total -= len(current.pop(0))
        current.append(piece)
        total += len(piece)
    if current:
        chunks.append("".join(current))
    return chunks


@cache
def token_encoding(name: str) -> Any:
    """An OpenAI BPE encoding from the `bpe-openai` wheel (tiktoken-compatible API, no download)."""
    import bpe_openai

    return bpe_openai.get_encoding(name)


def token(text: str, settings: ChunkSettings) -> list[str]:
    encoding = token_encoding(settings.encoding)
    ids = encoding.encode_ordinary(text)
    step = settings.chunk_size - settings.chunk_overlap
    # A window may cut a multi-byte character in two: its broken bytes are dropped, not replaced.
    return [encoding.decode(ids[i:i + settings.chunk_size], errors="ignore")
            for i in range(0, max(len(ids) - settings.chunk_overlap, 1), step)]


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    return len(token_encoding(encoding).encode_ordinary(text))


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n{2,}")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def semantic_split(sentences: Sequence[str], vectors: Sequence[Sequence[float]], settings: ChunkSettings) -> list[str]:
    """Group adjacent sentences; break where similarity drops most (a percentile of the jumps) or at chunk_size."""
    if not sentences:
        return []
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    distances = 1.0 - np.einsum("ij,ij->i", matrix[:-1], matrix[1:]) if len(sentences) > 1 else np.zeros(0)
    threshold = float(np.percentile(distances, settings.breakpoint_percentile)) if len(distances) else 1.0
    chunks: list[str] = []
    current = [sentences[0]]
    for sentence, distance in zip(sentences[1:], distances):
        if distance > threshold or sum(map(len, current)) + len(sentence) > settings.chunk_size:
            chunks.append(" ".join(current))
            current = []
        current.append(sentence)
    chunks.append(" ".join(current))
    return chunks


_SPLITTERS: dict[str, Callable[[str, ChunkSettings], list[str]]] = {
    "fixed_size": fixed_size,
    "character": character,
    "recursive": recursive,
    "token": token,
}
