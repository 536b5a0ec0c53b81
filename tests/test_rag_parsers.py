"""RAG loaders and parsers on real files the tests write: PDF pages, DOCX and Markdown sections, HTML text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.errors import InvalidRequest
from proxy.rag.loaders import Document, Skipped, document_from_bytes, load_sources
from proxy.rag.parsers import from_html, from_markdown, parse_document
from tests.rag.documents import DOCX_SECTIONS, HTML, PDF_PAGES, write_corpus, write_docx, write_pdf


def test_pdf_keeps_page_numbers_from_one(tmp_path: Path) -> None:
    parts = parse_document("r.pdf", write_pdf(tmp_path / "r.pdf").read_bytes())
    assert [p.page for p in parts] == [1, 2, 3]
    for part, text in zip(parts, PDF_PAGES):
        assert " ".join(part.text.split()) == text


def test_docx_headings_become_sections(tmp_path: Path) -> None:
    parts = parse_document("h.docx", write_docx(tmp_path / "h.docx").read_bytes())
    assert [(p.section, p.text.splitlines()[-1]) for p in parts] == DOCX_SECTIONS


def test_html_main_text_only() -> None:
    parts = from_html(HTML)
    text = "\n".join(p.text for p in parts)
    assert "six hours of direct sunlight" in text and "strong jet of water" in text
    for dropped in ("SECRET_SCRIPT_TEXT", "color: red", "NAVIGATION_LINKS", "FOOTER_TEXT"):
        assert dropped not in text
    assert [p.section for p in parts] == ["Tomatoes", "Pests"]


def test_html_without_main_keeps_the_body_but_not_scripts() -> None:
    parts = from_html("<html><body><h2>A</h2><p>alpha <b>beta</b></p><script>x=1</script><p>gamma</p></body></html>")
    assert [(p.section, p.text) for p in parts] == [("A", "A\n\nalpha beta\n\ngamma")]


def test_markdown_headings_are_sections_outside_code_fences() -> None:
    parts = [p for p in from_markdown("intro\n# One\ntext 1\n```\n# code\n```\n## Two\ntext 2\n") if p.text.strip()]
    assert [p.section for p in parts] == [None, "One", "Two"]
    assert "# code" in parts[1].text


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("photo.png", b"\x89PNG", "unsupported file type '.png'"),
    ("noext", b"hello", "unsupported file type '(no extension)'"),
    ("broken.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
    ("broken.docx", b"PK not a zip", "not a readable DOCX"),
    ("empty.txt", b"   \n", "no text found"),
    ("binary.txt", b"ab\x00cd", "binary content in a text file"),
])
def test_unsupported_and_unreadable_files_are_skipped_by_name(name: str, data: bytes, reason: str) -> None:
    result = document_from_bytes(name, data)
    assert isinstance(result, Skipped) and result.source == name and result.reason.startswith(reason)


async def test_a_folder_loads_every_format_and_names_what_it_skipped(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "corpus")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD.txt").write_text("ignored")
    documents, skipped = await load_sources([str(folder)])
    assert sorted(Path(d.source).name for d in documents) == ["facts.txt", "garden.html", "guide.md", "handbook.docx",
                                                              "report.pdf"]
    assert {Path(s.source).name: s.reason.split(" (")[0] for s in skipped} == {
        "photo.png": "unsupported file type", "broken.pdf": "not a readable PDF"}
    assert all(isinstance(d, Document) and len(d.content_hash) == 64 for d in documents)
    missing_docs, missing = await load_sources([str(tmp_path / "nope")])
    assert missing_docs == [] and missing[0].reason == "no such file or directory"


async def test_request_sources_must_lie_under_allowed_paths(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.txt").write_text("fine")
    secret = tmp_path / "secret.txt"
    secret.write_text("server secret")
    os.symlink(secret, allowed / "link.txt")
    documents, skipped = await load_sources([str(allowed)], allowed_paths=[str(allowed)])
    assert [Path(d.source).name for d in documents] == ["ok.txt"]
    assert [(Path(s.source).name, s.reason) for s in skipped] == [("link.txt", "links outside rag.allowed_paths")]
    for outside in (str(secret), str(allowed / ".." / "secret.txt"), "/etc/passwd", str(allowed / "link.txt")):
        with pytest.raises(InvalidRequest) as caught:
            await load_sources([outside], allowed_paths=[str(allowed)], param="rag.sources")
        assert caught.value.param == "rag.sources" and "allowed_paths" in caught.value.message
    with pytest.raises(InvalidRequest):
        await load_sources([str(allowed)], allowed_paths=[])


async def test_url_sources_use_the_safe_fetcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.fakes.server import serve_app

    async def page(request: object) -> Response:
        return Response(HTML, media_type="text/html; charset=utf-8")

    with serve_app(Starlette(routes=[Route("/garden", page)])) as url:
        monkeypatch.delenv("OMNI_LLM_ALLOW_PRIVATE_IMAGE_URLS", raising=False)
        documents, skipped = await load_sources([url + "/garden"])
        assert documents == [] and "not a public address" in skipped[0].reason  # the gateway never fetches inside
        monkeypatch.setenv("OMNI_LLM_ALLOW_PRIVATE_IMAGE_URLS", "1")  # tests only: serve from 127.0.0.1
        documents, skipped = await load_sources([url + "/garden", url + "/missing"])
    assert [d.source for d in documents] == [url + "/garden"]
    assert [p.section for p in documents[0].parts] == ["Tomatoes", "Pests"]  # HTML by its media type
    assert skipped[0].source == url + "/missing" and "404" in skipped[0].reason
