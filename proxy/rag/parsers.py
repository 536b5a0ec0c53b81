"""File bytes -> text parts with their page (PDF) or section (headings of Markdown, HTML, DOCX).

The format comes from the file name's extension (or, for URLs, the media
type). PDF and DOCX use pypdf and python-docx (the `rag` extra), imported on
the first such file; HTML uses the standard library's parser.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Part:
    """A stretch of a document's text that shares one page / section."""

    text: str
    page: int | None = None  # PDF pages count from 1
    section: str | None = None  # the nearest heading above the text


class Unsupported(ValueError):
    """Not a format we read (the file is skipped, by name)."""


class Unreadable(ValueError):
    """A supported format that would not parse (the file is skipped, by name)."""


TEXT_EXTENSIONS = frozenset({".txt", ".text", ".rst", ".csv", ".tsv", ".log", ".json", ".yaml", ".yml", ".xml"})
MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdx"})
HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})
_MEDIA_TYPES = {
    "application/pdf": ".pdf",
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/markdown": ".md",
    "text/plain": ".txt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}


def extension_for(name: str, media_type: str | None = None) -> str:
    suffix = PurePosixPath(name.split("?", 1)[0]).suffix.lower()
    if suffix:
        return suffix
    return _MEDIA_TYPES.get((media_type or "").split(";")[0].strip().lower(), "")


def is_supported(name: str) -> bool:
    ext = extension_for(name)
    return ext in TEXT_EXTENSIONS or ext in MARKDOWN_EXTENSIONS or ext in HTML_EXTENSIONS or ext in (".pdf", ".docx")


def parse_document(name: str, data: bytes, media_type: str | None = None) -> list[Part]:
    """The text parts of one file; raises Unsupported or Unreadable."""
    ext = extension_for(name, media_type)
    if ext == ".pdf":
        parts = from_pdf(data)
    elif ext == ".docx":
        parts = from_docx(data)
    elif ext in HTML_EXTENSIONS:
        parts = from_html(_decode(data))
    elif ext in MARKDOWN_EXTENSIONS:
        parts = from_markdown(_decode(data))
    elif ext in TEXT_EXTENSIONS:
        parts = [Part(_decode(data))]
    else:
        raise Unsupported(f"unsupported file type {ext or '(no extension)'!r}")
    parts = [p for p in parts if p.text.strip()]
    if not parts:
        raise Unreadable("no text found")
    return parts


def _decode(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        raise Unreadable("binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def from_pdf(data: bytes) -> list[Part]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        return [Part(page.extract_text() or "", page=i) for i, page in enumerate(reader.pages, start=1)]
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise Unreadable(f"not a readable PDF ({type(exc).__name__})") from None


def from_docx(data: bytes) -> list[Part]:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Unreadable(f"not a readable DOCX ({type(exc).__name__})") from None
    parts: list[Part] = []
    section: str | None = None
    lines: list[str] = []
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        text = paragraph.text.strip()
        if text and (style.startswith("Heading") or style == "Title"):
            parts.append(Part("\n".join(lines), section=section))
            section, lines = text, [text]
        elif text:
            lines.append(text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    parts.append(Part("\n".join(lines), section=section))
    return parts


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def from_markdown(text: str) -> list[Part]:
    """Split at ATX headings (`# Title`), outside code fences; each part keeps its heading as `section`."""
    parts: list[Part] = []
    section: str | None = None
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else _HEADING.match(line)
        if heading:
            parts.append(Part("\n".join(lines), section=section))
            section, lines = heading.group(2).strip(), [line]
        else:
            lines.append(line)
    parts.append(Part("\n".join(lines), section=section))
    return parts


class _HTMLText(HTMLParser):
    """Visible text of a page: script/style/nav and other chrome dropped, headings as sections.

    When the page marks its main content (`<main>`, `<article>`), only that is kept.
    """

    SKIP = frozenset({"script", "style", "nav", "noscript", "template", "svg", "head", "footer", "aside", "form",
                      "iframe", "button", "select"})
    BLOCK = frozenset({"p", "div", "br", "li", "tr", "section", "article", "main", "header", "pre", "blockquote",
                       "table", "ul", "ol", "dd", "dt", "figcaption", "hr"})
    HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
    MAIN = frozenset({"main", "article"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skipping = 0
        self.main = 0
        self.heading: list[str] | None = None
        self.section: str | None = None
        self.pieces: list[tuple[str | None, bool, str]] = []  # (section, in main, text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.MAIN:
            self.main += 1
        if tag in self.HEADINGS and not self.skipping:
            self.heading = []
        elif tag in self.BLOCK:
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.MAIN:
            self.main = max(0, self.main - 1)
        if tag in self.HEADINGS and self.heading is not None:
            title = " ".join("".join(self.heading).split())
            self.heading = None
            if title:
                self.section = title
                self._emit(f"\n{title}\n")
        elif tag in self.BLOCK:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.heading is not None:
            self.heading.append(data)
        else:
            self._emit(data)

    def _emit(self, text: str) -> None:
        self.pieces.append((self.section, self.main > 0, text))

    def parts(self) -> list[Part]:
        pieces = self.pieces
        if any(in_main and text.strip() for _, in_main, text in pieces):
            pieces = [p for p in pieces if p[1]]
        parts: list[Part] = []
        for section, _, text in pieces:
            if parts and parts[-1].section == section:
                parts[-1] = Part(parts[-1].text + text, section=section)
            else:
                parts.append(Part(text, section=section))
        return [Part(_tidy(p.text), section=p.section) for p in parts if p.text.strip()]


def _tidy(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def from_html(text: str) -> list[Part]:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return parser.parts()
