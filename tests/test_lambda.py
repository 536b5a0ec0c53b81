"""The Lambda entry points: the Mangum handler and the container's command (issue 8).

The Mangum handler gets real event shapes (API Gateway REST v1, HTTP API v2, a
Function URL, ALB; shapes as in the AWS Lambda developer guide's sample events).
The container's command is read from the Dockerfile (ENTRYPOINT + CMD, the COPY
that installs the entrypoint, the ENV it sets) and run here as a plain process
with the adapter's environment, the way the Lambda Web Adapter reaches it:
readiness on 127.0.0.1:$AWS_LWA_PORT/health, then a chat streamed chunk by chunk.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from proxy.config import load_config
from tests.proxy_server import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-lambda-test"
WORD_DELAY_MS = 80
CONFIG = textwrap.dedent(f"""\
    server:
      api_keys: ["${{OMNI_LLM_API_KEY:-}}"]
    providers:
      demo: {{type: mock}}
    models:
      demo: {{provider: demo, model: mock-1}}
      demo-slow: {{provider: demo, model: mock-1, chunk_delay_ms: {WORD_DELAY_MS}}}
    """)
VENDOR_SDKS = ("openai", "anthropic", "boto3", "botocore", "google.genai", "mistralai", "cohere", "groq")


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(CONFIG)
    return path


# -- Mangum handler: events --------------------------------------------------------------------------

def _headers(body: bytes | None, auth: bool) -> dict[str, str]:
    headers = {"host": "gateway.example.com", "user-agent": "curl/8.5.0", "accept": "*/*",
               "x-forwarded-for": "203.0.113.7", "x-forwarded-port": "443", "x-forwarded-proto": "https",
               "x-amzn-trace-id": "Root=1-67891233-abcdef012345678912345678"}
    if body is not None:
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(body))
    if auth:
        headers["authorization"] = f"Bearer {KEY}"
    return headers


def rest_v1_event(method: str, path: str, body: bytes | None = None, auth: bool = True) -> dict[str, Any]:
    headers = _headers(body, auth)
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012", "apiId": "1234567890", "resourceId": "abc123", "stage": "prod",
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/prod{path}", "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "extendedRequestId": "c6af9ac6",
            "requestTime": "09/Apr/2025:12:34:56 +0000", "requestTimeEpoch": 1744202096000,
            "domainName": "1234567890.execute-api.us-east-1.amazonaws.com", "domainPrefix": "1234567890",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0", "accountId": None,
                         "caller": None, "user": None, "userArn": None},
        },
        # A REST API with binary media types base64-encodes bodies; Mangum must decode them.
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def _v2_event(method: str, path: str, body: bytes | None, auth: bool, domain: str, api_id: str) -> dict[str, Any]:
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": _headers(body, auth) | {"host": domain},
        "requestContext": {
            "accountId": "123456789012", "apiId": api_id, "domainName": domain,
            "domainPrefix": domain.split(".")[0], "requestId": "JKJaXmPLvHcESHA=", "routeKey": "$default",
            "stage": "$default", "time": "09/Apr/2025:12:34:56 +0000", "timeEpoch": 1744202096000,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                     "userAgent": "curl/8.5.0"},
        },
        "body": body.decode() if body is not None else None,
        "isBase64Encoded": False,
    }


def http_api_v2_event(method: str, path: str, body: bytes | None = None, auth: bool = True) -> dict[str, Any]:
    event = _v2_event(method, path, body, auth, "r3pmxmplak.execute-api.us-east-1.amazonaws.com", "r3pmxmplak")
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["stageVariables"] = None
    return event


def function_url_event(method: str, path: str, body: bytes | None = None, auth: bool = True) -> dict[str, Any]:
    return _v2_event(method, path, body, auth, "a7xmpl2abcd3efg.lambda-url.us-east-1.on.aws", "a7xmpl2abcd3efg")


def alb_event(method: str, path: str, body: bytes | None = None, auth: bool = True) -> dict[str, Any]:
    return {
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:"
                                                     "targetgroup/omni/6d0ecf831eec9f09"}},
        "httpMethod": method, "path": path, "queryStringParameters": {}, "headers": _headers(body, auth),
        "body": body.decode() if body is not None else "", "isBase64Encoded": False,
    }


EVENTS = {"rest-v1": rest_v1_event, "http-api-v2": http_api_v2_event, "function-url": function_url_event,
          "alb": alb_event}
CONTEXT = SimpleNamespace(function_name="omni-llm", function_version="$LATEST", memory_limit_in_mb=1024,
                          aws_request_id="52fdfc07-2182-154f-163f-5f0f9a621d72",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:omni-llm",
                          get_remaining_time_in_millis=lambda: 30_000)


def header(response: dict[str, Any], name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name:
            return value
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name:
            return values[0]
    return None


def body_of(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


@pytest.fixture
def lambda_handler(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """proxy.lambda_handler imported as Lambda does: config and keys from the environment."""
    monkeypatch.setenv("OMNI_LLM_CONFIG", str(config_path))
    monkeypatch.setenv("OMNI_LLM_API_KEY", KEY)
    monkeypatch.delenv("OMNI_LLM_ALLOW_UNAUTHENTICATED", raising=False)
    loop = asyncio.new_event_loop()  # Lambda's runtime thread has one loop; Mangum reuses it
    asyncio.set_event_loop(loop)
    try:
        module = importlib.import_module("proxy.lambda_handler")
        yield importlib.reload(module).handler
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.mark.parametrize("shape", EVENTS)
def test_health(lambda_handler: Any, shape: str) -> None:
    response = lambda_handler(EVENTS[shape]("GET", "/health", auth=False), CONTEXT)
    assert response["statusCode"] == 200
    assert header(response, "content-type") == "application/json"
    assert header(response, "x-request-id")
    assert json.loads(body_of(response)) == {"status": "ok"}


@pytest.mark.parametrize("shape", EVENTS)
def test_models_needs_key_and_lists_models(lambda_handler: Any, shape: str) -> None:
    denied = lambda_handler(EVENTS[shape]("GET", "/v1/models", auth=False), CONTEXT)
    assert denied["statusCode"] == 401
    assert json.loads(body_of(denied))["error"]["code"] == "invalid_api_key"

    response = lambda_handler(EVENTS[shape]("GET", "/v1/models"), CONTEXT)
    assert response["statusCode"] == 200
    assert header(response, "content-type") == "application/json"
    listed = json.loads(body_of(response))
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["demo", "demo-slow"]


@pytest.mark.parametrize("shape", EVENTS)
def test_chat_with_mock_model(lambda_handler: Any, shape: str) -> None:
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hello lambda"}]}).encode()
    response = lambda_handler(EVENTS[shape]("POST", "/v1/chat/completions", body), CONTEXT)
    assert response["statusCode"] == 200
    assert header(response, "content-type") == "application/json"
    assert header(response, "x-omni-provider") == "demo"
    completion = json.loads(body_of(response))
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "demo"
    assert completion["choices"][0]["message"]["content"] == "You said: hello lambda"
    assert completion["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("shape", EVENTS)
def test_stream_is_buffered_into_one_sse_body(lambda_handler: Any, shape: str) -> None:
    body = json.dumps({"model": "demo", "stream": True, "messages": [{"role": "user", "content": "a b"}]}).encode()
    response = lambda_handler(EVENTS[shape]("POST", "/v1/chat/completions", body), CONTEXT)
    assert response["statusCode"] == 200
    assert header(response, "content-type").startswith("text/event-stream")
    frames = [line[6:] for line in body_of(response).decode().splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    text = "".join((json.loads(f)["choices"] or [{}])[0].get("delta", {}).get("content") or "" for f in frames[:-1])
    assert text == "You said: a b"


@pytest.mark.parametrize("shape", EVENTS)
def test_unknown_model_is_404(lambda_handler: Any, shape: str) -> None:
    body = json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
    response = lambda_handler(EVENTS[shape]("POST", "/v1/chat/completions", body), CONTEXT)
    assert response["statusCode"] == 404
    assert header(response, "content-type") == "application/json"
    error = json.loads(body_of(response))["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"


def test_handler_refuses_to_start_without_keys(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.lambda_handler import make_handler

    keyless = load_config(config_path, env={})
    monkeypatch.delenv("OMNI_LLM_ALLOW_UNAUTHENTICATED", raising=False)
    with pytest.raises(RuntimeError, match="no API keys"):
        make_handler(keyless)
    monkeypatch.setenv("OMNI_LLM_ALLOW_UNAUTHENTICATED", "1")
    assert callable(make_handler(keyless))


# -- Cold start: no vendor SDK at import -----------------------------------------------------------------

def test_imports_pull_in_no_vendor_sdk(config_path: Path) -> None:
    code = textwrap.dedent(f"""\
        import json, sys, types
        sdks = {VENDOR_SDKS!r}
        def loaded():
            return sorted(m for m in sys.modules if any(m == s or m.startswith(s + ".") for s in sdks))
        import proxy.app
        after_app = loaded()
        import proxy.lambda_handler
        after_handler = loaded()
        event = {{"version": "2.0", "routeKey": "$default", "rawPath": "/v1/chat/completions", "rawQueryString": "",
                  "headers": {{"authorization": "Bearer {KEY}", "content-type": "application/json", "host": "x"}},
                  "requestContext": {{"http": {{"method": "POST", "path": "/v1/chat/completions",
                                               "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7"}},
                                     "stage": "$default", "routeKey": "$default"}},
                  "body": json.dumps({{"model": "demo", "messages": [{{"role": "user", "content": "hi"}}]}}),
                  "isBase64Encoded": False}}
        status = proxy.lambda_handler.handler(event, types.SimpleNamespace())["statusCode"]
        print(json.dumps({{"app": after_app, "handler": after_handler, "after_demo_chat": loaded(),
                          "status": status}}))
        """)
    env = {**os.environ, "OMNI_LLM_CONFIG": str(config_path), "OMNI_LLM_API_KEY": KEY}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"app": [], "handler": [], "after_demo_chat": [], "status": 200}


# -- The container's command, as the Lambda Web Adapter runs it -----------------------------------------

def dockerfile() -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(ENTRYPOINT + CMD, ENV of the final stage, COPY destination -> repo source) from the Dockerfile."""
    logical = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    copies: dict[str, str] = {}
    for line in (raw.strip() for raw in logical):
        word, _, rest = line.partition(" ")
        if word == "FROM":
            env = {}
        elif word == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "COPY" and not rest.startswith("--"):
            *sources, destination = rest.split()
            copies.update({destination: source for source in sources[-1:]})
    return entrypoint + cmd, env, copies


