"""The FAISS store beyond the conformance rows: its index files, their reload and repair, and the gateway on it.

The conformance rows (tests/test_rag_stores.py) run against it through tests/rag/stores/faiss.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

pytest.importorskip("faiss", reason="RAG STORE 'faiss' NOT TESTED: pip install 'omni-llm[faiss]'")

from proxy.cli import main  # noqa: E402
from proxy.config import ConfigError, parse_config  # noqa: E402
from proxy.errors import ProviderUnavailable  # noqa: E402
from proxy.rag.search import parse_filter  # noqa: E402
from proxy.rag.store import open_store  # noqa: E402
from proxy.rag.stores.faiss import FaissStore  # noqa: E402
from tests.proxy_server import RunningProxy, omni_llm_command, run_proxy  # noqa: E402
from tests.rag.documents import MARKDOWN, write_corpus  # noqa: E402
from tests.test_rag_stores import DIMS, contents, document, new_collection, vector  # noqa: E402
from tests.rag.gateway import gateway_yaml


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FaissStore]:
    opened = open_store({"type": "faiss", "path": str(tmp_path / "index")})
    assert isinstance(opened, FaissStore)
    yield opened
    opened.close()


def forbid_rebuild(store: FaissStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the index was rebuilt from SQLite instead of read from its file")

    monkeypatch.setattr(store, "_build", refuse)


def test_index_file_beside_meta_db_and_reloaded_after_another_instance_writes(
        store: FaissStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = new_collection(store)
    store.write_documents(cid, [document("a.txt", ["alpha", "beta"], [0, 1])])
    names = {p.name for p in (tmp_path / "index").iterdir()}
    assert {"meta.db", f"{cid}.faiss"} <= names and not any(n.endswith(".tmp") for n in names)
    assert contents(store, store.dense([cid], vector(1), 1)) == ["beta"]

    other = open_store({"type": "faiss", "path": str(tmp_path / "index")})
    assert isinstance(other, FaissStore)
    forbid_rebuild(other, monkeypatch)
    try:
        assert contents(other, other.dense([cid], vector(0), 1)) == ["alpha"], "read from the file"
        before = store.index_path(cid).stat()
        other.write_documents(cid, [document("c.txt", ["gamma"], [2])])
        after = store.index_path(cid).stat()
        assert after.st_ino != before.st_ino, "the file is replaced (a new inode), never rewritten in place"
    finally:
        other.close()
    forbid_rebuild(store, monkeypatch)
    assert contents(store, store.dense([cid], vector(2), 1)) == ["gamma"], "the first instance reloaded the file"
    assert len(store.dense([cid], vector(0), 10)) == 3


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "stale"])
def test_a_missing_corrupt_or_stale_index_file_is_rebuilt_from_the_stored_vectors(
        tmp_path: Path, damage: str) -> None:
    path = str(tmp_path / "index")
    store = FaissStore(path)
    cid = new_collection(store)
    store.write_documents(cid, [document("a.txt", ["alpha", "beta"], [0, 1])])
    old = store.index_path(cid).read_bytes()
    store.write_documents(cid, [document("b.txt", ["gamma"], [2])])
    store.close()
    file = Path(path) / f"{cid}.faiss"
    good = file.read_bytes()
    if damage == "missing":
        file.unlink()
    elif damage == "garbage":
        file.write_bytes(b"not an index at all")
    elif damage == "truncated":
        file.write_bytes(good[:len(good) // 2])
    else:  # a crash between writing the file and COMMIT leaves a file of another version
        file.write_bytes(old)

    reopened = FaissStore(path)
    try:
        ranked = reopened.dense([cid], vector(2), 5)
        assert contents(reopened, ranked)[0] == "gamma" and len(ranked) == 3
        assert ranked[0][1] == pytest.approx(1.0, abs=1e-5)
        assert file.read_bytes() == good, "the rebuilt index is saved again, as the write had saved it"
    finally:
        reopened.close()


def test_filtered_dense_search_loses_nothing(store: FaissStore) -> None:
    """The allowed rows are the worst matches of a large collection: a top-k then filter would return none."""
    cid = new_collection(store)
    rng = np.random.default_rng(3)
    near = rng.normal(size=(2000, DIMS)).astype(np.float32) * 0.05 + vector(0)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    bulk = document("bulk.txt", [f"bulk {i}" for i in range(2000)], [0] * 2000)
    store.write_documents(cid, [bulk.__class__(bulk.document, bulk.chunks, near),
                                document("far.txt", ["far 0", "far 1", "far 2"], [4, 5, 6])])
    where = parse_filter({"type": "eq", "key": "source", "value": "far.txt"})
    ranked = store.dense([cid], vector(0), 5, where)
    assert sorted(contents(store, ranked)) == ["far 0", "far 1", "far 2"]
    assert store.dense([cid], vector(0), 5, parse_filter({"type": "eq", "key": "source", "value": "none"})) == []


def test_deleting_a_collection_removes_its_index_file(store: FaissStore) -> None:
    cid = new_collection(store)
    store.write_documents(cid, [document("a.txt", ["alpha"], [0])])
    assert store.index_path(cid).exists()
    assert store.delete_document(cid, "a.txt") is True
    assert store.dense([cid], vector(0), 5) == [] and store.index_path(cid).exists()
    store.delete_collection(cid)
    assert not store.index_path(cid).exists()


def test_config_needs_a_path_and_a_usable_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rag.store.path"):
        parse_config("rag: {store: {type: faiss}}", {})
    with pytest.raises(ConfigError, match="rag.store.url"):
        parse_config(f"rag: {{store: {{type: faiss, path: '{tmp_path}', url: 'http://x'}}}}", {})
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ProviderUnavailable, match="faiss RAG store"):
        open_store({"type": "faiss", "path": str(blocker)})


# -- the gateway on a faiss store -------------------------------------------------------------
def gateway_config(data: Path) -> str:
    return gateway_yaml(f'{{type: faiss, path: "{data}/faiss"}}')


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, Path]]:
    data = tmp_path_factory.mktemp("rag-faiss")
    with run_proxy(gateway_config(data)) as running:
        yield running, data


def test_chat_with_rag_through_the_server_and_a_cli_ingest_it_sees(served: tuple[RunningProxy, Path]) -> None:
    proxy, data = served
    client = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)
    guide = client.files.create(file=("guide.md", MARKDOWN.encode()), purpose="assistants")
    handbook = client.vector_stores.create(name="handbook", file_ids=[guide.id])
    assert handbook.status == "completed" and handbook.file_counts.completed == 1
    assert (data / "faiss" / f"{handbook.id}.faiss").exists()
    completion = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "How many days do I have to ask for a refund?"}],
        extra_body={"rag": {"collection": "handbook", "top_k": 2, "search": "dense"}})
    context = completion.model_extra["rag_context"]  # type: ignore[index]
    assert context[0]["source"] == "guide.md" and context[0]["section"] == "Refunds" and 0 < context[0]["score"] <= 1
    filtered = client.vector_stores.search(handbook.id, query="refund", filters={
        "type": "eq", "key": "source", "value": "nothing-else.md"})
    assert filtered.data == []

    # Another process (the CLI) ingests while the server runs: the server reloads the index file.
    config_path = data / "cli.yaml"
    config_path.write_text(gateway_config(data))
    (data / "docs").mkdir()
    (data / "docs" / "owls.md").write_text("# Owls\nBarn owls hunt voles at night by sound alone.")
    done = subprocess.run([*omni_llm_command(), "rag", "ingest", "handbook", str(data / "docs"),
                           "--config", str(config_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    completion = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "How do barn owls find voles?"}],
        extra_body={"rag": {"collection": "handbook", "top_k": 1, "search": "dense"}})
    assert completion.model_extra["rag_context"][0]["section"] == "Owls"  # type: ignore[index]


def test_cli_ingest_list_search_delete_on_faiss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(gateway_config(tmp_path))
    write_corpus(tmp_path / "corpus")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["rag", *argv, "--config", str(config)])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = run("ingest", "docs", str(tmp_path / "corpus"), "--chunk-size", "300")
    assert code == 0 and "docs: 5 file(s) ingested" in out, err
    files = list((tmp_path / "faiss").glob("vs_*.faiss"))
    assert len(files) == 1
    code, out, _ = run("ingest", "docs", str(tmp_path / "corpus"))
    assert code == 0 and "5 unchanged" in out
    code, out, _ = run("search", "docs", "Nordwind Shipping revenue", "--top-k", "1", "--search", "dense")
    assert code == 0 and "report.pdf p.2" in out and "42 million" in out
    code, out, _ = run("delete", "docs")
    assert code == 0 and "deleted collection 'docs'" in out
    assert not files[0].exists()
