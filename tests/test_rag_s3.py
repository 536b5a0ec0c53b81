"""RAG sources from S3: a real S3-compatible server (moto, 127.0.0.1), found through AWS_ENDPOINT_URL_S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from proxy.rag import loaders
from proxy.rag.loaders import load_sources
from tests.rag.documents import HTML, MARKDOWN, TEXT, write_pdf
from tests.rag.s3 import S3_ENV, moto_s3


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint}.items():
        monkeypatch.setenv(key, value)
    name = f"docs-{tmp_path.name[-8:].lower().replace('_', '-')}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=name)
    objects = {"handbook/guide.md": MARKDOWN.encode(), "handbook/facts.txt": TEXT.encode(),
               "handbook/web/garden.html": HTML.encode(), "handbook/photo.png": b"\x89PNG\r\n",
               "handbook/report.pdf": write_pdf(tmp_path / "r.pdf").read_bytes(), "elsewhere/other.txt": b"not me"}
    for key, body in objects.items():
        s3.put_object(Bucket=name, Key=key, Body=body)
    return name


async def test_a_prefix_loads_every_supported_object(bucket: str) -> None:
    documents, skipped = await load_sources([f"s3://{bucket}/handbook/"])
    assert sorted(d.source for d in documents) == [f"s3://{bucket}/handbook/{key}" for key in (
        "facts.txt", "guide.md", "report.pdf", "web/garden.html")]
    assert [(s.source, s.reason) for s in skipped] == [(f"s3://{bucket}/handbook/photo.png", "unsupported file type")]
    pdf = next(d for d in documents if d.source.endswith(".pdf"))
    assert [p.page for p in pdf.parts] == [1, 2, 3]


async def test_listing_follows_pages(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "S3_PAGE_SIZE", 2)  # 5 objects: three pages
    documents, skipped = await load_sources([f"s3://{bucket}/handbook"])
    assert len(documents) == 4 and len(skipped) == 1


async def test_a_missing_bucket_is_reported_by_name(bucket: str) -> None:
    documents, skipped = await load_sources(["s3://no-such-bucket-here/x"])
    assert documents == [] and skipped[0].source == "s3://no-such-bucket-here/x"
    assert skipped[0].reason == "cannot list (NoSuchBucket)"