def test_dockerfile_runs_the_adapter_in_streaming_mode() -> None:
    command, env, _ = dockerfile()
    text = (ROOT / "Dockerfile").read_text()
    assert "/lambda-adapter /opt/extensions/lambda-adapter" in text
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/health"
    assert env["AWS_LWA_PORT"] == env["PORT"] == "8080"
    assert "ARG EXTRAS=all" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")
    assert command[-1] == "serve"


def container_env(port: int, config_path: Path, **overrides: str) -> dict[str, str]:
    _, image_env, _ = dockerfile()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNI_LLM_", "AWS_LWA_"))}
    env.update({k: v for k, v in image_env.items() if k not in ("PATH", "HOME")})
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               AWS_LWA_PORT=str(port), OMNI_LLM_CONFIG=str(config_path))
    env.update(overrides)
    return env


def container_command() -> list[str]:
    command, _, copies = dockerfile()
    return [str(ROOT / copies[command[0]]), *command[1:]]


def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    """The adapter's readiness check: GET until healthy (it polls every 10 ms)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    raise AssertionError("the container command never became ready")


def run_container(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(container_command(), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_container_command_streams_chunk_by_chunk(config_path: Path) -> None:
    port = free_port()
    process = run_container(container_env(port, config_path, OMNI_LLM_API_KEY=KEY))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base + dockerfile()[1]["AWS_LWA_READINESS_CHECK_PATH"])
        body = {"model": "demo-slow", "stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]}
        warm = httpx.post(base + "/v1/chat/completions", json={**body, "stream": False}, timeout=30,
                          headers={"authorization": f"Bearer {KEY}"})  # first-request imports are not measured
        assert warm.status_code == 200, warm.text
        arrivals: list[float] = []
        words: list[str] = []
        started = time.monotonic()
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {KEY}"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    delta = (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {})
                    if delta.get("content"):
                        arrivals.append(time.monotonic() - started)
                        words.append(delta["content"])
        assert "".join(words) == "You said: one two three four five six"
        spread = (len(words) - 1) * WORD_DELAY_MS / 1000
        # Not buffered: the words arrive spread over the mock's delays (a buffered reply arrives all at
        # once: a spread near 0). Half the spread leaves room for this reader being descheduled.
        assert arrivals[-1] - arrivals[0] >= 0.5 * spread, arrivals
    finally:
        stop(process)


@pytest.mark.parametrize(("overrides", "serves"), [
    ({}, False),  # no key, published port: refuse rather than serve an open gateway
    ({"OMNI_LLM_HOST": "127.0.0.1"}, True),  # loopback only: the adapter's path (IAM-guarded URL)
    ({"OMNI_LLM_ALLOW_UNAUTHENTICATED": "1"}, True),  # explicit opt-in
    ({"OMNI_LLM_API_KEY": KEY}, True),
])
def test_container_bind_and_auth(config_path: Path, overrides: dict[str, str], serves: bool) -> None:
    port = free_port()
    process = run_container(container_env(port, config_path, **overrides))
    try:
        if serves:
            wait_ready(process, f"http://127.0.0.1:{port}/health")
        else:
            output = process.communicate(timeout=30)[0].decode()
            assert process.returncode == 1
            assert "refusing to listen on 0.0.0.0" in output
    finally:
        stop(process)
