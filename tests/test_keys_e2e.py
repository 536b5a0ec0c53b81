"""Virtual keys, limits, budgets and the usage log through the real `omni-llm serve` (CONTRACT §12)."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, omni_llm_command, run_proxy

MASTER = "master-key-0123456789"


def config_yaml(db: str, upstream: str, extra: str = "") -> str:
    return f"""
server: {{api_keys: ["{MASTER}"]}}
providers:
  up: {{type: openai, api_key: "upstream-key", base_url: "{upstream}/v1", max_retries: 0}}
  demo: {{type: mock}}
models:
  chat: {{provider: up, model: echo-model, input_cost_per_mtok: 1000, output_cost_per_mtok: 1000}}
  slow: {{provider: up, model: slow-150, input_cost_per_mtok: 1000, output_cost_per_mtok: 1000}}
  other: {{provider: up, model: echo-model}}
  endless: {{provider: up, model: endless, input_cost_per_mtok: 1000, output_cost_per_mtok: 1000}}
  emb: {{provider: up, model: text-embedding-3-small, mode: embedding, input_cost_per_mtok: 1000}}
  demo: {{provider: demo, model: mock-1}}
  rr: {{provider: demo, model: mock-rerank-1, mode: rerank, input_cost_per_mtok: 100000}}
state:
  database: "sqlite:///{db}"
rag:
  store: {{type: sqlite, path: "{db}.rag"}}
{extra}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, openai_upstream: tuple[str, Recorder]) -> Iterator[tuple[Path, str]]:
    """(config path for the CLI, the same YAML for the server): one per module, each test makes its own keys."""
    tmp_path = tmp_path_factory.mktemp("keys")
    path = tmp_path / "models.yaml"
    text = config_yaml(f"{tmp_path}/state.db", openai_upstream[0])
    path.write_text(text)
    yield path, text


@pytest.fixture(scope="module")
def proxy(setup: tuple[Path, str]) -> Iterator[RunningProxy]:
    with run_proxy(setup[1]) as running:
        yield running


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*omni_llm_command(), "keys", *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60)


def create_key(config: Path, *flags: str) -> tuple[str, str]:
    done = cli(config, "create", "--name", "test", *flags)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sk-omni-") and lines[1].startswith("id: ")
    return lines[0], lines[1][4:]


