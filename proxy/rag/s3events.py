"""S3-triggered ingestion: S3 event notifications keep the declared collections in step with their buckets.

An `ObjectCreated:*` or `ObjectRemoved:*` record names a bucket and a key; every
collection under `rag.collections` whose `sources` hold an `s3://bucket/prefix`
the key starts with (the same string-prefix test `list_objects_v2` applies to a
manual `omni-llm rag ingest NAME`) is brought up to date for that one object,
under the same source name, `s3://bucket/key`. So manual and event-driven
ingestion agree: unchanged bytes are a no-op (content hash), changed bytes
replace the object's chunks, a removed object's chunks go.

Two entry points deliver events: `proxy.lambda_handler.handler` (S3 invokes the
function directly) and `POST /events`, where the Lambda Web Adapter forwards
every non-HTTP event of the container image (`AWS_LWA_PASS_THROUGH_PATH`).

That route takes no gateway key (the adapter sends none), so anyone who can
reach the Function URL can post a forged event. An event is therefore only a
hint of *which* object to look at, never a statement of *what* it holds:
- ObjectCreated: the object is read from S3 (GetObject); what S3 holds is
  ingested; if S3 says it is gone, its chunks go (as a later delete event would).
- ObjectRemoved: the chunks go only when S3 itself says the object is gone
  (HEAD -> 404). An object that is still there keeps its chunks.
- Only objects under declared sources are touched; anything else is ignored.
A forged event can thus neither inject nor delete content: at most it makes the
gateway re-read the truth for an object it already indexes. Events are capped at
MAX_RECORDS records, and the body at `server.max_request_bytes`.

A failed record is reported (and logged) while the others still go on. S3
invokes Lambda asynchronously: a function error makes Lambda retry the whole
event twice (batchItemFailures exist only for SQS/Kinesis/DynamoDB event source
mappings), and a retry is safe because ingestion is idempotent. The Mangum
handler raises after processing every record; `POST /events` answers
FAILED_STATUS, which the image's `AWS_LWA_ERROR_STATUS_CODES` turns into a
failed invocation (no other route answers that status).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest, ProxyError
from proxy.schemas import parse_json_object

if TYPE_CHECKING:
    from proxy.app import Gateway
    from proxy.rag.engine import RagEngine
    from proxy.rag.loaders import Document

log = logging.getLogger("omni.rag")

EVENT_SOURCE = "aws:s3"
MAX_RECORDS = 100  # S3 sends one record per event; a bigger body is not S3's
FAILED_STATUS = 207  # Multi-Status: some record failed (AWS_LWA_ERROR_STATUS_CODES=207 makes it a Lambda error)
STATUSES = ("ingested", "removed", "unchanged", "ignored", "failed")


class S3EventFailed(RuntimeError):
    """Raised by the Lambda handler after every record ran, so that Lambda's async retries happen."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class RecordResult:
    index: int
    event_name: str | None = None
    bucket: str | None = None
    key: str | None = None
    status: str = "ignored"
    reason: str | None = None
    collections: dict[str, str] = field(default_factory=dict)  # collection -> its status

    def to_json(self) -> dict[str, Any]:
        source = f"s3://{self.bucket}/{self.key}" if self.bucket is not None and self.key is not None else None
        return {"index": self.index, "event_name": self.event_name, "bucket": self.bucket, "key": self.key,
                "source": source, "status": self.status, "collections": self.collections, "reason": self.reason}


def is_s3_event(event: Any) -> bool:
    """True for an S3 event notification (what S3 sends Lambda): a `Records` list with an `aws:s3` record."""
    records = event.get("Records") if isinstance(event, dict) else None
    return isinstance(records, list) and any(
        isinstance(r, dict) and r.get("eventSource") == EVENT_SOURCE for r in records)


def decode_key(raw: str) -> str:
    """The object key of a record: S3 URL-encodes it with `+` for spaces (form encoding), UTF-8 underneath."""
    return unquote_plus(raw, encoding="utf-8", errors="strict")


def covering(collections: Mapping[str, Mapping[str, Any]], bucket: str, key: str) -> list[str]:
    """The declared collections one of whose `s3://bucket/prefix` sources holds the key."""
    names = []
    for name, declared in collections.items():
        for source in declared.get("sources") or ():
            if not isinstance(source, str) or not source.startswith("s3://"):
                continue
            source_bucket, _, prefix = source[len("s3://"):].partition("/")
            if source_bucket == bucket and key.startswith(prefix):
                names.append(name)
                break
    return names


# -- one event --------------------------------------------------------------------------------------
async def handle_event(gateway: Gateway, event: Any) -> dict[str, Any]:
    """Every record of one S3 event notification brought up to date; the summary (never raises for a record)."""
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise InvalidRequest("expected an S3 event notification: a JSON object with a `Records` list",
                             param="Records")
    records = event["Records"]
    if len(records) > MAX_RECORDS:
        raise InvalidRequest(f"at most {MAX_RECORDS} records per event, got {len(records)}", param="Records")
    results = [await _handle_record(gateway, index, record) for index, record in enumerate(records)]
    summary: dict[str, Any] = {"object": "s3_event.summary"}
    summary.update({status: sum(r.status == status for r in results) for status in STATUSES})
    summary["records"] = [r.to_json() for r in results]
    return summary


