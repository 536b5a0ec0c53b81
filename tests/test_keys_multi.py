"""Several gateway instances as one: shared Redis (limits, budgets) and a shared PostgreSQL store (CONTRACT §12)."""

from __future__ import annotations

import concurrent.futures
import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, run_proxy

MASTER = "master-key-0123456789"


def config_yaml(database: str, upstream: str, redis_url: str, extra_state: str = "") -> str:
    return f"""
server: {{api_keys: ["{MASTER}"]}}
providers:
  up: {{type: openai, api_key: "upstream-key", base_url: "{upstream}/v1", max_retries: 0}}
models:
  chat: {{provider: up, model: echo-model, input_cost_per_mtok: 1000, output_cost_per_mtok: 1000}}
  slow: {{provider: up, model: slow-150, input_cost_per_mtok: 1000, output_cost_per_mtok: 1000}}
state:
  database: "{database}"
  redis_url: "{redis_url}"
{extra_state}
"""


def chat(proxy: RunningProxy, key: str, model: str = "chat", **fields: Any) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **fields})


def create_key(proxy: RunningProxy, **fields: Any) -> tuple[str, str]:
    answer = httpx.post(proxy.url + "/admin/keys", json={"name": "multi", **fields},
                        headers={"authorization": f"Bearer {MASTER}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["key"], answer.json()["id"]


def usage_once_written(proxies: list[RunningProxy], key_id: str, requests: int) -> dict[str, Any]:
    """The usage log once every instance has written its rows (they are written off the request path)."""
    deadline = time.monotonic() + 15
    while True:
        answer = httpx.get(proxies[0].url + "/admin/usage", params={"key": key_id},
                           headers={"authorization": f"Bearer {MASTER}"}).json()
        if answer["total"]["requests"] >= requests or time.monotonic() > deadline:
            return answer  # type: ignore[no-any-return]
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("fresh_postgres_url"))


def two_gateways(database: str, openai_upstream: tuple[str, Recorder], redis_url: str, extra: str = "") -> Any:
    text = config_yaml(database, openai_upstream[0], redis_url, extra)
    return run_proxy(text), run_proxy(text)


def test_two_gateways_enforce_one_rpm(database: str, openai_upstream: tuple[str, Recorder],
                                      fresh_redis_url: str) -> None:
    one_cm, two_cm = two_gateways(database, openai_upstream, fresh_redis_url)
    with one_cm as one, two_cm as two:
        key, key_id = create_key(one, rpm=4, budget_usd=100)  # limits and budget in one Redis round trip
        answers = [chat(gateway, key) for gateway in itertools.islice(itertools.cycle([one, two]), 8)]
        assert [a.status_code for a in answers] == [200] * 4 + [429] * 4
        assert answers[3].headers["x-ratelimit-remaining-requests"] == "0"
        assert all(a.headers["x-ratelimit-limit-requests"] == "4" for a in answers)
        written = usage_once_written([one, two], key_id, 8)
        assert sorted(r["status"] for r in written["data"]) == [200] * 4 + [429] * 4


def test_two_gateways_share_one_budget_under_a_burst(database: str, openai_upstream: tuple[str, Recorder],
                                                     fresh_redis_url: str) -> None:
    budget, one_request = 0.05, 0.012
    one_cm, two_cm = two_gateways(database, openai_upstream, fresh_redis_url)
    with one_cm as one, two_cm as two:
        key, key_id = create_key(one, budget_usd=budget, rpm=100_000)  # limits and budget in one round trip
        targets = [one, two] * 25
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda gw: chat(gw, key, model="slow", max_tokens=5), targets))
        assert {a.status_code for a in answers} == {200, 429}, [a.text for a in answers if a.status_code == 503][:2]
        passed, sent = sum(a.status_code == 200 for a in answers), len(answers)
        for gateway in itertools.islice(itertools.cycle([one, two]), 10):  # spend the rest
            answer = chat(gateway, key, model="slow", max_tokens=5)
            passed, sent = passed + (answer.status_code == 200), sent + 1
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "budget_exceeded"
                break
        written = usage_once_written([one, two], key_id, sent)
        spent = sum(r["cost_usd"] for r in written["data"] if r["status"] == 200)
        assert sum(r["status"] == 200 for r in written["data"]) == passed
        assert budget - one_request < spent <= budget + one_request


def test_revocation_reaches_other_instances_within_the_ttl(database: str, openai_upstream: tuple[str, Recorder],
                                                           fresh_redis_url: str) -> None:
    one_cm, two_cm = two_gateways(database, openai_upstream, fresh_redis_url, "  key_cache_ttl_s: 0.2")
    with one_cm as one, two_cm as two:
        key, key_id = create_key(one)
        assert chat(two, key).status_code == 200  # created on one, used on two
        revoked = httpx.delete(one.url + f"/admin/keys/{key_id}", headers={"authorization": f"Bearer {MASTER}"})
        assert revoked.status_code == 200
        assert chat(one, key).status_code == 401  # at once where it was revoked
        deadline = time.monotonic() + 5
        status: Callable[[], int] = lambda: chat(two, key).status_code  # noqa: E731
        while status() != 401:
            assert time.monotonic() < deadline, "instance two still accepts a revoked key"
            time.sleep(0.05)


def test_a_cooldown_one_instance_opens_every_instance_observes(tmp_path: Any, openai_upstream: tuple[str, Recorder],
                                                               fresh_redis_url: str) -> None:
    text = config_yaml(f"sqlite:///{tmp_path}/state.db", openai_upstream[0], fresh_redis_url).replace(
        "\nstate:", "\n  broken: {provider: up, model: fail-503}\nstate:") + (
        "strategies: {resilient: [broken, chat]}\n"
        "router: {cooldown_failures: 2, cooldown_window_s: 60, cooldown_s: 60}\n")
    cooling = 'omni_deployment_healthy{provider="up",upstream_model="fail-503"} 0.0'
    with run_proxy(text) as one, run_proxy(text) as two:
        for _ in range(2):  # one sees two failures: its circuit opens, and it tells two
            assert "broken=" in chat(one, MASTER, model="resilient").headers["x-omni-attempts"]
        assert "broken=" not in chat(one, MASTER, model="resilient").headers["x-omni-attempts"]
        deadline = time.monotonic() + 5
        while cooling not in httpx.get(two.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}).text:
            assert time.monotonic() < deadline, "instance two never learnt of the cooldown"
            time.sleep(0.05)
        # two has never seen broken fail itself, yet skips it.
        answer = chat(two, MASTER, model="resilient")
        assert answer.status_code == 200 and "broken=" not in answer.headers["x-omni-attempts"]
