"""The real server and CLI: auth, limits, CORS, routes, metrics, check/models, SIGTERM drain, bind refusal."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.proxy_server import RunningProxy, free_port, omni_llm_command, run_proxy

KEY = "gw-key-abcdef"
CONFIG = f"""
server:
  api_keys: ["{KEY}", "second-key-123"]
  max_request_bytes: 2000
  cors_origins: ["https://chat.example"]
providers:
  demo: {{type: mock, chunk_delay_ms: 100}}
  fast: {{type: mock}}
  openai: {{type: openai, api_key: "${{OMNI_TEST_UNSET_KEY:-}}"}}
models:
  demo: {{provider: fast, model: m}}
  slow: {{provider: demo, model: m}}
  gpt: {{provider: openai, model: gpt-4o}}
strategies:
  any: [gpt, demo]
"""
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def proxy() -> Iterator[RunningProxy]:
    with run_proxy(CONFIG) as running:
        yield running


@pytest.mark.parametrize(
    ("path", "method", "headers", "status"),
    [
        ("/health", "GET", {}, 200),
        ("/metrics", "GET", {}, 401),
        ("/v1/models", "GET", {}, 401),
        ("/v1/models", "GET", {"authorization": "Bearer wrong"}, 401),
        ("/v1/models", "GET", AUTH, 200),
        ("/v1/models", "GET", {"x-api-key": "second-key-123"}, 200),
        ("/models", "GET", {"x-api-key": KEY}, 200),
        ("/metrics", "GET", AUTH, 200),
        ("/v1/nothing", "GET", AUTH, 404),
        ("/v1/chat/completions", "GET", AUTH, 405),
    ],
)
def test_auth_and_routes(proxy: RunningProxy, path: str, method: str, headers: dict[str, str], status: int) -> None:
    response = httpx.request(method, proxy.url + path, headers=headers)
    assert response.status_code == status
    if status >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        if status == 401:
            assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        if status == 404:
            assert error["code"] == "not_found"


def test_chat_without_v1_prefix(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.url + "/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "You said: hi"


def test_models_hide_unready_providers(proxy: RunningProxy) -> None:
    ids = [m["id"] for m in httpx.get(proxy.v1 + "/models", headers=AUTH).json()["data"]]
    assert ids == ["demo", "slow", "any"]
    assert httpx.get(proxy.v1 + "/models/demo", headers=AUTH).json()["id"] == "demo"
    assert httpx.get(proxy.v1 + "/models/fast/anything", headers=AUTH).json()["owned_by"] == "fast"
    missing = httpx.get(proxy.v1 + "/models/gpt", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    unready = httpx.post(proxy.v1 + "/chat/completions", json={**CHAT, "model": "gpt"}, headers=AUTH)
    assert unready.status_code == 503
    assert unready.json()["error"]["code"] == "provider_not_configured"
    assert "OMNI_TEST_UNSET_KEY" in unready.json()["error"]["message"]
    served = httpx.post(proxy.v1 + "/chat/completions", json={**CHAT, "model": "any"}, headers=AUTH)
    assert served.json()["model"] == "demo"


def test_body_limit_content_length_and_chunked(proxy: RunningProxy) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 3000}]}
    response = httpx.post(proxy.v1 + "/chat/completions", json=big, headers=AUTH)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:
        data = orjson.dumps(big)
        for i in range(0, len(data), 500):
            yield data[i:i + 500]

    response = httpx.post(proxy.v1 + "/chat/completions", content=chunked(), headers=AUTH)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "param"),
    [(b"{not json", None), (b'{"model": "demo", "messages": []}', "messages"),
     (b'{"model": "demo", "messages": [{"role": "bot", "content": "x"}]}', "messages[0].role")],
)
def test_bad_requests_are_400_naming_the_field(proxy: RunningProxy, body: bytes, param: str | None) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error" and response.json()["error"]["param"] == param


def test_cors(proxy: RunningProxy) -> None:
    preflight = httpx.options(proxy.v1 + "/chat/completions", headers={
        "origin": "https://chat.example", "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
    response = httpx.post(proxy.v1 + "/chat/completions", json=CHAT, headers={**AUTH, "origin": "https://chat.example"})
    assert response.headers["access-control-allow-origin"] == "https://chat.example"
    assert "x-omni-provider" in response.headers["access-control-expose-headers"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    # Another origin: the preflight is refused and answers carry no allow-origin.
    refused = httpx.options(proxy.v1 + "/chat/completions", headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    other = httpx.post(proxy.v1 + "/chat/completions", json=CHAT, headers={**AUTH, "origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    errored = httpx.post(proxy.v1 + "/chat/completions", json={}, headers={**AUTH, "origin": "https://chat.example"})
    assert errored.status_code == 400 and errored.headers["access-control-allow-origin"] == "https://chat.example"


def test_metrics_count_requests_and_tokens(proxy: RunningProxy) -> None:
    httpx.post(proxy.v1 + "/chat/completions", json=CHAT, headers=AUTH)
    text = httpx.get(proxy.url + "/metrics", headers=AUTH).text
    assert 'omni_requests_total{model="demo",provider="fast",route="chat",status="200"}' in text
    assert 'omni_tokens_total{kind="completion",model="demo",provider="fast"}' in text
    assert "omni_request_duration_seconds_bucket" in text


def test_access_log_is_json_with_request_id(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions", json=CHAT, headers={**AUTH, "x-request-id": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    entry = proxy.access_entry("trace-42")  # polled: the line is written after the answer is sent
    assert entry["status"] == 200 and entry["model"] == "demo" and entry["provider"] == "fast"
    assert KEY not in proxy.logs()


def test_sigterm_drains_streams_and_exits_zero() -> None:
    with run_proxy(CONFIG) as running:
        with httpx.stream("POST", running.v1 + "/chat/completions", headers=AUTH, json={
                **CHAT, "model": "slow", "stream": True,
                "messages": [{"role": "user", "content": "one two three four five six"}]}) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            assert "You" in first
            running.process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        assert running.process.wait(timeout=15) == 0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    return subprocess.run([*omni_llm_command(), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_check_and_models_commands(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(CONFIG)
    result = run_cli("check", "--config", str(good))
    assert result.returncode == 0 and "OK" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {openai: {type: openai, api_key: x}}\nmodels:\n  gpt-4o: {provider: opnai, model: g}\n"
                   "  other: {provider: openai}\n")
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 1
    assert "models.gpt-4o.provider: unknown provider 'opnai'" in result.stdout
    assert "models.other.model: required" in result.stdout
    models = run_cli("models", "--config", str(good)).stdout.splitlines()
    assert any(line.split()[:4] == ["demo", "fast", "m", "ready"] for line in models)
    gpt = next(line for line in models if line.startswith("gpt "))
    assert "not ready: missing api_key (set OMNI_TEST_UNSET_KEY)" in gpt
    env_path = run_cli("models", env={"OMNI_LLM_CONFIG": str(good)})
    assert "slow" in env_path.stdout


def test_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text("providers: {demo: {type: mock}}\nmodels: {demo: {provider: demo}}\n")
    port = str(free_port())
    refused = run_cli("serve", "--config", str(config), "--host", "0.0.0.0", "--port", port)
    assert refused.returncode == 1 and "--allow-unauthenticated" in refused.stderr
    process = subprocess.Popen([*omni_llm_command(), "serve", "--config", str(config), "--host", "0.0.0.0",
                                "--port", port, "--allow-unauthenticated"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"Omni-LLM listening on http://0.0.0.0:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_multiple_workers_serve_and_drain() -> None:
    with run_proxy(CONFIG, args=["--workers", "2"]) as running:
        answers = {httpx.post(running.v1 + "/chat/completions", json=CHAT, headers=AUTH).json()["model"]
                   for _ in range(6)}
        assert answers == {"demo"}
        # Printed by the parent once a worker answered /health (polled: it may follow our first answer).
        wait_for(lambda: f"Omni-LLM listening on {running.url} (2 workers)" in running.logs())
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=20) == 0


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_workers_announce_listening_only_when_a_worker_answers(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(CONFIG)
    port = free_port()
    process = subprocess.Popen([*omni_llm_command(), "serve", "--config", str(config), "--port", str(port),
                                "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"Omni-LLM listening on http://127.0.0.1:{port} (2 workers)"
        # Once announced, a connection is answered at once (a 0.5 s budget, no retry).
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "--workers", "0"], "--workers: must be at least 1, got 0"),
    (["serve", "--workers", "-2"], "--workers: must be at least 1, got -2"),
    (["serve", "--workers", "two"], "--workers: expected a whole number, got 'two'"),
])
def test_bad_usage_exits_2(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2 and message in result.stderr and "usage:" in result.stderr


def test_version() -> None:
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"omni-llm {version('omni-llm')}"


@pytest.mark.parametrize("config", ["shipped", "long"])
def test_models_fits_100_columns(tmp_path: Path, config: str) -> None:
    path = tmp_path / "models.yaml"
    if config == "shipped":
        from proxy.config import default_config_path

        path.write_text(default_config_path().read_text())
    else:
        path.write_text("providers:\n  a-rather-long-provider-name: {type: openai, api_key: '${NOPE_UNSET_VARIABLE_X:-}'}\n"
                        "models:\n" + "".join(f"  model-number-{i}-with-a-long-name: {{provider: a-rather-long-provider-name,"
                                                f" model: upstream/model-{i}-with-a-long-identifier}}\n" for i in range(3))
                        + "strategies:\n  everything: [" + ", ".join(f"model-number-{i}-with-a-long-name" for i in range(3))
                        + "]\n")
    result = run_cli("models", "--config", str(path), env={"AWS_PROFILE": ""})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, "\n".join(line for line in lines if len(line) > 100)
    assert lines[0].split() == ["MODEL", "PROVIDER", "UPSTREAM", "MODEL", "STATUS"]
    if config == "long":  # cells wrap in their column; a long reason goes on its own line below the row
        assert lines[1].startswith("model-number-0-with-a-long") and lines[1].endswith("not ready:")
        assert "    missing api_key (set NOPE_UNSET_VARIABLE_X)" in lines
        assert "model-number-2-with-a-long-name" in result.stdout.split("STRATEGY")[1]
