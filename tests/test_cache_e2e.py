"""The response cache through the real server: hit/miss/bypass/refresh, JSON and streams, isolation (CONTRACT §12).

Hits are proven by the fake upstream's request count, not by the answer (which
is deterministic either way).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, omni_llm_command, run_proxy

MASTER = "master-key-0123456789"


def config_yaml(db: str, upstream: str, cache: str = "{enabled: true}", state_extra: str = "") -> str:
    return f"""
server: {{api_keys: ["{MASTER}"]}}
providers:
  up: {{type: openai, api_key: "upstream-key", base_url: "{upstream}/v1", max_retries: 0}}
models:
  chat: {{provider: up, model: echo-model, input_cost_per_mtok: 1000, output_cost_per_mtok: 1000}}
  tools: {{provider: up, model: tools}}
  broken: {{provider: up, model: fail-500}}
state:
  database: "sqlite:///{db}"
{state_extra}
cache: {cache}
"""


class Gateway:
    def __init__(self, proxy: RunningProxy, recorder: Recorder, config: Path) -> None:
        self.proxy, self.recorder, self.config = proxy, recorder, config

    def upstream_calls(self) -> int:
        return sum(1 for r in self.recorder.requests if r.path.endswith("/chat/completions"))

    def post(self, body: dict[str, Any], key: str = MASTER, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.proxy.v1 + "/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {key}", **(headers or {})})

    def key(self) -> str:
        done = subprocess.run([*omni_llm_command(), "keys", "create", "--name", "c", "--config", str(self.config)],
                              capture_output=True, text=True, check=True)
        return done.stdout.splitlines()[0]


def make_gateway(tmp_path: Path, upstream: tuple[str, Recorder], **kwargs: str) -> Iterator[Gateway]:
    path = tmp_path / "models.yaml"
    text = config_yaml(f"{tmp_path}/state.db", upstream[0], **kwargs)
    path.write_text(text)
    with run_proxy(text) as proxy:
        yield Gateway(proxy, upstream[1], path)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, openai_upstream: tuple[str, Recorder]) -> Iterator[Gateway]:
    """One gateway for the module: every test sends requests no other test sends."""
    yield from make_gateway(tmp_path_factory.mktemp("cache"), openai_upstream)


_counter = iter(range(10**6))


def unique_body(**fields: Any) -> dict[str, Any]:
    """A request no other test has sent (the fake upstream is shared by the session)."""
    return {"model": "chat", "messages": [{"role": "user", "content": f"question {next(_counter)} {id(fields)}"}],
            **fields}


def sse_events(response: httpx.Response) -> list[bytes]:
    raw = response.content
    assert raw.endswith(b"\n\n")
    return [event[len(b"data: "):] for event in raw.split(b"\n\n") if event]


def content_of_stream(response: httpx.Response) -> str:
    text = ""
    for event in sse_events(response):
        if event.startswith(b"{"):
            for choice in orjson.loads(event).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


def test_json_miss_then_hit(gw: Gateway) -> None:
    body = unique_body(temperature=0)
    before = gw.upstream_calls()
    first = gw.post(body)
    second = gw.post(body)
    assert (first.headers["x-omni-cache"], second.headers["x-omni-cache"]) == ("miss", "hit")
    assert gw.upstream_calls() == before + 1
    a, b = first.json(), second.json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"] and b["model"] == "chat"
    assert a["id"] != b["id"]  # every answer has its own id
    assert float(second.headers["x-omni-cost-usd"]) == 0.0


def test_one_entry_serves_json_and_stream(gw: Gateway) -> None:
    body = unique_body()
    before = gw.upstream_calls()
    json_answer = gw.post(body).json()["choices"][0]["message"]["content"]
    streamed = gw.post({**body, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.headers["x-omni-cache"] == "hit" and streamed.headers["content-type"].startswith("text/event-stream")
    assert content_of_stream(streamed) == json_answer
    events = sse_events(streamed)
    assert events[-1] == b"[DONE]" and b'"usage"' in events[-2]
    assert gw.upstream_calls() == before + 1


def test_a_stream_is_recorded_and_replayed_as_json_and_as_a_stream(gw: Gateway) -> None:
    body = unique_body()
    before = gw.upstream_calls()
    first = gw.post({**body, "stream": True})
    assert first.headers["x-omni-cache"] == "miss"
    text = content_of_stream(first)
    assert text.startswith("echo: question")
    replay = gw.post({**body, "stream": True})
    as_json = gw.post(body)
    assert (replay.headers["x-omni-cache"], as_json.headers["x-omni-cache"]) == ("hit", "hit")
    assert content_of_stream(replay) == text == as_json.json()["choices"][0]["message"]["content"]
    assert as_json.json()["usage"]["completion_tokens"] == 3  # the upstream's usage, recorded from the stream
    assert gw.upstream_calls() == before + 1


def test_tool_calls_are_cached_whole(gw: Gateway) -> None:
    body = {**unique_body(), "model": "tools", "tools": [{"type": "function", "function": {"name": "get_weather",
                                                                                        "parameters": {}}}]}
    streamed = gw.post({**body, "stream": True})
    hit = gw.post(body)
    assert hit.headers["x-omni-cache"] == "hit"
    calls = hit.json()["choices"][0]["message"]["tool_calls"]
    assert len(calls) == 2 and all(c["id"] and c["function"]["name"] for c in calls)
    assert hit.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert streamed.status_code == 200


def test_bypass_and_refresh(gw: Gateway) -> None:
    body = unique_body()
    before = gw.upstream_calls()
    bypass = gw.post(body, headers={"x-omni-cache": "bypass"})
    assert bypass.headers["x-omni-cache"] == "bypass"
    assert gw.post(body).headers["x-omni-cache"] == "miss"  # bypass stored nothing
    assert gw.post(body, headers={"x-omni-cache": "bypass"}).headers["x-omni-cache"] == "bypass"  # nor read
    refresh = gw.post(body, headers={"x-omni-cache": "refresh"})
    assert refresh.headers["x-omni-cache"] == "miss"
    assert gw.post(body).headers["x-omni-cache"] == "hit"
    assert gw.upstream_calls() == before + 4
    streamed = gw.post({**body, "stream": True}, headers={"x-omni-cache": "bypass"})
    assert streamed.headers["x-omni-cache"] == "bypass" and content_of_stream(streamed)
    assert gw.upstream_calls() == before + 5


def test_per_request_ttl(gw: Gateway) -> None:
    body = unique_body()
    assert gw.post({**body, "cache": {"ttl_s": 0}}).headers["x-omni-cache"] == "miss"
    assert gw.post(body).headers["x-omni-cache"] == "miss"  # ttl_s 0: not stored
    assert gw.post({**body, "cache": {"ttl_s": 60}}).headers["x-omni-cache"] == "hit"  # `cache` is not in the key
    sent = gw.recorder.last().body
    assert "cache" not in sent  # a gateway field, never sent upstream


@pytest.mark.parametrize("value", ["yes", {"ttl_s": -1}, {"ttl_s": "long"}, {"ttl": 5}])
def test_bad_cache_field_is_400(gw: Gateway, value: Any) -> None:
    answer = gw.post(unique_body(cache=value))
    assert answer.status_code == 400 and answer.json()["error"]["param"] in ("cache", "cache.ttl_s")


def test_changed_parameters_miss(gw: Gateway) -> None:
    body = unique_body()
    gw.post(body)
    for change in ({"temperature": 0.5}, {"max_tokens": 7}, {"seed": 1}, {"stop": ["x"]}, {"model": "tools"}):
        assert gw.post({**body, **change}).headers["x-omni-cache"] == "miss", change


def test_errors_are_not_cached(gw: Gateway) -> None:
    body = {**unique_body(), "model": "broken"}
    assert gw.post(body).status_code == 502
    again = gw.post(body)
    assert again.status_code == 502 and again.headers.get("x-omni-cache") != "hit"


def test_never_shared_across_virtual_keys(gw: Gateway) -> None:
    a, b = gw.key(), gw.key()
    body = unique_body()
    assert gw.post(body, key=a).headers["x-omni-cache"] == "miss"
    assert gw.post(body, key=b).headers["x-omni-cache"] == "miss"
    assert gw.post(body, key=MASTER).headers["x-omni-cache"] == "miss"
    assert gw.post(body, key=a).headers["x-omni-cache"] == "hit"
    assert gw.post(body, key=b).headers["x-omni-cache"] == "hit"


def test_shared_cache_serves_every_key(tmp_path: Path, openai_upstream: tuple[str, Recorder]) -> None:
    for gw in make_gateway(tmp_path, openai_upstream, cache="{enabled: true, shared: true}"):
        a, b = gw.key(), gw.key()
        body = unique_body()
        assert gw.post(body, key=a).headers["x-omni-cache"] == "miss"
        assert gw.post(body, key=b).headers["x-omni-cache"] == "hit"


def test_cache_off_by_default(tmp_path: Path, openai_upstream: tuple[str, Recorder]) -> None:
    for gw in make_gateway(tmp_path, openai_upstream, cache="{enabled: false}"):
        body = unique_body()
        assert "x-omni-cache" not in gw.post(body).headers
        assert "x-omni-cache" not in gw.post(body).headers


def test_redis_cache_is_shared_by_instances(tmp_path: Path, openai_upstream: tuple[str, Recorder],
                                            fresh_redis_url: str) -> None:
    text = config_yaml(f"{tmp_path}/state.db", openai_upstream[0], state_extra=f'  redis_url: "{fresh_redis_url}"')
    body = unique_body()
    with run_proxy(text) as one, run_proxy(text) as two:
        first = httpx.post(one.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {MASTER}"})
        assert first.headers["x-omni-cache"] == "miss"
        streamed = httpx.post(two.v1 + "/chat/completions", json={**body, "stream": True},
                              headers={"authorization": f"Bearer {MASTER}"})
        assert streamed.headers["x-omni-cache"] == "hit"
        assert content_of_stream(streamed) == first.json()["choices"][0]["message"]["content"]
