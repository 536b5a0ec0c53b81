"""End to end: the openai SDK's `client.completions.create` (legacy text completions) against `omni-llm serve`,
routed to the OpenAI, Bedrock, Gemini and Anthropic fakes."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fakes.server import Recorder
from tests.ingress.conftest import GATEWAY_KEY
from tests.proxy_server import RunningProxy

CHAT = {"gpt": "oai", "bedrock": "aws", "gemini": "gem", "claude": "ant"}


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key=GATEWAY_KEY, max_retries=0)


@pytest.mark.parametrize("model", list(CHAT))
def test_text_every_provider(client: openai.OpenAI, model: str) -> None:
    raw = client.completions.with_raw_response.create(model=model, prompt="hello there", suffix="!")
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.model == model
    assert [(c.index, c.text, c.logprobs, c.finish_reason) for c in completion.choices] == [
        (0, "echo: hello there", None, "stop")]
    assert completion.usage.total_tokens > 0
    assert "suffix" in raw.headers["x-omni-dropped-params"].split(",")


@pytest.mark.parametrize("model", list(CHAT))
def test_stream_every_provider(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.completions.create(model=model, prompt="one two three", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert {c.object for c in chunks} == {"text_completion"} and len({c.id for c in chunks}) == 1


def test_default_max_tokens_and_mapping(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]) -> None:
    client.completions.create(model="gpt", prompt="hi", temperature=0.5, stop=["\n"], seed=3)
    sent = fakes["oai"][1].last().body
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["max_tokens"] == 16 and sent["temperature"] == 0.5 and sent["stop"] == ["\n"] and sent["seed"] == 3
    client.completions.create(model="gpt", prompt="hi", max_tokens=99)
    assert fakes["oai"][1].last().body["max_tokens"] == 99


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_list_and_echo(client: openai.OpenAI, stream: bool) -> None:
    prompts = ["alpha beta", "gamma"]
    if stream:
        texts: dict[int, str] = {}
        finishes: dict[int, str] = {}
        for chunk in client.completions.create(model="claude", prompt=prompts, echo=True, stream=True):
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + choice.text
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert finishes == {0: "stop", 1: "stop"}
    else:
        completion = client.completions.create(model="claude", prompt=prompts, echo=True)
        texts = {c.index: c.text for c in completion.choices}
    assert texts == {0: "alpha betaecho: alpha beta", 1: "gammaecho: gamma"}


def test_error_after_first_byte(client: openai.OpenAI) -> None:
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in client.completions.create(model="gpt-midstream", prompt="one two three", stream=True):
            seen.append(chunk.choices[0].text)
    assert "".join(seen) == "echo: one"


@pytest.mark.parametrize(("payload", "status"), [
    ({"model": "gpt", "prompt": [1, 2, 3]}, 400),
    ({"model": "gpt", "prompt": []}, 400),
    ({"model": "gpt"}, 400),
    ({"model": "nope", "prompt": "x"}, 404),
    ({"model": "gpt-limited", "prompt": "x", "stream": True}, 429),
])
def test_errors_in_openai_shape(proxy: RunningProxy, payload: dict[str, object], status: int) -> None:
    response = httpx.post(proxy.v1 + "/completions", json=payload, headers={"x-api-key": GATEWAY_KEY})
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
