"""Routing and resilience end to end: timeouts, first-token timeout, cooldown, load balancing, final errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, run_proxy


def config(upstream: str) -> str:
    return f"""
server:
  request_timeout_s: 3
router:
  cooldown_failures: 2
  cooldown_window_s: 60
  cooldown_s: 300
  first_token_timeout_s: 0.5
providers:
  up: {{type: openai, api_key: k, base_url: "{upstream}/v1", max_retries: 0}}
  patient: {{type: openai, api_key: k, base_url: "{upstream}/v1", max_retries: 0, timeout_s: 0.4}}
  retrying: {{type: openai, api_key: k, base_url: "{upstream}/v1", max_retries: 1}}
  demo: {{type: mock}}
models:
  slow: {{provider: patient, model: slow-1500}}
  slow-stream: {{provider: up, model: slow-1500}}
  very-slow: {{provider: up, model: slow-5000}}
  tripping: {{provider: up, model: fail-503}}
  limited-a: {{provider: retrying, model: fail-429}}
  limited-b: {{provider: up, model: fail-429}}
  pool:
    - {{provider: up, model: lb-a}}
    - {{provider: up, model: lb-b}}
  demo: {{provider: demo, model: mock}}
"""


@pytest.fixture(scope="module")
def proxy(openai_upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    with run_proxy(config(openai_upstream[0])) as running:
        yield running


def chat(proxy: RunningProxy, model: str, **extra: object) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def test_attempt_timeout_is_504_or_falls_back(proxy: RunningProxy) -> None:
    response = chat(proxy, "slow")
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
    response = chat(proxy, "slow", fallbacks=["demo"])
    assert response.status_code == 200 and response.json()["model"] == "demo"
    assert response.headers["x-omni-attempts"] == "slow=patient/slow-1500:504, demo=demo/mock:200"


def test_first_token_timeout_for_streams(proxy: RunningProxy) -> None:
    response = chat(proxy, "slow-stream", stream=True)
    assert response.status_code == 504
    assert "first token" in response.json()["error"]["message"]


def test_request_timeout(proxy: RunningProxy) -> None:
    response = chat(proxy, "very-slow")
    assert response.status_code == 504
    assert "3 s" in response.json()["error"]["message"]


def test_all_rate_limited_is_429_with_retry_after(proxy: RunningProxy, openai_upstream: tuple[str, Recorder]) -> None:
    response = chat(proxy, "limited-a", fallbacks=["limited-b"])
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0"
    message = response.json()["error"]["message"]
    assert "limited-a=retrying/fail-429:429" in message and "limited-b=up/fail-429:429" in message


def test_cooldown_skips_failing_deployment(proxy: RunningProxy, openai_upstream: tuple[str, Recorder]) -> None:
    recorder = openai_upstream[1]

    def upstream_calls() -> int:
        return sum(1 for r in recorder.requests if r.body.get("model") == "fail-503")

    before = upstream_calls()
    for _ in range(2):  # two failures within the window open the circuit
        response = chat(proxy, "tripping", fallbacks=["demo"])
        assert response.json()["model"] == "demo"
    assert upstream_calls() == before + 2
    response = chat(proxy, "tripping", fallbacks=["demo"])
    assert response.status_code == 200 and upstream_calls() == before + 2
    assert response.headers["x-omni-attempts"] == "demo=demo/mock:200"
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'omni_deployment_healthy{provider="up",upstream_model="fail-503"} 0.0' in metrics
    # with nothing else to try, a cooling deployment is still probed rather than failing untried
    assert chat(proxy, "tripping").status_code == 502 and upstream_calls() == before + 3


def test_round_robin_over_deployments(proxy: RunningProxy, openai_upstream: tuple[str, Recorder]) -> None:
    served = [chat(proxy, "pool").headers["x-omni-upstream-model"] for _ in range(4)]
    assert sorted(served) == ["lb-a", "lb-a", "lb-b", "lb-b"]
    assert served[0] != served[1] and served[2] != served[3]
