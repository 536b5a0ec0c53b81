"""End to end: `structured_output` through the real `omni-llm serve` against every provider's fake.

Each fake answers the texts scripted in its recorder (tests/fakes/server.py `answers`) in order, so a
test scripts "bad JSON, then good JSON" and watches the gateway repair, fall back, or give up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel

from tests.fakes import anthropic as fake_anthropic
from tests.fakes import bedrock as fake_bedrock
from tests.fakes import cohere as fake_cohere
from tests.fakes import google as fake_google
from tests.fakes import groq as fake_groq
from tests.fakes import mistral as fake_mistral
from tests.fakes import openai as fake_openai
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, run_proxy, sse_events

FAKES = {
    "openai": fake_openai,
    "anthropic": fake_anthropic,
    "bedrock": fake_bedrock,
    "google": fake_google,
    "mistral": fake_mistral,
    "cohere": fake_cohere,
    "groq": fake_groq,
}
# public model name -> the fake that serves it
MODELS = {
    "gpt": "openai",
    "compat": "openai",
    "claude": "anthropic",
    "nova": "bedrock",
    "gemini": "google",
    "mistral": "mistral",
    "command": "cohere",
    "llama": "groq",
}

FORMAT = {
    "name": "string",
    "age": "integer?",
    "skills": ["array of strings"],
    "address": {"city": "string", "zip": "string?"},
    "kind": "person|company",
}
GOOD = {
    "name": "Ada",
    "age": 36,
    "skills": ["math", "poetry"],
    "address": {"city": "London", "zip": None},
    "kind": "person",
}
BAD = {
    "name": "Ada",
    "age": "thirty-six",
    "skills": ["math"],
    "address": {"city": "London", "zip": 5},
    "kind": "robot",
}


def _config(urls: dict[str, str]) -> str:
    return f"""
server:
  api_keys: []
providers:
  oai: {{type: openai, api_key: sk-test, base_url: "{urls["openai"]}/v1", max_retries: 0}}
  compat: {{type: openai_compatible, base_url: "{urls["openai"]}/v1", max_retries: 0}}
  ant: {{type: anthropic, api_key: sk-ant-test, base_url: "{urls["anthropic"]}", max_retries: 0}}
  aws:
    type: bedrock
    region: us-east-1
    aws_access_key_id: AKIDEXAMPLE
    aws_secret_access_key: secret-key-0123456789
    base_url: "{urls["bedrock"]}"
    max_retries: 0
  gem: {{type: gemini, api_key: AIza-test, base_url: "{urls["google"]}", max_retries: 0}}
  mis: {{type: mistral, api_key: mi-test, base_url: "{urls["mistral"]}", max_retries: 0}}
  co: {{type: cohere, api_key: co-test, base_url: "{urls["cohere"]}", max_retries: 0}}
  gq: {{type: groq, api_key: gq-test, base_url: "{urls["groq"]}", max_retries: 0}}
  mock: {{type: mock}}
models:
  demo: {{provider: mock, model: mock-1}}
  gpt: {{provider: oai, model: gpt-4o}}
  compat: {{provider: compat, model: local-model}}
  claude: {{provider: ant, model: claude-sonnet-4-5}}
  nova: {{provider: aws, model: amazon.nova-pro-v1:0}}
  gemini: {{provider: gem, model: gemini-2.5-flash}}
  mistral: {{provider: mis, model: mistral-large-latest}}
  command: {{provider: co, model: command-a-03-2025}}
  llama: {{provider: gq, model: llama-3.3-70b-versatile}}
  gpt-down: {{provider: oai, model: fail-500}}
  gpt-tools: {{provider: oai, model: tools}}
  pair:                                   # load-balanced: a repair must go back to the deployment that answered
    - {{provider: oai, model: gpt-4o}}
    - {{provider: gq, model: llama-3.3-70b-versatile}}
strategies:
  json-chain: [gpt, claude]
