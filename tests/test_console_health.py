"""`GET /admin/health` (the console's Models page) and the `/ui` static routes, in process."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.config import parse_config
from proxy.console.routes import _quantile

MASTER = "master-key-0123456789"
CONFIG = f"""
server: {{api_keys: ["{MASTER}"]}}
providers:
  demo: {{type: mock}}
  openai: {{type: openai}}
models:
  demo: {{provider: demo, model: mock-1}}
  gpt: {{provider: openai, model: gpt-4o-mini}}
strategies:
  both: [gpt, demo]
"""
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture()
def client() -> TestClient:
    return TestClient(create_app(parse_config(CONFIG, {}), tracing=None))


def test_quantile_interpolates_within_buckets() -> None:
    buckets = [(0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert _quantile(buckets, 0.5) == pytest.approx(0.1)
    assert _quantile(buckets, 0.75) == pytest.approx(0.55)
    assert _quantile(buckets, 0.99) == pytest.approx(0.982)
    assert _quantile([(float("inf"), 0.0)], 0.5) is None
    assert _quantile([(0.5, 0.0), (float("inf"), 3.0)], 0.5) == 0.5  # beyond the last finite bucket


def test_health_lists_models_readiness_and_live_figures(client: TestClient) -> None:
    assert client.get("/admin/health").status_code == 401
    for _ in range(3):
        answer = client.post("/v1/chat/completions", headers=AUTH,
                             json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
    body = client.get("/admin/health", headers=AUTH).json()
    models = {m["id"]: m for m in body["data"]}
    demo, gpt, both = models["demo"], models["gpt"], models["both"]
    assert demo["ready"] and demo["deployments"][0] == {
        "provider": "demo", "model": "mock-1", "mode": "chat", "ready": True, "not_ready": None,
        "cooling_down": False, "upstream_errors": 0}
    assert demo["requests"] == 3 and demo["errors"] == 0 and demo["error_rate"] == 0
    assert 0 < demo["p50_ms"] <= demo["p99_ms"]
    assert not gpt["ready"] and gpt["deployments"][0]["not_ready"] == "missing api_key"
    assert gpt["requests"] == 0 and gpt["error_rate"] is None and gpt["p99_ms"] is None
    assert both == {**both, "kind": "strategy", "ready": True, "members": ["gpt", "demo"], "requests": 0, "p50_ms": None}


def test_ui_serves_only_its_files_without_a_key(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/style.css").status_code == 200
    assert client.get("/ui/routes.py").status_code == 401  # not an open path
    assert client.get("/ui/routes.py", headers=AUTH).status_code == 404  # and not a served file either
