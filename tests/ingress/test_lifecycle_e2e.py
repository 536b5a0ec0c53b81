"""Stream lifecycle on the ingress APIs: a client that goes away closes the upstream; a cut stream is an error."""

from __future__ import annotations

import time

import anthropic
import httpx
import pytest

from tests.fakes.server import Recorder
from tests.ingress.conftest import GATEWAY_KEY
from tests.proxy_server import RunningProxy

BODIES = {
    "/messages": {"model": "gpt-endless", "max_tokens": 100, "stream": True,
                  "messages": [{"role": "user", "content": "x"}]},
    "/responses": {"model": "gpt-endless", "input": "x", "stream": True},
    "/completions": {"model": "gpt-endless", "prompt": "x", "stream": True},
}


@pytest.mark.parametrize("path", list(BODIES))
def test_client_disconnect_closes_upstream(proxy: RunningProxy, fakes: dict[str, tuple[str, Recorder]],
                                           path: str) -> None:
    recorder = fakes["oai"][1]
    before = recorder.closed_streams
    with httpx.stream("POST", proxy.v1 + path, json=BODIES[path],
                      headers={"x-api-key": GATEWAY_KEY}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if "tick2" in line:
                break
    # The gateway must notice the disconnect and close its upstream stream long before 2000 ticks.
    deadline = 100
    while recorder.closed_streams == before and deadline:
        httpx.get(proxy.url + "/health")
        deadline -= 1
        time.sleep(0.05)
    assert recorder.closed_streams > before


def test_passed_through_stream_cut_short_ends_with_error_event(proxy: RunningProxy) -> None:
    client = anthropic.Anthropic(base_url=proxy.url, api_key=GATEWAY_KEY, max_retries=0)
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="claude-truncated", max_tokens=50,
                                    messages=[{"role": "user", "content": "one two three"}]) as stream:
            texts.extend(stream.text_stream)
    assert "".join(texts) == "echo: one"
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
