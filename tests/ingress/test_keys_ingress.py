"""Virtual keys hold on every ingress: a key's models, its rate limit and the usage log apply to
/v1/messages (also where an Anthropic model would be passed through), /v1/responses and /v1/completions."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, omni_llm_command, run_proxy

MASTER = "master-key-0123456789"
MESSAGE = {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory,
          fakes: dict[str, tuple[str, Recorder]]) -> Iterator[tuple[Path, RunningProxy]]:
    tmp = tmp_path_factory.mktemp("ingress-keys")
    text = f"""
server: {{api_keys: ["{MASTER}"]}}
providers:
  oai: {{type: openai, api_key: sk-up, base_url: "{fakes['oai'][0]}/v1", max_retries: 0}}
  ant: {{type: anthropic, api_key: sk-ant-up, base_url: "{fakes['ant'][0]}", max_retries: 0}}
models:
  gpt: {{provider: oai, model: gpt-4o}}
  claude: {{provider: ant, model: claude-sonnet-5}}
state:
  database: "sqlite:///{tmp}/state.db"
"""
    path = tmp / "models.yaml"
    path.write_text(text)
    with run_proxy(text) as running:
        yield path, running


def create_key(config: Path, *flags: str) -> tuple[str, str]:
    done = subprocess.run([*omni_llm_command(), "keys", "create", "--name", "t", *flags, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return lines[0], lines[1][4:]


def post(proxy: RunningProxy, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(proxy.v1 + path, json=body, headers={"x-api-key": key}, timeout=30)


def test_a_keys_models_hold_on_every_ingress(setup: tuple[Path, RunningProxy]) -> None:
    config, proxy = setup
    key, key_id = create_key(config, "--models", "gpt")
    assert post(proxy, "/messages", key, {"model": "gpt", **MESSAGE}).status_code == 200
    refused = post(proxy, "/messages", key, {"model": "claude", **MESSAGE})
    assert refused.status_code == 403
    assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "permission_error"
    for path, body in (("/responses", {"model": "claude", "input": "hi"}),
                       ("/completions", {"model": "claude", "prompt": "hi"})):
        response = post(proxy, path, key, body)
        assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed"
    rows = httpx.get(proxy.url + "/admin/usage", params={"key": key_id},
                     headers={"authorization": f"Bearer {MASTER}"}).json()["data"]
    assert sorted(row["status"] for row in rows) == [200, 403, 403, 403]


def test_a_keys_rate_limit_holds_on_messages_with_an_anthropic_model(setup: tuple[Path, RunningProxy]) -> None:
    config, proxy = setup
    key, _ = create_key(config, "--models", "claude", "--rpm", "1")
    first = post(proxy, "/messages", key, {"model": "claude", **MESSAGE})
    assert first.status_code == 200 and first.json()["content"][0]["text"] == "echo: hi"
    second = post(proxy, "/messages", key, {"model": "claude", "stream": True, **MESSAGE})
    assert second.status_code == 429 and second.headers["retry-after"]
    assert second.json()["error"]["type"] == "rate_limit_error"


def test_with_a_usage_log_anthropic_models_are_translated_and_logged(
        setup: tuple[Path, RunningProxy], fakes: dict[str, tuple[str, Recorder]]) -> None:
    """`state` configured: every request is a usage row, so the gate sees it, so it is not passed through."""
    response = post(setup[1], "/messages", MASTER, {"model": "claude", **MESSAGE, "service_tier": "auto"})
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "echo: hi"
    assert response.headers["x-omni-dropped-params"] == "service_tier"
    assert "service_tier" not in fakes["ant"][1].last().body
    rows = httpx.get(setup[1].url + "/admin/usage", params={"model": "claude"},
                     headers={"authorization": f"Bearer {MASTER}"}).json()["data"]
    assert any(row["key_id"] is None and row["status"] == 200 for row in rows)