"""


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, tuple[str, Recorder]]]:
    with ExitStack() as stack:
        out = {}
        for name, module in FAKES.items():
            recorder = Recorder()
            out[name] = (stack.enter_context(serve_app(module.make_app(recorder))), recorder)
        yield out


@pytest.fixture(scope="module")
def proxy(fakes: dict[str, tuple[str, Recorder]]) -> Iterator[RunningProxy]:
    with run_proxy(
        _config({name: url for name, (url, _) in fakes.items()}), env={"CO_API_URL": "http://127.0.0.1:9"}
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_scripts(fakes: dict[str, tuple[str, Recorder]]) -> Iterator[None]:
    for _, recorder in fakes.values():
        recorder.answers.clear()
    yield
    for _, recorder in fakes.values():
        recorder.answers.clear()


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


def script(fakes: dict[str, tuple[str, Recorder]], model: str, *answers: Any) -> Recorder:
    recorder = fakes[MODELS[model]][1]
    recorder.answers.extend(a if isinstance(a, str) else orjson.dumps(a).decode() for a in answers)
    return recorder


def ask(client: openai.OpenAI, model: str, structured: dict[str, Any], **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "Describe Ada Lovelace."}],
        extra_body={"structured_output": structured},
        **extra,
    )


def sent_requests(recorder: Recorder, before: int) -> list[Any]:
    return [
        r.body
        for r in recorder.requests[before:]
        if r.body and ("messages" in r.body or "contents" in r.body)
    ]


@pytest.mark.parametrize("model", list(MODELS))
def test_valid_first_time(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]], model: str) -> None:
    recorder = script(fakes, model, GOOD)
    before = len(recorder.requests)
    raw = ask(client, model, {"format": FORMAT})
    completion = raw.parse()
    message = completion.choices[0].message
    assert orjson.loads(message.content) == GOOD
    assert message.parsed == GOOD  # type: ignore[attr-defined]
    assert raw.headers["x-omni-structured-repairs"] == "0"
    assert completion.model == model and completion.choices[0].finish_reason == "stop"
    assert len(sent_requests(recorder, before)) == 1
    assert "structured_output" not in orjson.dumps(recorder.requests[-1].body).decode()


def test_browser_clients_may_read_the_repairs_header(
    proxy: RunningProxy, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    script(fakes, "gpt", GOOD)
    response = httpx.post(
        proxy.v1 + "/chat/completions",
        headers={"origin": "https://app.example"},
        json={
            "model": "gpt",
            "messages": [{"role": "user", "content": "x"}],
            "structured_output": {"format": FORMAT},
        },
    )
    assert response.headers["x-omni-structured-repairs"] == "0"
    assert "x-omni-structured-repairs" in response.headers["access-control-expose-headers"]


@pytest.mark.parametrize("model", list(MODELS))
def test_invalid_then_repaired_on_the_same_deployment(
    client: openai.OpenAI,
    fakes: dict[str, tuple[str, Recorder]],
    model: str,
) -> None:
    recorder = script(fakes, model, BAD, GOOD)
    before = len(recorder.requests)
    raw = ask(client, model, {"format": FORMAT})
    completion = raw.parse()
    assert completion.choices[0].message.parsed == GOOD  # type: ignore[attr-defined]
    assert raw.headers["x-omni-structured-repairs"] == "1"
    sent = sent_requests(recorder, before)
    assert len(sent) == 2
    repair_turn = orjson.dumps(sent[1]).decode()
    for path in ("$.age", "$.address.zip", "$.kind"):  # the validation errors went back with their paths
        assert path in repair_turn
    assert "thirty-six" in repair_turn  # the bad answer is replayed as the assistant turn
    single = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert single.usage is not None and completion.usage is not None
    assert completion.usage.prompt_tokens == 2 * single.usage.prompt_tokens
    assert completion.usage.completion_tokens == 2 * single.usage.completion_tokens


def test_openai_gets_native_strict_json_schema(
    client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    recorder = script(fakes, "gpt", GOOD)
    ask(client, "gpt", {"format": FORMAT, "name": "person"})
    rf = recorder.last().body["response_format"]
    assert (
        rf["type"] == "json_schema"
        and rf["json_schema"]["name"] == "person"
        and rf["json_schema"]["strict"] is True
    )
    schema = rf["json_schema"]["schema"]
    assert schema["required"] == list(FORMAT) and schema["additionalProperties"] is False
    assert schema["properties"]["age"] == {"type": ["integer", "null"]}


@pytest.mark.parametrize(
    "model, vendor_field",
    [("claude", "output_config"), ("nova", "outputConfig"), ("gemini", "generationConfig")],
)
def test_native_mapping_per_vendor(
    client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]], model: str, vendor_field: str
) -> None:
    recorder = script(fakes, model, GOOD)
    ask(client, model, {"format": FORMAT})
    sent = recorder.last().body
    assert vendor_field in sent and "name" in orjson.dumps(sent[vendor_field]).decode()


@pytest.mark.parametrize("first, second", [("gpt", "claude"), ("claude", "nova"), ("gemini", "llama")])
def test_invalid_twice_falls_back_to_the_next_model(
    client: openai.OpenAI,
    fakes: dict[str, tuple[str, Recorder]],
    first: str,
    second: str,
) -> None:
    script(fakes, first, BAD, BAD)
    script(fakes, second, GOOD)
    raw = client.chat.completions.with_raw_response.create(
        model=first,
        messages=[{"role": "user", "content": "Describe Ada."}],
        extra_body={"structured_output": {"format": FORMAT}, "fallbacks": [second]},
    )
    completion = raw.parse()
    assert completion.model == second
    assert completion.choices[0].message.parsed == GOOD  # type: ignore[attr-defined]
    assert raw.headers["x-omni-structured-repairs"] == "1"
    assert raw.headers["x-omni-provider"] == _provider_name(second)


def _provider_name(model: str) -> str:
    return {"gpt": "oai", "claude": "ant", "nova": "aws", "llama": "gq", "gemini": "gem"}[model]


def test_strategy_chain_and_upstream_failure_then_invalid(
    client: openai.OpenAI,
    fakes: dict[str, tuple[str, Recorder]],
) -> None:
    # gpt-down fails upstream (the router falls through to gpt), gpt answers invalidly twice, claude repairs.
    script(fakes, "gpt", BAD, BAD)
    script(fakes, "claude", BAD, GOOD)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-down",
        messages=[{"role": "user", "content": "Describe Ada."}],
        extra_body={"structured_output": {"format": FORMAT}, "fallbacks": ["gpt", "claude"]},
    )
    completion = raw.parse()
    assert completion.model == "claude" and completion.choices[0].message.parsed == GOOD  # type: ignore[attr-defined]
    assert raw.headers["x-omni-structured-repairs"] == "2"
    assert completion.usage is not None
    assert raw.headers["x-omni-attempts"].startswith("gpt-down=oai/fail-500:502")


def test_invalid_everywhere_is_a_502_with_paths(
    client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    script(fakes, "gpt", BAD, BAD)
    script(fakes, "claude", BAD, "not json at all")
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="json-chain",
            messages=[{"role": "user", "content": "Describe Ada."}],
            extra_body={"structured_output": {"format": FORMAT}},
        )
    error = caught.value
    assert error.status_code == 502
    body = error.response.json()["error"]
    assert body["code"] == "structured_output_invalid" and body["type"] == "upstream_error"
    for fragment in ("$.age", "$.address.zip", "$.kind", "gpt", "claude", "not valid JSON"):
        assert fragment in body["message"]


def _tokens(proxy: RunningProxy, model: str) -> float:
    prefix = f'omni_tokens_total{{kind="completion",model="{model}",'
    lines = [line for line in httpx.get(proxy.url + "/metrics").text.splitlines() if line.startswith(prefix)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_tokens_of_invalid_answers_are_accounted(
    proxy: RunningProxy, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    before = _tokens(proxy, "llama")
    script(fakes, "llama", BAD, BAD)
    response = httpx.post(
        proxy.v1 + "/chat/completions",
        json={
            "model": "llama",
            "messages": [{"role": "user", "content": "x"}],
            "structured_output": {"format": FORMAT},
        },
    )
    assert response.status_code == 502
    assert _tokens(proxy, "llama") - before == 2 * fake_groq.USAGE["completion_tokens"]


def test_invalid_output_does_not_count_against_health(
    client: openai.OpenAI,
    proxy: RunningProxy,
    fakes: dict[str, tuple[str, Recorder]],
) -> None:
    for _ in range(6):  # more than any circuit-breaker threshold
        script(fakes, "mistral", BAD)
        with pytest.raises(openai.APIStatusError):
            ask(client, "mistral", {"format": FORMAT, "max_repairs": 0})
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'omni_deployment_healthy{provider="mis",upstream_model="mistral-large-latest"} 0.0' not in metrics
    script(fakes, "mistral", GOOD)
    assert ask(client, "mistral", {"format": FORMAT}).parse().choices[0].message.parsed == GOOD  # type: ignore[attr-defined]


def test_repairs_are_pinned_to_the_deployment_that_answered(
    client: openai.OpenAI,
    fakes: dict[str, tuple[str, Recorder]],
) -> None:
    oai, groq = fakes["openai"][1], fakes["groq"][1]
    for _ in range(4):  # round-robin alternates the first deployment; the repair follows whichever answered
        oai.answers[:] = [orjson.dumps(BAD).decode(), orjson.dumps(GOOD).decode()]
        groq.answers[:] = [orjson.dumps(BAD).decode(), orjson.dumps(GOOD).decode()]
        before = (len(oai.requests), len(groq.requests))
        raw = ask(client, "pair", {"format": FORMAT})
        assert raw.parse().choices[0].message.parsed == GOOD  # type: ignore[attr-defined]
        calls = (len(oai.requests) - before[0], len(groq.requests) - before[1])
        assert sorted(calls) == [0, 2], calls
        assert raw.headers["x-omni-provider"] == ("oai" if calls[0] else "gq")


def test_optional_keys_may_be_left_out(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]) -> None:
    sparse = {k: v for k, v in GOOD.items() if k != "age"} | {"address": {"city": "Paris"}}
    script(fakes, "command", sparse)
    raw = ask(client, "command", {"format": FORMAT})
    assert raw.parse().choices[0].message.parsed == sparse  # type: ignore[attr-defined]
    assert raw.headers["x-omni-structured-repairs"] == "0"


def test_max_repairs_zero_and_three(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]) -> None:
    recorder = script(fakes, "gpt", BAD, GOOD)
    before = len(recorder.requests)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "gpt", {"format": FORMAT, "max_repairs": 0})
    assert caught.value.status_code == 502 and len(sent_requests(recorder, before)) == 1
    recorder.answers.clear()
    script(fakes, "gpt", BAD, BAD, BAD, GOOD)
    raw = ask(client, "gpt", {"format": FORMAT, "max_repairs": 3})
    assert raw.headers["x-omni-structured-repairs"] == "3" and raw.parse().choices[0].message.parsed == GOOD  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", list(MODELS))
def test_method_tool(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]], model: str) -> None:
    recorder = script(fakes, model, BAD, GOOD)
    raw = ask(client, model, {"format": FORMAT, "method": "tool", "name": "person"})
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.message.parsed == GOOD and orjson.loads(choice.message.content) == GOOD  # type: ignore[attr-defined]
    assert not choice.message.tool_calls and choice.finish_reason == "stop"
    assert raw.headers["x-omni-structured-repairs"] == "1"
    sent = orjson.dumps(recorder.last().body).decode()
    assert '"person"' in sent and "$.kind" in sent  # the forced tool, and the repair as its tool result:
    assert TOOL_RESULT_MARK[MODELS[model]] in sent  # (so the fake did answer with a call of the tool)


# How each vendor's wire format carries a tool result.
TOOL_RESULT_MARK = {
    "openai": '"role":"tool"',
    "groq": '"role":"tool"',
    "mistral": '"role":"tool"',
    "cohere": '"role":"tool"',
    "anthropic": '"tool_result"',
    "bedrock": '"toolResult"',
    "google": '"functionResponse"',
}


def test_method_tool_keeps_client_tools_and_passes_their_calls_through(
    client: openai.OpenAI,
    fakes: dict[str, tuple[str, Recorder]],
) -> None:
    recorder = fakes["openai"][1]
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    completion = client.chat.completions.create(
        model="gpt-tools",
        messages=[{"role": "user", "content": "hi"}],
        tools=[weather],
        extra_body={"structured_output": {"format": FORMAT, "method": "tool"}},
    )
    sent = recorder.last().body
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "output"]
    assert sent["tool_choice"] == "required"  # any tool: the client's stay callable
    choice = completion.choices[0]  # the model called the client's tools: a tool round, passed through
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls or []] == ["get_weather", "get_time"]


@pytest.mark.parametrize("model", ["gpt", "claude", "gemini"])
def test_method_json_mode(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]], model: str) -> None:
    recorder = script(fakes, model, "```json\n" + orjson.dumps(GOOD).decode() + "\n```")
    completion = ask(client, model, {"format": FORMAT, "method": "json_mode"}).parse()
    assert completion.choices[0].message.parsed == GOOD  # type: ignore[attr-defined]
    assert orjson.loads(completion.choices[0].message.content) == GOOD  # fence stripped
    sent = orjson.dumps(recorder.last().body).decode()
    assert "JSON Schema" in sent and "additionalProperties" in sent


def test_json_mode_sends_json_object(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]) -> None:
    recorder = script(fakes, "gpt", GOOD)
    ask(client, "gpt", {"format": FORMAT, "method": "json_mode"})
    sent = recorder.last().body
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][0]["role"] == "system" and "JSON Schema" in sent["messages"][0]["content"]


def test_top_level_array_is_wrapped_upstream_and_unwrapped(
    client: openai.OpenAI,
    fakes: dict[str, tuple[str, Recorder]],
) -> None:
    people = [{"name": "Ada", "born": 1815}, {"name": "Alan", "born": 1912}]
    recorder = script(fakes, "claude", {"items": people})
    completion = ask(client, "claude", {"format": [{"name": "string", "born": "integer"}]}).parse()
    assert orjson.loads(completion.choices[0].message.content) == people
    assert completion.choices[0].message.parsed == people  # type: ignore[attr-defined]
    schema = recorder.last().body["output_config"]["format"]["schema"]
    assert schema["required"] == ["items"] and schema["properties"]["items"]["type"] == "array"


def test_strict_false_only_parses_and_typed_dict_alias(
    client: openai.OpenAI,
    fakes: dict[str, tuple[str, Recorder]],
) -> None:
    script(fakes, "gpt", BAD)
    message = ask(client, "gpt", {"format": FORMAT, "strict": False}).parse().choices[0].message
    assert message.parsed == BAD  # type: ignore[attr-defined]
    recorder = script(fakes, "gpt", BAD)
    message = ask(client, "gpt", {"format": FORMAT, "method": "typed_dict"}).parse().choices[0].message
    assert message.parsed == BAD  # type: ignore[attr-defined]
    assert recorder.last().body["response_format"]["json_schema"]["strict"] is False
    script(fakes, "gpt", "{not json", GOOD)
    raw = ask(client, "gpt", {"format": FORMAT, "strict": False})
    assert raw.headers["x-omni-structured-repairs"] == "1"


def test_pydantic_alias_and_json_schema_input(
    client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    script(fakes, "llama", {"n": 0}, {"n": 2})
    raw = ask(client, "llama", {"schema": schema, "method": "pydantic"})
    assert raw.parse().choices[0].message.parsed == {"n": 2}  # type: ignore[attr-defined]
    assert raw.headers["x-omni-structured-repairs"] == "1"


def test_enabled_false_is_a_plain_request(
    client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    recorder = fakes["openai"][1]
    raw = ask(client, "gpt", {"format": FORMAT, "enabled": False})
    assert raw.parse().choices[0].message.content == "echo: Describe Ada Lovelace."
    assert "x-omni-structured-repairs" not in raw.headers and "response_format" not in recorder.last().body


@pytest.mark.parametrize(
    "structured, param",
    [
        (
            {"format": {"name": "string", "address": {"zip": "zipcode"}}},
            "structured_output.format.address.zip",
        ),
        ({"format": {"tags": ["string", "integer"]}}, "structured_output.format.tags"),
        ({"format": {"a": "x"}, "schema": {"type": "object"}}, "structured_output"),
        ({"schema": {"type": "objekt"}}, "structured_output.schema.type"),
        ({"format": {"a": "string"}, "max_repairs": 4}, "structured_output.max_repairs"),
        ({"format": {"a": "string"}, "method": "xml"}, "structured_output.method"),
    ],
)
def test_bad_field_is_a_400_naming_its_path(
    proxy: RunningProxy, structured: dict[str, Any], param: str
) -> None:
    response = httpx.post(
        proxy.v1 + "/chat/completions",
        json={
            "model": "gpt",
            "messages": [{"role": "user", "content": "x"}],
            "structured_output": structured,
        },
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


# -- streams --------------------------------------------------------------------------------------------


def _stream(
    proxy: RunningProxy, model: str, structured: dict[str, Any]
) -> tuple[httpx.Response, list[bytes]]:
    with httpx.stream(
        "POST",
        proxy.v1 + "/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Describe Ada."}],
            "stream": True,
            "structured_output": structured,
        },
    ) as response:
        return response, sse_events(response)


def _content(events: list[bytes]) -> str:
    chunks = [orjson.loads(e) for e in events if e != b"[DONE]"]
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))


@pytest.mark.parametrize("model", ["gpt", "claude", "nova", "gemini", "mistral", "command", "llama"])
def test_stream_valid(proxy: RunningProxy, fakes: dict[str, tuple[str, Recorder]], model: str) -> None:
    script(fakes, model, GOOD)
    response, events = _stream(proxy, model, {"format": FORMAT})
    assert response.status_code == 200 and events[-1] == b"[DONE]"
    assert orjson.loads(_content(events)) == GOOD
    assert response.headers["x-omni-structured-repairs"] == "0"


@pytest.mark.parametrize("model", ["gpt", "claude", "gemini"])
def test_stream_invalid_ends_with_an_error_event(
    proxy: RunningProxy, fakes: dict[str, tuple[str, Recorder]], model: str
) -> None:
    script(fakes, model, BAD)
    response, events = _stream(proxy, model, {"format": FORMAT})
    assert response.status_code == 200 and events[-1] != b"[DONE]"
    assert orjson.loads(_content(events[:-1])) == BAD  # relayed as it came
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "structured_output_invalid" and "$.kind" in error["message"]


def test_stream_with_the_sdk(client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]) -> None:
    script(fakes, "gpt", GOOD)
    stream = client.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        extra_body={"structured_output": {"format": FORMAT}},
    )
    assert orjson.loads("".join(c.choices[0].delta.content or "" for c in stream if c.choices)) == GOOD
    script(fakes, "gpt", BAD)
    stream = client.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        extra_body={"structured_output": {"format": FORMAT}},
    )
    with pytest.raises(openai.APIError, match="structured_output"):
        for _ in stream:
            pass


@pytest.mark.parametrize("model", list(MODELS))
def test_stream_method_tool_streams_arguments_as_content(
    proxy: RunningProxy,
    fakes: dict[str, tuple[str, Recorder]],
    model: str,
) -> None:
    script(fakes, model, GOOD)
    response, events = _stream(proxy, model, {"format": FORMAT, "method": "tool"})
    assert response.status_code == 200 and events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert orjson.loads(_content(events)) == GOOD
    assert not any(c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"])
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_stream_top_level_array_unwrapped(
    proxy: RunningProxy, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    people = [{"name": "Ada"}, {"name": "Alan"}]
    script(fakes, "gpt", orjson.dumps({"items": people}, option=orjson.OPT_INDENT_2).decode())
    response, events = _stream(proxy, "gpt", {"format": [{"name": "string"}]})
    assert response.status_code == 200 and events[-1] == b"[DONE]"
    assert orjson.loads(_content(events)) == people


@pytest.mark.parametrize("method", ["json_schema", "tool", "json_mode"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_demo_model_answers_every_method(client: openai.OpenAI, method: str, stream: bool) -> None:
    structured = {
        "format": {"name": "string", "kind": "person|company", "jobs": [{"title": "string"}]},
        "method": method,
    }
    if stream:
        chunks = client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "Ada"}],
            stream=True,
            extra_body={"structured_output": structured},
        )
        value = orjson.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    else:
        value = (
            client.chat.completions.create(
                model="demo",
                messages=[{"role": "user", "content": "Ada"}],
                extra_body={"structured_output": structured},
            )
            .choices[0]
            .message.parsed
        )  # type: ignore[attr-defined]
    assert set(value) == {"name", "kind", "jobs"} and value["kind"] in ("person", "company")


# -- pass-through ---------------------------------------------------------------------------------------


class Person(BaseModel):
    name: str
    age: int


def test_sdk_parse_with_pydantic_stays_a_pass_through(
    client: openai.OpenAI, fakes: dict[str, tuple[str, Recorder]]
) -> None:
    recorder = script(fakes, "gpt", {"name": "Ada", "age": 36})
    raw = client.chat.completions.with_raw_response.parse(
        model="gpt", messages=[{"role": "user", "content": "Ada?"}], response_format=Person
    )
    parsed = raw.parse().choices[0].message.parsed
    assert parsed == Person(name="Ada", age=36)
    sent = recorder.last().body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Person"
    assert "x-omni-structured-repairs" not in raw.headers
