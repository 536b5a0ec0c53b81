"""Real documents for the RAG tests, written by the tests themselves (PDF, DOCX, HTML, Markdown, text)."""

from __future__ import annotations

from pathlib import Path

# A small corpus with known answers: each question below is answered by exactly one file / page / section.
PDF_PAGES = [
    "Chapter one. The lighthouse keeper lit the lamp every evening at dusk.",
    "Chapter two. The quarterly revenue of Nordwind Shipping rose to 42 million euros.",
    "Chapter three. Penguins huddle together to survive the Antarctic winter storms.",
]
MARKDOWN = """# Installation
Run the installer and accept the licence. The service listens on port 8000 by default.

# Refunds
Customers may request a refund within 30 days of purchase. Refunds go back to the original card.

```
# not a heading: inside a code fence
```

## Security
API keys are compared in constant time and never written to the logs.
"""
HTML = """<!doctype html><html><head><title>Garden</title><style>body { color: red }</style>
<script>var tracking = "SECRET_SCRIPT_TEXT";</script></head>
<body><nav>Home | About | NAVIGATION_LINKS</nav>
<main><h1>Tomatoes</h1><p>Tomatoes need six hours of direct sunlight and deep watering twice a week.</p>
<h2>Pests</h2><p>Aphids on tomato plants can be washed off with a strong jet of water.</p></main>
<footer>FOOTER_TEXT copyright</footer></body></html>"""
DOCX_SECTIONS = [
    ("Onboarding", "New employees receive a laptop and a badge on their first day."),
    ("Travel policy", "Train travel is preferred for journeys shorter than four hours."),
]
TEXT = "The capital of Australia is Canberra, not Sydney. Canberra was purpose-built as the capital."


def write_pdf(path: Path, pages: list[str] = PDF_PAGES) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def write_docx(path: Path, sections: list[tuple[str, str]] = DOCX_SECTIONS) -> Path:
    import docx

    document = docx.Document()
    for heading, body in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(body)
    document.save(str(path))
    return path


def write_corpus(folder: Path) -> Path:
    """One file of each format in `folder` (plus an unsupported and an unreadable one)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_pdf(folder / "report.pdf")
    write_docx(folder / "handbook.docx")
    (folder / "garden.html").write_text(HTML)
    (folder / "guide.md").write_text(MARKDOWN)
    (folder / "facts.txt").write_text(TEXT)
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    return folder