def chat(proxy: RunningProxy, key: str, model: str = "chat", **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    return httpx.post(proxy.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def admin(proxy: RunningProxy, method: str, path: str, key: str = MASTER, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, proxy.url + path, headers={"authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def usage(proxy: RunningProxy, **params: str) -> dict[str, Any]:
    response = admin(proxy, "GET", "/admin/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# -- keys ------------------------------------------------------------------------------


def test_cli_key_works_with_the_sdk_and_is_stored_hashed(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, key_id = create_key(setup[0], "--models", "chat,demo")
    client = openai.OpenAI(base_url=proxy.v1, api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "echo: hello"
    database = setup[0].parent / "state.db"
    assert key.encode() not in b"".join(p.read_bytes() for p in database.parent.glob("state.db*"))
    listed = cli(setup[0], "list")
    assert key_id in listed.stdout and key[:12] in listed.stdout and key not in listed.stdout
    assert "active" in listed.stdout


def test_a_key_sees_and_uses_only_its_models(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, _ = create_key(setup[0], "--models", "chat")
    client = openai.OpenAI(base_url=proxy.v1, api_key=key, max_retries=0)
    assert [m.id for m in client.models.list()] == ["chat"]
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 403
    assert info.value.body["type"] == "permission_error" and info.value.body["code"] == "model_not_allowed"
    embed = httpx.post(proxy.v1 + "/embeddings", json={"model": "emb", "input": "x"},
                       headers={"authorization": f"Bearer {key}"})
    assert embed.status_code == 403
    master = openai.OpenAI(base_url=proxy.v1, api_key=MASTER, max_retries=0)
    assert {"chat", "other", "demo"} <= {m.id for m in master.models.list()}


@pytest.mark.parametrize("how", ["cli", "admin"])
def test_revoked_key_is_401(tmp_path: Path, openai_upstream: tuple[str, Recorder], how: str) -> None:
    # The CLI is another process: this instance sees it after `key_cache_ttl_s` (0 here); the admin API at once.
    path = tmp_path / "models.yaml"
    text = config_yaml(f"{tmp_path}/state.db", openai_upstream[0]).replace(
        "  database:", "  key_cache_ttl_s: 0\n  database:" if how == "cli" else "  database:")
    path.write_text(text)
    key, key_id = create_key(path)
    with run_proxy(text) as proxy:
        assert chat(proxy, key).status_code == 200
        if how == "cli":
            done = cli(path, "revoke", key_id)
            assert done.returncode == 0, done.stderr
        else:
            assert admin(proxy, "DELETE", f"/admin/keys/{key_id}").json()["deleted"] is True
        refused = chat(proxy, key)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert "revoked" in refused.json()["error"]["message"]
    assert cli(path, "revoke", key_id).returncode == 1  # already revoked


def test_expired_key_is_401(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, _ = create_key(setup[0], "--expires", "2020-01-01")
    refused = chat(proxy, key)
    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    later, _ = create_key(setup[0], "--expires", "2999-01-01")
    assert chat(proxy, later).status_code == 200


def test_unknown_virtual_key_is_401(proxy: RunningProxy) -> None:
    assert chat(proxy, "sk-omni-not-a-real-key").status_code == 401
    assert chat(proxy, "not-even-the-format").status_code == 401


# -- limits ----------------------------------------------------------------------------


def test_rpm_limit_429_with_retry_after_and_headers(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, _ = create_key(setup[0], "--rpm", "2")
    answers = [chat(proxy, key) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    for answer, remaining in zip(answers, ["1", "0", "0"]):
        assert answer.headers["x-ratelimit-limit-requests"] == "2"
        assert answer.headers["x-ratelimit-remaining-requests"] == remaining
        assert "x-ratelimit-limit-tokens" not in answer.headers  # only limits that are set
    error = answers[2].json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert 1 <= int(answers[2].headers["retry-after"]) <= 30
    other, _ = create_key(setup[0], "--rpm", "2")
    assert chat(proxy, other).status_code == 200  # per key


def test_tpm_limit_counts_estimated_then_real_tokens(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, _ = create_key(setup[0], "--tpm", "30")
    long = [{"role": "user", "content": "word " * 150}]  # ~190 tokens estimated; the upstream reports 12 used
    first = chat(proxy, key, messages=long)  # larger than the bucket: passes only when it is full
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "30"
    second = chat(proxy, key, messages=long)  # corrected to 12 used: 18 left, not a full bucket
    assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(second.headers["retry-after"]) >= 1 and second.headers["x-ratelimit-limit-tokens"] == "30"
    short = chat(proxy, key)  # ~8 tokens estimated fit in what the correction gave back
    assert short.status_code == 200, short.text
    assert int(short.headers["x-ratelimit-remaining-tokens"]) < 18


def test_limit_defaults_apply_to_virtual_keys_not_master_keys(tmp_path: Path,
                                                              openai_upstream: tuple[str, Recorder]) -> None:
    path = tmp_path / "models.yaml"
    text = config_yaml(f"{tmp_path}/state.db", openai_upstream[0], "limits: {rpm: 1}")
    path.write_text(text)
    key, _ = create_key(path)
    own, _ = create_key(path, "--rpm", "3")
    with run_proxy(text) as proxy:
        masters = [chat(proxy, MASTER) for _ in range(3)]
        assert [a.status_code for a in masters] == [200] * 3
        assert "x-ratelimit-limit-requests" not in masters[0].headers
        assert [chat(proxy, key).status_code for _ in range(2)] == [200, 429]
        assert [chat(proxy, own).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_embeddings_are_limited_too(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, _ = create_key(setup[0], "--rpm", "1")
    headers = {"authorization": f"Bearer {key}"}
    first = httpx.post(proxy.v1 + "/embeddings", json={"model": "emb", "input": "x"}, headers=headers)
    second = httpx.post(proxy.v1 + "/embeddings", json={"model": "emb", "input": "x"}, headers=headers)
    assert (first.status_code, second.status_code) == (200, 429)


# -- budgets ---------------------------------------------------------------------------


def test_spent_budget_is_429_until_the_period_rolls_over(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    # Each call costs (9 + 3) tokens x $1000/M = $0.012; the budget covers two.
    key, key_id = create_key(setup[0], "--budget-usd", "0.02", "--budget-period", "daily")
    answers = [chat(proxy, key, max_tokens=5) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    error = answers[2].json()["error"]
    assert error["code"] == "budget_exceeded"
    now = time.time()
    midnight = (dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0).timestamp()
    assert abs(int(answers[2].headers["retry-after"]) - (midnight - now)) <= 5
    assert usage(proxy, key=key_id)["total"]["cost_usd"] == pytest.approx(0.024)


def test_budget_applies_to_embeddings(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, _ = create_key(setup[0], "--budget-usd", "0.001")
    headers = {"authorization": f"Bearer {key}"}
    codes = [httpx.post(proxy.v1 + "/embeddings", json={"model": "emb", "input": "x"}, headers=headers).status_code
             for _ in range(2)]
    assert codes == [200, 429]  # 3 tokens x $1000/M = $0.003 > $0.001


def test_rag_rerank_is_charged_to_the_key(proxy: RunningProxy) -> None:
    master = {"authorization": f"Bearer {MASTER}"}
    store = httpx.post(proxy.v1 + "/vector_stores", json={"name": "kb-rerank"}, headers=master, timeout=60).json()
    upload = httpx.post(proxy.v1 + "/files", headers=master, files={"file": ("a.txt", b"Owls hunt at night.")},
                        data={"purpose": "assistants"})
    added = httpx.post(proxy.v1 + f"/vector_stores/{store['id']}/files", json={"file_id": upload.json()["id"]},
                       headers=master, timeout=60)
    assert added.status_code == 200, added.text
    body = admin(proxy, "POST", "/admin/keys", json={"name": "rr"}).json()
    key = {"authorization": f"Bearer {body['key']}"}
    rag = {"collection": "kb-rerank", "top_k": 1}
    ids = []
    for extra in ({}, {"rerank": "rr"}):
        answer = httpx.post(proxy.v1 + "/chat/completions", headers=key, timeout=30, json={
            "model": "demo", "messages": [{"role": "user", "content": "When do owls hunt?"}], "rag": {**rag, **extra}})
        assert answer.status_code == 200, answer.text
        ids.append(answer.headers["x-request-id"])
    by_id = {r["request_id"]: r for r in usage(proxy, key=body["id"])["data"]}
    assert by_id[ids[0]]["cost_usd"] == 0  # the demo model is free: what costs is the priced rerank model
    assert by_id[ids[1]]["cost_usd"] > 0


def test_concurrent_burst_overspends_by_at_most_one_request(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    # 50 requests at once against a budget of about 4 requests; each takes 150 ms upstream, so
    # without reservations all 50 would pass the "spent < budget" check before any is settled.
    budget, one_request = 0.05, 0.012
    key, key_id = create_key(setup[0], "--budget-usd", str(budget))
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: chat(proxy, key, model="slow", max_tokens=5), range(50)))
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 429} and codes.count(200) >= 1
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"budget_exceeded"}
    # Then spend the rest, one at a time, until refused.
    for _ in range(10):
        if chat(proxy, key, model="slow", max_tokens=5).status_code == 429:
            break
    spent = usage(proxy, key=key_id)["total"]["cost_usd"]
    assert budget - one_request < spent <= budget + one_request


# -- usage log and admin API --------------------------------------------------------------


def test_every_request_is_a_usage_row(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    key, key_id = create_key(setup[0], "--models", "chat,demo,emb")
    ok = chat(proxy, key)
    streamed = httpx.post(proxy.v1 + "/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    refused = chat(proxy, key, model="other")
    rows = usage(proxy, key=key_id)["data"]
    by_id = {r["request_id"]: r for r in rows}
    row = by_id[ok.headers["x-request-id"]]
    assert row["key_id"] == key_id and row["model"] == "chat" and row["provider"] == "up"
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"], row["cached"]) == (9, 3, 200, False)
    assert row["cost_usd"] == pytest.approx(0.012) and row["latency_ms"] > 0
    assert float(ok.headers["x-omni-cost-usd"]) == pytest.approx(0.012)
    stream_row = by_id[streamed.headers["x-request-id"]]
    assert stream_row["model"] == "demo" and stream_row["status"] == 200 and stream_row["completion_tokens"] > 0
    assert by_id[refused.headers["x-request-id"]]["status"] == 403
    assert usage(proxy, key=key_id, model="demo")["total"]["requests"] == 1
    assert usage(proxy, key=key_id, since="2999-01-01")["total"]["requests"] == 0
    master = chat(proxy, MASTER)  # a `state` section logs master-key requests too
    row = next(r for r in usage(proxy)["data"] if r["request_id"] == master.headers["x-request-id"])
    assert row["key_id"] is None and row["status"] == 200


@pytest.mark.parametrize("auth, status", [(None, 401), ("wrong", 401), ("virtual", 403), (MASTER, 200)])
def test_admin_api_needs_a_master_key(setup: tuple[Path, str], proxy: RunningProxy, auth: str | None,
                                      status: int) -> None:
    if auth == "virtual":
        auth, _ = create_key(setup[0])
    headers = {"authorization": f"Bearer {auth}"} if auth else {}
    for method, path in (("GET", "/admin/keys"), ("GET", "/admin/usage"), ("POST", "/admin/keys"),
                         ("DELETE", "/admin/keys/key_x")):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "POST" else {}
        answer = httpx.request(method, proxy.url + path, headers=headers, **kwargs)
        expected = 404 if (status == 200 and method == "DELETE") else status
        assert answer.status_code == expected, (method, path, answer.text)
        if status == 403:
            assert answer.json()["error"]["type"] == "permission_error"


def test_admin_api_creates_lists_revokes(proxy: RunningProxy) -> None:
    created = admin(proxy, "POST", "/admin/keys", json={
        "name": "svc", "models": ["chat"], "rpm": 5, "tpm": 1000, "budget_usd": 2.5, "budget_period": "weekly",
        "expires": "2999-01-01", "mcp_servers": ["files"], "collections": ["handbook"]})
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["key"].startswith("sk-omni-") and body["id"].startswith("key_")
    assert (body["models"], body["rpm"], body["budget_period"], body["status"]) == (["chat"], 5, "weekly", "active")
    assert chat(proxy, body["key"]).status_code == 200
    listed = {k["id"]: k for k in admin(proxy, "GET", "/admin/keys").json()["data"]}
    assert "key" not in listed[body["id"]] and "key_hash" not in listed[body["id"]]
    assert admin(proxy, "DELETE", f"/admin/keys/{body['id']}").status_code == 200
    listed = {k["id"]: k for k in admin(proxy, "GET", "/admin/keys").json()["data"]}
    assert listed[body["id"]]["status"] == "revoked"
    assert chat(proxy, body["key"]).status_code == 401
    bad = admin(proxy, "POST", "/admin/keys", json={"name": "x", "models": ["nope"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "models"
    assert admin(proxy, "GET", "/admin/usage", params={"since": "yesterday"}).status_code == 400


def test_key_restricted_mcp_servers_and_collections(proxy: RunningProxy) -> None:
    body = admin(proxy, "POST", "/admin/keys", json={"name": "r", "mcp_servers": ["files"],
                                                     "collections": ["handbook"]}).json()
    mcp = chat(proxy, body["key"], mcp={"servers": ["shell"]})
    assert mcp.status_code == 403 and mcp.json()["error"]["code"] == "mcp_server_not_allowed"
    rag = chat(proxy, body["key"], rag={"collection": ["handbook", "secrets"]})
    assert rag.status_code == 403 and rag.json()["error"]["code"] == "collection_not_allowed"


def test_a_keys_collections_bound_the_vector_store_routes(proxy: RunningProxy) -> None:
    master = {"authorization": f"Bearer {MASTER}"}
    ids = {}
    for name in ("kb-open", "kb-secret"):
        created = httpx.post(proxy.v1 + "/vector_stores", json={"name": name}, headers=master, timeout=60)
        assert created.status_code == 200, created.text
        ids[name] = created.json()["id"]
    body = admin(proxy, "POST", "/admin/keys", json={"name": "kb", "collections": ["kb-open"]}).json()
    key = {"authorization": f"Bearer {body['key']}"}
    listed = httpx.get(proxy.v1 + "/vector_stores", headers=key).json()["data"]
    assert [s["name"] for s in listed] == ["kb-open"]
    assert httpx.get(proxy.v1 + f"/vector_stores/{ids['kb-open']}", headers=key).status_code == 200
    assert httpx.post(proxy.v1 + f"/vector_stores/{ids['kb-open']}/search", json={"query": "x"},
                      headers=key).status_code == 200
    secret = ids["kb-secret"]
    for method, path, payload in [("GET", f"/vector_stores/{secret}", None),
                                  ("POST", f"/vector_stores/{secret}/search", {"query": "x"}),
                                  ("GET", f"/vector_stores/{secret}/files", None),
                                  ("POST", f"/vector_stores/{secret}/files", {"file_id": "file-x"}),
                                  ("DELETE", f"/vector_stores/{secret}", None),
                                  ("POST", "/vector_stores", {"name": "kb-new"})]:
        refused = httpx.request(method, proxy.v1 + path, json=payload, headers=key)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error"]["code"] == "collection_not_allowed"
    assert httpx.get(proxy.v1 + f"/vector_stores/{secret}", headers=master).status_code == 200  # still there


def test_other_ingress_apis_pass_the_same_gate(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    # Messages, Responses and legacy completions go through Gateway.complete_chat/open_chat: same keys, same limits.
    key, key_id = create_key(setup[0], "--models", "chat", "--rpm", "3")
    headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    messages = {"model": "chat", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    first = httpx.post(proxy.v1 + "/messages", json=messages, headers=headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    refused = httpx.post(proxy.v1 + "/messages", json={**messages, "model": "other"}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "permission_error"
    responses = httpx.post(proxy.v1 + "/responses", json={"model": "chat", "input": "hi"}, headers=headers)
    assert responses.status_code == 200, responses.text
    completions = httpx.post(proxy.v1 + "/completions", json={"model": "chat", "prompt": "hi"}, headers=headers)
    assert completions.status_code == 200, completions.text
    limited = httpx.post(proxy.v1 + "/messages", json=messages, headers=headers)
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    routes = sorted(r["status"] for r in usage(proxy, key=key_id)["data"])
    assert routes == [200, 200, 200, 403, 429]


def test_a_stream_cut_by_the_client_is_settled(setup: tuple[Path, str], proxy: RunningProxy) -> None:
    # $1 with a 4096-token worst case at $1000/M: one request at a time. The client leaves mid-stream;
    # the reservation must be released (settled with what was streamed) or the key would stay blocked.
    key, key_id = create_key(setup[0], "--budget-usd", "1")
    body = {"model": "endless", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert sum(1 for line, _ in zip(lines, range(6)) if line.startswith("data: ")) >= 2
        request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in usage(proxy, key=key_id)["data"] if r["request_id"] == request_id]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rows and rows[0]["status"] == 499 and rows[0]["completion_tokens"] > 0 and rows[0]["cost_usd"] > 0
    assert chat(proxy, key).status_code == 200  # nothing is left in flight
