"""S3-triggered ingestion end to end (issue 19): a real S3-compatible server (moto, 127.0.0.1), S3's own event
shape, delivered (a) to `proxy.lambda_handler.handler` in-process and (b) as the Lambda Web Adapter does, a POST
to the running server's pass-through route `/events`. The collection is then read through the gateway's own
search API (and a chat with `rag`), and a manual `omni-llm rag ingest` must agree with what the events did."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import httpx
import pytest

from tests.proxy_server import omni_llm_command, run_proxy
from tests.rag.s3 import S3_ENV, moto_s3
from tests.rag.s3_events import ENCODED_KEYS, event, record
from tests.rag.gateway import gateway_yaml

KEY = "sk-events-test"
MAX_BYTES = 40_000
CREATED, REMOVED = "ObjectCreated:Put", "ObjectRemoved:Delete"


def config(bucket: str, data: Path) -> str:
    collections = f"""  embedding_model: local-embedding
  collections:
    handbook: {{sources: ["s3://{bucket}/handbook/"]}}
    notes: {{sources: ["{data}/local-notes", "s3://{bucket}/notes/"]}}
    archive: {{sources: ["s3://{bucket}-archive"]}}
"""
    return gateway_yaml(f'{{type: sqlite, path: "{data}/rag.db"}}', rag=collections,
                        server=f'{{api_keys: ["{KEY}"], max_request_bytes: {MAX_BYTES}}}')


@dataclass
class Gateway:
    """One way of reaching the gateway: S3 events in, HTTP (the vector-store search API, chat) out."""

    deliver: Callable[[dict[str, Any]], tuple[bool, dict[str, Any]]]  # event -> (failed?, summary)
    http: Callable[[str, str, dict[str, Any] | None], tuple[int, Any]]  # method, path, JSON body -> status, JSON
    config_path: Path

    def search(self, collection: str, query: str) -> list[tuple[str, str]]:
        """(source, text) of every hit, best first (max 50: the whole of these small collections)."""
        status, body = self.http("POST", f"/v1/vector_stores/{collection}/search",
                                 {"query": query, "max_num_results": 50})
        assert status == 200, body
        return [(hit["filename"], hit["content"][0]["text"]) for hit in body["data"]]

    def sources(self, collection: str) -> set[str]:
        status, body = self.http("POST", f"/v1/vector_stores/{collection}/search", {"query": "anything"})
        if status == 404:  # the collection was never created: it holds nothing
            return set()
        return {source for source, _ in self.search(collection, "anything")}

    def top(self, collection: str, query: str) -> tuple[str, str]:
        return self.search(collection, query)[0]


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def s3_env(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_LAMBDA_FUNCTION_NAME": "omni-llm-test"}  # as on Lambda
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(s3_env: dict[str, str], tmp_path: Path) -> str:
    name = f"events-{uuid.uuid4().hex[:16]}"  # one bucket per test: nothing left over from another
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"]).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(s3_env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"])


@pytest.fixture
def config_path(bucket: str, tmp_path: Path) -> Path:
    (tmp_path / "local-notes").mkdir()
    path = tmp_path / "models.yaml"
    path.write_text(config(bucket, tmp_path))
    return path


def _handler_gateway(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """proxy.lambda_handler imported as Lambda does, on one event loop (Lambda's runtime thread has one)."""
    from proxy.rag.s3events import S3EventFailed

    monkeypatch.setenv("OMNI_LLM_CONFIG", str(config_path))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    module = importlib.reload(importlib.import_module("proxy.lambda_handler"))
    handler = module.handler

    def deliver(s3_event: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        try:
            summary = handler(s3_event, SimpleNamespace())
        except S3EventFailed as failed:  # raised after every record ran: Lambda then retries the event
            return True, failed.summary
        return False, summary

    def http(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        raw = json.dumps(body) if body is not None else None
        headers = {"host": "abc.lambda-url.us-east-1.on.aws", "authorization": f"Bearer {KEY}",
                   "content-type": "application/json"}
        response = handler({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": headers,
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.7"}, "stage": "$default", "routeKey": "$default"},
            "body": raw, "isBase64Encoded": False}, SimpleNamespace())
        return response["statusCode"], json.loads(response["body"])

    try:
        yield Gateway(deliver, http, config_path)
    finally:
        gateway = handler.app.state.gateway
        if gateway.rag is not None:
            loop.run_until_complete(gateway.rag.aclose())
        loop.run_until_complete(gateway.pool.aclose())
        asyncio.set_event_loop(None)
        loop.close()


def _server_gateway(config_path: Path, s3_env: dict[str, str]) -> Iterator[Gateway]:
    """`omni-llm serve`, reached the way the Lambda Web Adapter forwards a non-HTTP event: POST /events, no key."""
    with run_proxy(config_path.read_text(), env=s3_env) as proxy, httpx.Client(base_url=proxy.url) as client:
        def deliver(s3_event: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
            response = client.post("/events", json=s3_event)
            assert response.status_code in (200, 207), response.text
            return response.status_code == 207, response.json()

        def http(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
            response = client.request(method, path, json=body, headers={"authorization": f"Bearer {KEY}"})
            return response.status_code, response.json()

        yield Gateway(deliver, http, config_path)


@pytest.fixture(params=["lambda_handler", "events_route"])
def gateway(request: pytest.FixtureRequest, config_path: Path, s3_env: dict[str, str],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    if request.param == "lambda_handler":
        yield from _handler_gateway(config_path, monkeypatch)
    else:
        yield from _server_gateway(config_path, s3_env)


def put(s3: Any, bucket: str, key: str, body: bytes, event_name: str = CREATED) -> dict[str, Any]:
    """Upload, and the record S3 would send for it (key URL-encoded as S3 does for these plain keys)."""
    etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    return record(event_name, bucket, key, size=len(body), etag=etag)


def manual_ingest(config_path: Path, collection: str) -> str:
    """`omni-llm rag ingest COLLECTION` (its declared sources), as an operator runs it."""
    done = subprocess.run([*omni_llm_command(), "rag", "ingest", collection, "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def statuses(summary: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(r["key"], r["status"]) for r in summary["records"]]


# -- the lifecycle of one object ------------------------------------------------------------------------
def test_created_overwritten_removed(gateway: Gateway, s3: Any, bucket: str) -> None:
    source = f"s3://{bucket}/handbook/lighthouse.txt"
    first = b"The lighthouse keeper polishes the brass lantern every morning before sunrise."
    failed, summary = gateway.deliver(event(put(s3, bucket, "handbook/lighthouse.txt", first)))
    assert not failed and statuses(summary) == [("handbook/lighthouse.txt", "ingested")]
    assert summary["records"][0]["collections"] == {"handbook": "ingested"}
    assert summary["records"][0]["source"] == source
    assert (summary["ingested"], summary["failed"]) == (1, 0)
    assert gateway.top("handbook", "brass lantern") == (source, first.decode())
    assert gateway.sources("notes") == set()  # only the collection whose source covers the key

    # The same event again (S3 may deliver twice; Lambda retries): a no-op. A manual ingest agrees.
    failed, summary = gateway.deliver(event(record(CREATED, bucket, "handbook/lighthouse.txt")))
    assert not failed and statuses(summary) == [("handbook/lighthouse.txt", "unchanged")]
    assert "0 file(s) ingested (0 chunks), 1 unchanged" in manual_ingest(gateway.config_path, "handbook")

    # Overwritten: the old text goes, the new one is found.
    second = b"The harbour master counts the fishing boats returning with herring at dusk."
    failed, summary = gateway.deliver(event(put(s3, bucket, "handbook/lighthouse.txt", second)))
    assert not failed and statuses(summary) == [("handbook/lighthouse.txt", "ingested")]
    hits = gateway.search("handbook", "herring boats")
    assert [text for found, text in hits if found == source] == [second.decode()]
    assert not any("brass lantern" in text for _, text in hits)

    # Deleted: its chunks go (S3 confirms the object is gone).
    s3.delete_object(Bucket=bucket, Key="handbook/lighthouse.txt")
    failed, summary = gateway.deliver(event(record(REMOVED, bucket, "handbook/lighthouse.txt")))
    assert not failed and statuses(summary) == [("handbook/lighthouse.txt", "removed")]
    assert summary["records"][0]["collections"] == {"handbook": "removed"}
    assert gateway.sources("handbook") == set()


def test_event_ingest_agrees_with_an_earlier_manual_ingest(gateway: Gateway, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="notes/tides.md", Body=b"# Tides\nSpring tides follow the full moon.")
    assert "1 file(s) ingested" in manual_ingest(gateway.config_path, "notes")
    failed, summary = gateway.deliver(event(record(CREATED, bucket, "notes/tides.md")))
    assert not failed and statuses(summary) == [("notes/tides.md", "unchanged")]
    assert summary["records"][0]["collections"] == {"notes": "unchanged"}


# -- forged events: a hint, never the content --------------------------------------------------------------
def test_forged_removed_for_an_object_still_in_s3_removes_nothing(gateway: Gateway, s3: Any, bucket: str) -> None:
    source = f"s3://{bucket}/handbook/keep.txt"
    gateway.deliver(event(put(s3, bucket, "handbook/keep.txt", b"Penguins huddle against the polar wind.")))
    failed, summary = gateway.deliver(event(record(REMOVED, bucket, "handbook/keep.txt"),
                                            record("ObjectRemoved:DeleteMarkerCreated", bucket, "handbook/keep.txt")))
    assert not failed and statuses(summary) == [("handbook/keep.txt", "unchanged")] * 2
    assert "still in S3" in summary["records"][0]["reason"]
    assert gateway.top("handbook", "penguins polar wind")[0] == source


# (key, uploaded first?, why it is left alone): a forged ObjectCreated only ever makes the gateway read S3.
FORGED_CREATED = [
    ("elsewhere/secret.txt", True, "not under any declared source"),  # a real object, undeclared prefix
    ("handbookish/x.txt", True, "not under any declared source"),  # `handbook/` is a prefix, not `handbook`
    ("handbook/never-uploaded.txt", False, "not in S3"),  # declared prefix, nothing in S3: nothing to add
    ("handbook/photo.png", True, "unsupported file type"),
    ("handbook/folder/", True, "a folder marker"),
]


def test_forged_created_injects_nothing(gateway: Gateway, s3: Any, bucket: str) -> None:
    for key, put_first, _ in FORGED_CREATED:
        if put_first:
            s3.put_object(Bucket=bucket, Key=key, Body=b"Injected words: CANARY-7734 must never be indexed.")
    forged = [record(CREATED, bucket, key, size=10, etag="0123456789abcdef") for key, _, _ in FORGED_CREATED]
    failed, summary = gateway.deliver(event(*forged))
    assert not failed
    assert statuses(summary) == [(key, "unchanged" if not put_first else "ignored")
                                 for key, put_first, _ in FORGED_CREATED]
    assert [r["reason"] for r in summary["records"]] == [reason for _, _, reason in FORGED_CREATED]
    assert gateway.sources("handbook") == set() and gateway.sources("notes") == set()


def test_other_buckets_and_non_s3_records_are_ignored(gateway: Gateway, s3: Any, bucket: str) -> None:
    other = f"{bucket}-other"
    s3.create_bucket(Bucket=other)
    sqs = {"messageId": "059f36b4", "eventSource": "aws:sqs", "body": "hello"}
    failed, summary = gateway.deliver(event(put(s3, other, "handbook/a.txt", b"Another bucket entirely."), sqs,
                                            {**record("ObjectRestore:Completed", bucket, "handbook/a.txt")}))
    assert not failed and [r["status"] for r in summary["records"]] == ["ignored"] * 3
    assert summary["ignored"] == 3 and gateway.sources("handbook") == set()


# -- keys as S3 encodes them --------------------------------------------------------------------------------
def test_keys_with_spaces_and_unicode(gateway: Gateway, s3: Any, bucket: str) -> None:
    records = []
    for n, (key, encoded) in enumerate(ENCODED_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=f"Document number {n} mentions the word zephyr{n}.".encode())
        records.append(record(CREATED, bucket, encoded))
    failed, summary = gateway.deliver(event(*records))
    assert not failed and statuses(summary) == [(key, "ingested") for key, _ in ENCODED_KEYS]
    assert gateway.sources("handbook") == {f"s3://{bucket}/{key}" for key, _ in ENCODED_KEYS}
    # The source names are exactly the ones a manual ingest of the prefix produces.
    assert f"0 file(s) ingested (0 chunks), {len(ENCODED_KEYS)} unchanged" in manual_ingest(gateway.config_path,
                                                                                            "handbook")
    for key, encoded in ENCODED_KEYS:
        s3.delete_object(Bucket=bucket, Key=key)
    failed, summary = gateway.deliver(event(*(record(REMOVED, bucket, encoded) for _, encoded in ENCODED_KEYS)))
    assert not failed and statuses(summary) == [(key, "removed") for key, _ in ENCODED_KEYS]
    assert gateway.sources("handbook") == set()


# -- failures ------------------------------------------------------------------------------------------------
def test_one_failing_record_does_not_stop_the_others(gateway: Gateway, s3: Any, bucket: str) -> None:
    failed, summary = gateway.deliver(event(
        put(s3, bucket, "handbook/broken.pdf", b"%PDF-1.4 this is not really a pdf"),
        put(s3, bucket, "notes/ok.txt", b"Otters hold hands while they sleep in kelp forests."),
        put(s3, bucket, "elsewhere/x.txt", b"outside"),
        record(REMOVED, bucket, "handbook/never-there.txt"),
    ))
    assert failed  # the invocation fails (Lambda retries it) once every record has run
    assert statuses(summary) == [("handbook/broken.pdf", "failed"), ("notes/ok.txt", "ingested"),
                                 ("elsewhere/x.txt", "ignored"), ("handbook/never-there.txt", "unchanged")]
    assert "not a readable PDF" in summary["records"][0]["reason"]
    assert (summary["ingested"], summary["failed"], summary["ignored"], summary["unchanged"]) == (1, 1, 1, 1)
    assert gateway.top("notes", "otters kelp")[0] == f"s3://{bucket}/notes/ok.txt"


def test_an_s3_error_fails_the_record(gateway: Gateway, s3: Any, bucket: str) -> None:
    # `archive` declares a bucket that does not exist: S3 answers NoSuchBucket, which is no content to ingest.
    failed, summary = gateway.deliver(event(record(CREATED, f"{bucket}-archive", "2026/a.txt"),
                                            put(s3, bucket, "notes/b.txt", b"Swifts sleep on the wing.")))
    assert failed and statuses(summary) == [("2026/a.txt", "failed"), ("notes/b.txt", "ingested")]
    assert summary["records"][0]["reason"] == "unreadable (NoSuchBucket)"
