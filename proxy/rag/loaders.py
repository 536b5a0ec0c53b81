"""Sources -> documents: a local file or directory, `s3://bucket/prefix`, an `https://` URL.

A file that cannot be read or parsed is reported by name (`Skipped`) and the
rest go on; only a source that is wrong as a whole (a missing path, a bucket
we may not list) is reported as such. A request's ad-hoc sources pass
`allowed_paths`: then local paths outside those folders are refused (400) —
a request must never make the server read its own files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.errors import InvalidRequest
from proxy.rag.parsers import Part, Unreadable, Unsupported, is_supported, parse_document

URL_MAX_BYTES = 50 * 1024 * 1024
URL_TIMEOUT_S = 30.0
S3_MAX_BYTES = 200 * 1024 * 1024
S3_PAGE_SIZE = 1000  # keys per list_objects_v2 page (S3's maximum)


@dataclass(frozen=True)
class Document:
    source: str  # an absolute path, s3://bucket/key, a URL, or an uploaded file's name
    parts: tuple[Part, ...]
    content_hash: str  # sha256 of the raw bytes: re-ingesting unchanged bytes is a no-op
    size: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def document_from_bytes(source: str, data: bytes, media_type: str | None = None,
                        attributes: dict[str, Any] | None = None) -> Document | Skipped:
    try:
        parts = parse_document(source, data, media_type)
    except (Unsupported, Unreadable) as exc:
        return Skipped(source, str(exc))
    digest = hashlib.sha256(data).hexdigest()
    return Document(source, tuple(parts), digest, len(data), dict(attributes or {}))


async def load_sources(sources: Sequence[str], *, allowed_paths: Sequence[str] | None = None,
                       param: str = "sources") -> tuple[list[Document], list[Skipped]]:
    """Every document the sources hold, and what was skipped (by name, with the reason)."""
    documents: list[Document] = []
    skipped: list[Skipped] = []
    for source in sources:
        if source.startswith(("https://", "http://")):
            found = [await _load_url(source, param)]
        elif source.startswith("s3://"):
            found = await asyncio.to_thread(lambda s=source: list(_load_s3(s)))
        else:
            found = await asyncio.to_thread(lambda s=source: list(_load_local(s, allowed_paths, param)))
        for item in found:
            (documents if isinstance(item, Document) else skipped).append(item)
    return documents, skipped


# -- local files ------------------------------------------------------------------
def check_allowed(path: str, allowed_paths: Sequence[str], param: str) -> Path:
    """The resolved path when it lies under one of `allowed_paths` (symlinks resolved), else 400."""
    resolved = Path(path).expanduser().resolve()
    for root in allowed_paths:
        if resolved.is_relative_to(Path(root).expanduser().resolve()):
            return resolved
    raise InvalidRequest(f"local source {path!r} is not under rag.allowed_paths", param=param)


def _load_local(source: str, allowed_paths: Sequence[str] | None, param: str) -> Iterator[Document | Skipped]:
    path = check_allowed(source, allowed_paths, param) if allowed_paths is not None else Path(source).resolve()
    if not path.exists():
        yield Skipped(source, "no such file or directory")
        return
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir() and any(part.startswith(".") for part in file.relative_to(path).parts):
            continue  # .git, .venv, editor droppings
        if allowed_paths is not None:  # a symlink (or a file under a linked folder) may point elsewhere
            try:
                check_allowed(str(file), allowed_paths, param)
            except InvalidRequest:
                yield Skipped(str(file), "links outside rag.allowed_paths")
                continue
        if path.is_dir() and not is_supported(file.name):
            yield Skipped(str(file), "unsupported file type")
            continue
        try:
            data = file.read_bytes()
        except OSError as exc:
            yield Skipped(str(file), f"unreadable ({exc.strerror or type(exc).__name__})")
            continue
        yield document_from_bytes(str(file), data)


# -- S3 ---------------------------------------------------------------------------
def _load_s3(source: str) -> Iterator[Document | Skipped]:
    bucket, _, prefix = source[len("s3://"):].partition("/")
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        yield Skipped(source, "S3 sources need boto3 (pip install 'omni-llm[s3]')")
        return
    try:
        client = _s3_client(boto3)
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": S3_PAGE_SIZE})
        objects = [obj for page in pages for obj in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as exc:
        yield Skipped(source, f"cannot list ({_s3_reason(exc)})")
        return
    for obj in objects:
        key, name = obj["Key"], f"s3://{bucket}/{obj['Key']}"
        if key.endswith("/"):
            continue
        if not is_supported(key):
            yield Skipped(name, "unsupported file type")
        elif obj.get("Size", 0) > S3_MAX_BYTES:
            yield Skipped(name, f"larger than {S3_MAX_BYTES} bytes")
        else:
            try:
                data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except (BotoCoreError, ClientError) as exc:
                yield Skipped(name, f"unreadable ({_s3_reason(exc)})")
                continue
            yield document_from_bytes(name, data)


def _s3_client(boto3: Any) -> Any:
    # botocore reads AWS_ENDPOINT_URL_S3 itself in recent versions; passing it keeps older ones honest.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


class S3Unavailable(Exception):
    """S3 could not say (access denied, no boto3, a network error): the reason is the message."""


_GONE = ("NoSuchKey", "404", "NotFound")  # GetObject says NoSuchKey; HEAD has no body, so only "404"


def read_s3_object(bucket: str, key: str) -> Document | Skipped | None:
    """The object at `key` read as `_load_s3` reads a prefix (same `s3://bucket/key` source, same size cap),
    or None when S3 says there is no such object (S3-triggered ingestion, proxy/rag/s3events.py)."""
    name = f"s3://{bucket}/{key}"
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return Skipped(name, "S3 sources need boto3 (pip install 'omni-llm[s3]')")
    try:
        response = _s3_client(boto3).get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        if response.get("ContentLength", 0) > S3_MAX_BYTES:
            body.close()
            return Skipped(name, f"larger than {S3_MAX_BYTES} bytes")
        data = body.read()
    except (BotoCoreError, ClientError) as exc:
        reason = _s3_reason(exc)
        return None if reason in _GONE else Skipped(name, f"unreadable ({reason})")
    return document_from_bytes(name, data)


def s3_object_exists(bucket: str, key: str) -> bool:
    """HEAD the object: False only when S3 answers that it does not exist (raises S3Unavailable otherwise).

    Without s3:ListBucket S3 answers 403, not 404, for a missing key: that is S3Unavailable, never "gone"."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise S3Unavailable("S3 sources need boto3 (pip install 'omni-llm[s3]')") from None
    try:
        _s3_client(boto3).head_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        reason = _s3_reason(exc)
        if reason in _GONE:
            return False
        raise S3Unavailable(f"cannot check the object ({reason})") from None
    return True


def _s3_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


# -- URLs ---------------------------------------------------------------------------
async def _load_url(url: str, param: str) -> Document | Skipped:
    from translators.fetch import fetch_public_url

    try:
        data, media_type = await fetch_public_url(url, URL_MAX_BYTES, URL_TIMEOUT_S, param=param)
    except InvalidRequest as exc:
        return Skipped(url, exc.message)
    return document_from_bytes(url, data, media_type)
