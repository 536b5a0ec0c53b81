"""Routing orders end to end through `omni-llm serve` (CONTRACT §16): latency converges on the faster
upstream and re-probes the slower one, cost picks the cheaper, capabilities skip members, the reason header."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from proxy.ranking import EXPLORE_EVERY
from tests.fakes.server import Recorder
from tests.proxy_server import RunningProxy, run_proxy


def config(upstream: str) -> str:
    return f"""
providers:
  up: {{type: openai, api_key: k, base_url: "{upstream}/v1", max_retries: 0}}
  demo: {{type: mock}}
models:
  tortoise: {{provider: up, model: slow-400}}
  hare: {{provider: up, model: gpt-4o-mini}}
  pricey: {{provider: demo, model: pricey, input_cost_per_mtok: 5, output_cost_per_mtok: 15}}
  cheap: {{provider: demo, model: cheap, input_cost_per_mtok: 0.1, output_cost_per_mtok: 0.4}}
  text-only: {{provider: demo, model: text-only, vision: false}}
  small: {{provider: demo, model: small, context_window: 64}}
  seeing: {{provider: demo, model: seeing}}
strategies:
  fastest: {{order: latency, members: [tortoise, hare]}}
  thrifty: {{order: cost, members: [pricey, cheap]}}
  eyes: [text-only, seeing]
  roomy: [small, seeing]
"""


@pytest.fixture(scope="module")
def proxy(openai_upstream: tuple[str, Recorder]) -> Iterator[RunningProxy]:
    with run_proxy(config(openai_upstream[0])) as running:
        yield running


def chat(proxy: RunningProxy, model: str, content: object = "hi", **extra: object) -> httpx.Response:
    return httpx.post(proxy.v1 + "/chat/completions", timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": content}], **extra})


def test_latency_converges_on_the_faster_and_reprobes_the_slower(proxy: RunningProxy) -> None:
    served = []
    for _ in range(EXPLORE_EVERY):
        response = chat(proxy, "fastest")
        assert response.status_code == 200, response.text
        served.append((response.json()["model"], response.headers["x-omni-route-reason"]))
    # the first two requests measure each member once; then the faster one always goes first...
    assert {served[0][0], served[1][0]} == {"tortoise", "hare"}
    assert all(model == "hare" for model, _ in served[2:EXPLORE_EVERY - 1])
    model, reason = served[5]
    assert reason.startswith("latency ") and "<" in reason
    fast_ms, slow_ms = (int(x.removesuffix("ms")) for x in reason.removeprefix("latency ").split("<"))
    assert fast_ms < slow_ms and slow_ms >= 400
    # ...except one request in every 50, which re-measures the other member
    assert served[EXPLORE_EVERY - 1][0] == "tortoise" and served[EXPLORE_EVERY - 1][1].startswith("latency explore")


def test_cost_picks_the_cheaper_for_this_request(proxy: RunningProxy) -> None:
    response = chat(proxy, "thrifty", max_tokens=100)
    assert response.status_code == 200
    assert response.json()["model"] == "cheap"
    assert response.headers["x-omni-route-reason"].startswith("cost $0.0000")


def test_images_skip_a_text_only_model(proxy: RunningProxy) -> None:
    image = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]
    response = chat(proxy, "eyes", image)
    assert response.status_code == 200 and response.json()["model"] == "seeing"
    assert response.headers["x-omni-attempts"].startswith("text-only skipped: no vision")
    response = chat(proxy, "text-only", image)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "capability_unsupported" and "vision" in error["message"]
    assert chat(proxy, "eyes").json()["model"] == "text-only"  # no image: nothing skipped


def test_an_overlong_prompt_skips_a_small_context_model(proxy: RunningProxy) -> None:
    response = chat(proxy, "roomy", "word " * 200)
    assert response.status_code == 200 and response.json()["model"] == "seeing"
    assert "small skipped: prompt of ~" in response.headers["x-omni-attempts"]
    assert chat(proxy, "roomy", "short").json()["model"] == "small"


def test_every_routed_answer_has_a_reason(proxy: RunningProxy) -> None:
    assert chat(proxy, "seeing").headers["x-omni-route-reason"] == "ordered"
    with httpx.stream("POST", proxy.v1 + "/chat/completions", timeout=30,
                      json={"model": "thrifty", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.headers["x-omni-route-reason"].startswith("cost $")
