"""S3-triggered ingestion: the pass-through route itself (bad bodies, no key, chat with `rag`), the container
image as the Lambda Web Adapter runs it, the deploy templates, and the key decoding / coverage units."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from proxy.rag.s3events import covering, decode_key
from tests.proxy_server import run_proxy
from tests.rag.s3 import S3_ENV
from tests.rag.s3_events import ENCODED_KEYS, event
from tests.test_rag_s3_events import (  # noqa: F401 - fixtures
    KEY,
    MAX_BYTES,
    bucket,
    config,
    config_path,
    endpoint,
    put,
    s3,
    s3_env,
    statuses,
)


# -- the pass-through route itself ------------------------------------------------------------------------------
@dataclass
class Route:
    url: str
    bucket: str


@pytest.fixture(scope="module")
def route(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Route]:
    """One `omni-llm serve` for the route's own tests (each uses its own keys)."""
    env = {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_LAMBDA_FUNCTION_NAME": "omni-llm-test"}  # as on Lambda
    data = tmp_path_factory.mktemp("events-route")
    (data / "local-notes").mkdir()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="events-route")
    with run_proxy(config("events-route", data), env=env) as proxy:
        yield Route(proxy.url, "events-route")


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b"[]", 400, "must be a JSON object"),
    (b'{"detail-type": "Object Created"}', 400, "`Records` list"),
    (json.dumps({"Records": [{}] * 101}).encode(), 400, "at most 100 records"),
    (b'{"Records": [' + b" " * MAX_BYTES + b"]}", 413, "exceeds the limit"),
])
def test_events_route_rejects_bad_bodies(route: Route, body: bytes, status: int, message: str) -> None:
    response = httpx.post(route.url + "/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert message in error["message"]


def test_events_route_needs_no_key_but_other_routes_still_do(route: Route, s3: Any) -> None:
    response = httpx.post(route.url + "/events", json=event(put(s3, route.bucket, "notes/a.txt", b"Gulls cry.")))
    assert response.status_code == 200 and response.json()["ingested"] == 1
    assert httpx.post(route.url + "/v1/vector_stores/notes/search", json={"query": "gulls"}).status_code == 401
    assert httpx.get(route.url + "/events").status_code == 405


def test_outside_lambda_the_events_route_takes_the_key_like_every_route(endpoint: str, s3: Any, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.delenv("AWS_LWA_PASS_THROUGH_PATH", raising=False)
    (tmp_path / "local-notes").mkdir()
    s3.create_bucket(Bucket="events-offline")
    with run_proxy(config("events-offline", tmp_path), env={**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint}) as proxy:
        body = event(put(s3, "events-offline", "notes/b.txt", b"Terns dive."))
        assert httpx.post(proxy.url + "/events", json=body).status_code == 401
        answer = httpx.post(proxy.url + "/events", json=body, headers={"authorization": f"Bearer {KEY}"})
        assert answer.status_code == 200 and answer.json()["ingested"] == 1


def test_chat_with_rag_sees_event_ingested_content(route: Route, s3: Any) -> None:
    text = b"The night ferry to Tallinn leaves at 23:40 from terminal D."
    response = httpx.post(route.url + "/events", json=event(put(s3, route.bucket, "handbook/ferry.txt", text)))
    assert response.status_code == 200 and response.json()["ingested"] == 1
    response = httpx.post(route.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, json={
        "model": "demo", "messages": [{"role": "user", "content": "When does the Tallinn ferry leave?"}],
        "rag": {"collection": "handbook", "top_k": 1}})
    assert response.status_code == 200, response.text
    assert [(c["source"], c["content"]) for c in response.json()["rag_context"]] == [
        (f"s3://{route.bucket}/handbook/ferry.txt", text.decode())]


# -- the container image as the Lambda Web Adapter runs it ---------------------------------------------------------
def error_statuses(spec: str) -> set[int]:
    """AWS_LWA_ERROR_STATUS_CODES as the adapter parses it: codes and ranges, comma-separated."""
    codes: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        low, _, high = part.partition("-")
        codes.update(range(int(low), int(high or low) + 1))
    return codes


def test_image_routes_pass_through_events_and_fails_the_invocation_on_a_failed_record(
        config_path: Path, s3: Any, bucket: str, s3_env: dict[str, str]) -> None:
    from tests.test_lambda import container_env, dockerfile, free_port, run_container, stop, wait_ready

    _, image_env, _ = dockerfile()
    failing = error_statuses(image_env["AWS_LWA_ERROR_STATUS_CODES"])
    assert failing and not failing & {200, 400, 401, 404, 413, 429, 500, 502, 503, 504}  # only the events route
    port = free_port()
    process = run_container(container_env(port, config_path, OMNI_LLM_API_KEY=KEY, **s3_env))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base + image_env["AWS_LWA_READINESS_CHECK_PATH"])
        path = image_env["AWS_LWA_PASS_THROUGH_PATH"]  # where the adapter POSTs a non-HTTP event, with no key
        ok = httpx.post(base + path, json=event(put(s3, bucket, "notes/c.txt", b"Moles dig at night.")), timeout=60)
        assert ok.status_code == 200 and ok.status_code not in failing and ok.json()["ingested"] == 1
        bad = httpx.post(base + path, timeout=60,
                         json=event(put(s3, bucket, "notes/d.pdf", b"%PDF-1.4 broken"),
                                    put(s3, bucket, "notes/e.txt", b"Badgers sleep by day.")))
        assert bad.status_code in failing and statuses(bad.json()) == [("notes/d.pdf", "failed"),
                                                                        ("notes/e.txt", "ingested")]
    finally:
        stop(process)


def test_deploy_templates_wire_the_bucket_to_the_pass_through_route() -> None:
    """deploy/template.yaml (cfn-lint checks it as a whole in deploy/check.sh) and the Terraform module: the
    notification's events, the role's S3 access, and the adapter settings the image and the route agree on."""
    import re

    import yaml

    from proxy.rag.s3events import FAILED_STATUS
    from tests.test_lambda import ROOT, dockerfile

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [suffix, loader.construct_sequence(node, deep=True)]
        if isinstance(node, yaml.MappingNode):
            return [suffix, loader.construct_mapping(node, deep=True)]
        return [suffix, loader.construct_scalar(node)]

    Loader.add_multi_constructor("!", any_tag)
    template = yaml.load((ROOT / "deploy/template.yaml").read_text(), Loader=Loader)  # noqa: S506 - our own file
    resources = template["Resources"]
    _, image_env, _ = dockerfile()
    env = resources["Function"]["Properties"]["Environment"]["Variables"]
    assert env["AWS_LWA_PASS_THROUGH_PATH"] == image_env["AWS_LWA_PASS_THROUGH_PATH"] == "/events"
    assert FAILED_STATUS in error_statuses(env["AWS_LWA_ERROR_STATUS_CODES"])
    assert FAILED_STATUS in error_statuses(image_env["AWS_LWA_ERROR_STATUS_CODES"])
    notifications = resources["IngestBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert [n["Event"] for n in notifications] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    assert all(n["Function"] == ["GetAtt", "Function.Arn"] for n in notifications)
    permission = resources["IngestBucketPermission"]["Properties"]
    assert (permission["Principal"], permission["Action"]) == ("s3.amazonaws.com", "lambda:InvokeFunction")
    policies = resources["Role"]["Properties"]["Policies"]
    ingest = next(p[1][1] for p in policies if isinstance(p, list) and p[1][0] == "HasIngestBucket")
    assert [st["Action"] for st in ingest["PolicyDocument"]["Statement"]] == ["s3:GetObject", "s3:ListBucket"]

    main = (ROOT / "deploy/terraform/main.tf").read_text()
    assert 'events              = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]' in main
    assert re.search(r'AWS_LWA_PASS_THROUGH_PATH\s+= "/events"', main)
    assert re.search(rf'AWS_LWA_ERROR_STATUS_CODES\s+= "{FAILED_STATUS}"', main)
    assert '"s3:GetObject"' in main and '"s3:ListBucket"' in main
    variables = (ROOT / "deploy/terraform/variables.tf").read_text()
    assert 'variable "ingest_bucket_name"' in variables and 'variable "ingest_bucket_prefix"' in variables


# -- units: key decoding and coverage, as AWS documents them -----------------------------------------------------
@pytest.mark.parametrize("key, encoded", ENCODED_KEYS)
def test_decode_key(key: str, encoded: str) -> None:
    assert decode_key(encoded) == key


def test_decode_key_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_key("handbook/%FF.txt")


@pytest.mark.parametrize("sources, bucket, key, covered", [
    (["s3://b/handbook/"], "b", "handbook/a.txt", True),
    (["s3://b/handbook/"], "b", "handbook/deep/a.txt", True),
    (["s3://b/handbook/"], "b", "handbookish/a.txt", False),
    (["s3://b/handbook"], "b", "handbookish/a.txt", True),  # the same string prefix list_objects_v2 applies
    (["s3://b/handbook/"], "c", "handbook/a.txt", False),
    (["s3://b"], "b", "anything.txt", True),
    (["s3://b/"], "b", "anything.txt", True),
    (["./docs", "https://example.com/x.txt"], "b", "docs/a.txt", False),
])
def test_covering(sources: list[str], bucket: str, key: str, covered: bool) -> None:
    assert covering({"c": {"sources": sources}}, bucket, key) == (["c"] if covered else [])