async def _handle_record(gateway: Gateway, index: int, record: Any) -> RecordResult:
    result = RecordResult(index)
    try:
        await _sync(gateway, record, result)
    except ProxyError as exc:  # the embedding model failed, RAG is not installed, ...
        result.status, result.reason = "failed", exc.message
    except Exception as exc:  # one broken record must not stop the others
        log.exception("s3 event: record %d failed", index)
        result.status, result.reason = "failed", f"internal error ({type(exc).__name__})"
    level = logging.WARNING if result.status == "failed" else logging.INFO
    log.log(level, "s3 event: %s s3://%s/%s -> %s%s", result.event_name, result.bucket, result.key, result.status,
            f" ({result.reason})" if result.reason else "")
    return result


async def _sync(gateway: Gateway, record: Any, result: RecordResult) -> None:
    if not isinstance(record, dict) or record.get("eventSource") != EVENT_SOURCE:
        result.reason = "not an S3 record"
        return
    name = record.get("eventName")
    s3 = record.get("s3")
    bucket = s3.get("bucket", {}).get("name") if isinstance(s3, dict) and isinstance(s3.get("bucket"), dict) else None
    raw_key = s3.get("object", {}).get("key") if isinstance(s3, dict) and isinstance(s3.get("object"), dict) else None
    result.event_name = name if isinstance(name, str) else None
    if not isinstance(name, str) or not name.startswith(("ObjectCreated:", "ObjectRemoved:")):
        result.reason = f"event {name!r} is not handled (only ObjectCreated:* and ObjectRemoved:*)"
        return
    if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str) or not raw_key:
        result.status, result.reason = "failed", "malformed record: no s3.bucket.name or s3.object.key"
        return
    result.bucket = bucket
    try:
        key = decode_key(raw_key)
    except UnicodeDecodeError:
        result.status, result.reason = "failed", f"malformed record: s3.object.key {raw_key!r} is not UTF-8"
        return
    result.key = key
    from proxy.rag.parsers import is_supported

    names = covering(gateway.config.rag.collections, bucket, key)
    if not names:
        result.reason = "not under any declared source"
    elif key.endswith("/"):
        result.reason = "a folder marker"
    elif not is_supported(key):
        result.reason = "unsupported file type"
    elif name.startswith("ObjectCreated:"):
        await _created(gateway, names, bucket, key, result)
    else:
        await _removed(gateway, names, bucket, key, result)


async def _created(gateway: Gateway, names: list[str], bucket: str, key: str, result: RecordResult) -> None:
    from proxy.rag.engine import engine_for
    from proxy.rag.loaders import Skipped, read_s3_object

    engine = engine_for(gateway)
    item = await asyncio.to_thread(read_s3_object, bucket, key)
    if item is None:  # deleted since: S3's truth is "gone", whatever the event said
        await _remove(engine, names, f"s3://{bucket}/{key}", result)
        result.reason = "not in S3"
    elif isinstance(item, Skipped):
        result.status, result.reason = "failed", item.reason
    else:
        for name in names:
            try:
                result.collections[name] = await _ingest(engine, name, item)
            except ProxyError as exc:  # this collection's embedding model failed; the others still go on
                result.collections[name], result.reason = "failed", f"{name}: {exc.message}"
        result.status = _overall(result.collections.values())
        if result.status == "ignored":
            result.reason = "no text to index"


async def _ingest(engine: RagEngine, name: str, document: Document) -> str:
    collection = await engine.get_or_create(name)
    report = await engine.ingest_documents(collection, [document])
    if report.added:
        return "ingested"
    return "unchanged" if report.unchanged else "ignored"


async def _removed(gateway: Gateway, names: list[str], bucket: str, key: str, result: RecordResult) -> None:
    from proxy.rag.engine import engine_for
    from proxy.rag.loaders import S3Unavailable, s3_object_exists

    engine = engine_for(gateway)
    try:
        exists = await asyncio.to_thread(s3_object_exists, bucket, key)
    except S3Unavailable as exc:
        result.status, result.reason = "failed", str(exc)
        return
    if exists:
        result.status, result.reason = "unchanged", "the object is still in S3: nothing removed"
        result.collections = dict.fromkeys(names, "unchanged")
        return
    await _remove(engine, names, f"s3://{bucket}/{key}", result)


async def _remove(engine: RagEngine, names: list[str], source: str, result: RecordResult) -> None:
    for name in names:
        collection = await asyncio.to_thread(engine.store.get_collection, name)
        removed = collection is not None and await engine.remove_document(collection, source)
        result.collections[name] = "removed" if removed else "unchanged"
    result.status = _overall(result.collections.values())


def _overall(statuses: Any) -> str:
    found = set(statuses)
    return next((s for s in ("failed", "ingested", "removed", "unchanged") if s in found), "ignored")


def failures(summary: Mapping[str, Any]) -> list[str]:
    return [f"{r['source'] or 'record ' + str(r['index'])}: {r['reason']}"
            for r in summary["records"] if r["status"] == "failed"]


# -- the pass-through route (the Lambda Web Adapter's non-HTTP events) --------------------------------
async def events_route(gateway: Gateway, request: Request) -> Response:
    """`POST /events` (or $AWS_LWA_PASS_THROUGH_PATH): an S3 event notification as JSON -> the summary."""
    event = parse_json_object(await request.body())
    summary = await handle_event(gateway, event)
    status = FAILED_STATUS if summary["failed"] else 200
    return Response(orjson.dumps(summary), status_code=status, media_type="application/json")
