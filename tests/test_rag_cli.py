"""`omni-llm rag ingest | list | search | delete`: output, skipped files on stderr, exit status 0 / 1 / 2."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from proxy.cli import main
from tests.rag.documents import write_corpus
from tests.rag.s3 import S3_ENV, moto_s3


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(f"""
providers:
  local: {{type: local}}
models:
  local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}
rag:
  store: {{type: sqlite, path: "{tmp_path}/rag.db"}}
  collections:
    declared: {{sources: ["{tmp_path}/corpus/guide.md"], chunking: {{strategy: token, chunk_size: 50, chunk_overlap: 10}}}}
""")
    write_corpus(tmp_path / "corpus")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["rag", *argv])
    except SystemExit as exc:  # argparse: bad usage
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_list_search_delete(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ingest", "docs", str(tmp_path / "corpus"), "--chunk-size", "300", "--config", config)
    assert code == 0, err
    assert "docs: 5 file(s) ingested" in out and "2 skipped" in out
    assert f"skipped {tmp_path}/corpus/photo.png: unsupported file type" in err
    assert f"skipped {tmp_path}/corpus/broken.pdf: not a readable PDF" in err
    code, out, _ = run(capsys, "ingest", "docs", str(tmp_path / "corpus"), "--config", config)
    assert code == 0 and "0 file(s) ingested (0 chunks), 5 unchanged" in out
    code, out, _ = run(capsys, "list", "--config", config)
    assert code == 0 and out.splitlines()[0].split()[:4] == ["COLLECTION", "ID", "FILES", "CHUNKS"]
    row = next(line for line in out.splitlines() if line.startswith("docs "))
    assert row.split()[2] == "5" and row.split()[-1] == "local-embedding"
    code, out, _ = run(capsys, "search", "docs", "Nordwind Shipping revenue", "--top-k", "1", "--config", config)
    assert code == 0 and out.startswith("[1] ") and "report.pdf p.2" in out and "42 million" in out
    code, out, _ = run(capsys, "delete", "docs", "--config", config)
    assert code == 0 and "deleted collection 'docs' (5 files" in out
    code, _, err = run(capsys, "search", "docs", "anything", "--config", config)
    assert code == 1 and "collection 'docs' does not exist" in err


def test_declared_collections_ingest_their_own_sources(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ingest", "declared", "--config", config)
    assert code == 0, err
    assert "declared: 1 file(s) ingested" in out
    code, out, _ = run(capsys, "search", "declared", "refund", "--search", "keyword", "--config", config)
    assert code == 0 and "§ Refunds" in out


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["ingest", "x", "{tmp}/corpus/photo.png"], 1, "nothing could be ingested into 'x'"),
    (["ingest", "x", "{tmp}/nowhere"], 1, "nothing could be ingested into 'x'"),
    (["delete", "ghost"], 1, "collection 'ghost' does not exist"),
    (["ingest", "undeclared"], 2, "collection 'undeclared' is not declared"),
    (["ingest", "x", "{tmp}/corpus", "--chunk-size", "10", "--chunk-overlap", "10"], 2, "chunk_overlap"),
    (["ingest", "x", "{tmp}/corpus", "--strategy", "magic"], 2, "invalid choice"),
    (["search", "x"], 2, "required"),
    (["search", "x", "q", "--top-k", "0"], 2, "--top-k must be at least 1"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_exit_status(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int,
                     message: str) -> None:
    got, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv], "--config", config)
    assert (got, message in err) == (code, True), err


def test_ingest_from_s3(config: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                        tmp_path: Path) -> None:
    with moto_s3() as endpoint:
        for key, value in {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint}.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="cli-bucket")
        for path in sorted((tmp_path / "corpus").iterdir()):
            s3.put_object(Bucket="cli-bucket", Key=f"team/{path.name}", Body=path.read_bytes())
        code, out, err = run(capsys, "ingest", "from-s3", "s3://cli-bucket/team/", "--config", config)
    assert code == 0, err
    assert "from-s3: 5 file(s) ingested" in out and "skipped s3://cli-bucket/team/photo.png" in err


def test_a_failed_first_ingest_leaves_no_empty_collection(config: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "ingest", "x", str(tmp_path / "corpus" / "photo.png"), "--config", config)[0] == 1
    assert run(capsys, "list", "--config", config)[1].count("\n") == 1  # the header only
