"""S3 event notifications as AWS sends them (the S3 user guide's "Event message structure", version 2.1)."""

from __future__ import annotations

from typing import Any

# Object keys as they appear in a notification: S3 URL-encodes them form-style (space -> `+`, UTF-8 %XX,
# a literal `+` -> %2B); `/` stays. Written out here, not computed, so the decoder is checked against AWS.
ENCODED_KEYS = [
    ("handbook/plain.txt", "handbook/plain.txt"),
    ("handbook/my notes.txt", "handbook/my+notes.txt"),
    ("handbook/café menu.md", "handbook/caf%C3%A9+menu.md"),
    ("handbook/1+1=2.txt", "handbook/1%2B1%3D2.txt"),
    ("handbook/日本/資料.txt", "handbook/%E6%97%A5%E6%9C%AC/%E8%B3%87%E6%96%99.txt"),
]


def record(event_name: str, bucket: str, encoded_key: str, size: int = 0, etag: str = "") -> dict[str, Any]:
    """One record of S3's notification for `eventName` (e.g. ObjectCreated:Put, ObjectRemoved:Delete)."""
    obj: dict[str, Any] = {"key": encoded_key, "sequencer": "0A1B2C3D4E5F678901"}
    if event_name.startswith("ObjectCreated:"):  # delete events carry no size or eTag
        obj = {"key": encoded_key, "size": size, "eTag": etag, "sequencer": "0A1B2C3D4E5F678901"}
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-02T07:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810",
                             "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "omni-llm-ingest",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                       "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }


def event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}
