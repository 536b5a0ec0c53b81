"""End to end: the real `omni-llm serve` with gemini/vertex providers, the openai client and raw SSE, a fake Google upstream.

Gemini API and Vertex express mode (API keys) and Vertex project mode (a
service-account `credentials_file` whose `token_uri` points at the fake's token
endpoint) all run through the real server; project mode with prebuilt
credentials runs through the provider class directly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import google.oauth2.credentials
import httpx
import openai
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.config import Deployment, ProviderConfig
from tests.fakes import google as fake_google
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, collect_tool_calls, run_proxy, sse_events
from translators.google import GoogleProvider

GEMINI_KEY = "AIza-gemini-secret-0123456789"
EXPRESS_KEY = "AIza-express-secret-9876543210"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
                                                                            "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


@pytest.fixture(scope="module")
def google_upstream() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve_app(fake_google.make_app(recorder)) as url:
        yield url, recorder


def config(upstream: str, credentials_file: Path) -> str:
    return f"""
server:
  api_keys: []
providers:
  gem: {{type: gemini, api_key: "{GEMINI_KEY}", base_url: "{upstream}", max_retries: 0}}
  gem-quick: {{type: gemini, api_key: "{GEMINI_KEY}", base_url: "{upstream}", max_retries: 0, timeout_s: 0.3}}
  express: {{type: vertex, api_key: "{EXPRESS_KEY}", base_url: "{upstream}", max_retries: 0}}
  project: {{type: vertex, project: proj-1, location: europe-west4, credentials_file: "{credentials_file}",
             base_url: "{upstream}", max_retries: 0}}
models:
  gem-chat: {{provider: gem, model: gemini-echo}}
  gem-tools: {{provider: gem, model: tools}}
  gem-think: {{provider: gem, model: thinker}}
  gem-safety: {{provider: gem, model: safety}}
  gem-embed: {{provider: gem, model: gemini-embedding-001, mode: embedding}}
  gem-mid: {{provider: gem, model: midstream-error}}
  gem-slow: {{provider: gem-quick, model: slow-2000}}
  express-chat: {{provider: express, model: gemini-echo}}
  express-embed: {{provider: express, model: text-embedding-005, mode: embedding}}
  project-chat: {{provider: project, model: gemini-echo}}
  project-embed: {{provider: project, model: gemini-embedding-001, mode: embedding}}
"""


@pytest.fixture(scope="module")
def proxy(google_upstream: tuple[str, Recorder], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    # A service-account file honours its own token_uri (authorized-user files are pinned to Google's endpoint).
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    credentials_file = tmp_path_factory.mktemp("google") / "service_account.json"
    credentials_file.write_text(json.dumps({
        "type": "service_account", "project_id": "proj-1", "private_key_id": "key-1", "private_key": pem.decode(),
        "client_email": "gateway@proj-1.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"{google_upstream[0]}/token",
    }))
    env = {"OMNI_LLM_ALLOW_PRIVATE_IMAGE_URLS": "1"}
    with run_proxy(config(google_upstream[0], credentials_file), env=env) as running:
        yield running


@pytest.fixture()
def client(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0)


def b64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_"))



def test_gemini_chat_maps_request_and_usage(client: openai.OpenAI, google_upstream: tuple[str, Recorder]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gem-chat", messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}],
        temperature=0.2, top_p=0.9, max_tokens=50, stop=["END"], seed=7, user="dropped-user",
        extra_body={"top_k": 5},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello"
    assert completion.choices[0].finish_reason == "stop" and completion.model == "gem-chat"
    assert completion.usage.prompt_tokens == 9 and completion.usage.prompt_tokens_details.cached_tokens == 2
    assert raw.headers["x-omni-provider"] == "gem" and raw.headers["x-omni-dropped-params"] == "user"
    sent = google_upstream[1].last()
    assert sent.path == "/v1/models/gemini-echo:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert sent.body["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "topK": 5.0, "maxOutputTokens": 50,
                                             "stopSequences": ["END"], "seed": 7}


def test_stream_raw_sse_invariants(proxy: RunningProxy, google_upstream: tuple[str, Recorder]) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
        "model": "gem-chat", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "one two"}],
    }) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert google_upstream[1].last().query == "alt=sse"
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: one two"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None]
    assert len(finished) == 1 and finished[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 12


def test_streamed_parallel_tool_calls(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gem-tools", messages=[{"role": "user", "content": "weather and time?"}], stream=True, tools=TOOLS,
    ))
    calls = collect_tool_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert [orjson.loads(calls[i]["args"]) for i in (0, 1)] == [{"city": "Paris"}, {"tz": "CET"}]
    assert calls[0]["id"] != calls[1]["id"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_multi_turn_tool_round_trip_keeps_signature(client: openai.OpenAI, google_upstream: tuple[str, Recorder]) -> None:
    messages: list[dict] = [{"role": "user", "content": "weather and time?"}]
    first = client.chat.completions.create(model="gem-tools", messages=messages, tools=TOOLS, tool_choice="required")
    assert google_upstream[1].last().body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.content == "Let me check."
    messages.append(message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": '{"temp": 21}'},
                 {"role": "tool", "tool_call_id": message.tool_calls[1].id, "content": "12:00"}]
    second = client.chat.completions.create(model="gem-chat", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == 'results: get_weather={"temp":21}; get_time={"output":"12:00"}'
    contents = google_upstream[1].last().body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    calls = [p for p in contents[1]["parts"] if "functionCall" in p]
    # proto3 JSON accepts either base64 alphabet; the SDK sends URL-safe
    assert b64(calls[0]["thoughtSignature"]) == b64(fake_google.SIGNATURE) and "thoughtSignature" not in calls[1]
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["get_weather", "get_time"]


def test_reasoning_and_json_schema(client: openai.OpenAI, google_upstream: tuple[str, Recorder]) -> None:
    completion = client.chat.completions.create(
        model="gem-think", messages=[{"role": "user", "content": "meaning?"}], reasoning_effort="low",
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    )
    assert completion.choices[0].message.content == "42"
    assert completion.choices[0].message.model_extra["reasoning_content"] == "Pondering."
    assert completion.usage.completion_tokens == 8 and completion.usage.completion_tokens_details.reasoning_tokens == 5
    config = google_upstream[1].last().body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == {"type": "object"}
    assert config["thinkingConfig"] == {"include_thoughts": True, "thinking_budget": 2048}  # the SDK sends snake_case here


def test_images_inline_and_fetched(client: openai.OpenAI, google_upstream: tuple[str, Recorder]) -> None:
    url = google_upstream[0] + "/images/dot.png"
    client.chat.completions.create(model="gem-chat", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.png"}},
    ]}])
    parts = google_upstream[1].last().body["contents"][0]["parts"]
    assert parts[1]["inlineData"]["mime_type"] == "image/png" and b64(parts[1]["inlineData"]["data"]) == fake_google.DOT_PNG
    assert parts[2]["fileData"] == {"file_uri": "gs://bucket/cat.png", "mime_type": "image/png"}  # SDK: snake_case


def test_content_filter_finish(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gem-safety", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].finish_reason == "content_filter"


def test_vertex_express_chat_and_predict_embeddings(client: openai.OpenAI, google_upstream: tuple[str, Recorder]) -> None:
    completion = client.chat.completions.create(model="express-chat", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: hi"
    sent = google_upstream[1].last()
    assert sent.path == "/v1beta1/publishers/google/models/gemini-echo:generateContent"
    assert sent.headers["x-goog-api-key"] == EXPRESS_KEY
    result = client.embeddings.create(model="express-embed", input=["a", "b"], dimensions=3)
    assert [d.embedding for d in result.data] == [[0.5, -0.25, 0.125], [1.5, -0.25, 0.125]]
    assert result.usage.prompt_tokens == 6
    sent = google_upstream[1].last()
    assert sent.path == "/v1beta1/publishers/google/models/text-embedding-005:predict"
    assert sent.body["parameters"] == {"outputDimensionality": 3}


def test_vertex_project_mode_with_credentials_file(client: openai.OpenAI, google_upstream: tuple[str, Recorder]) -> None:
    completion = client.chat.completions.create(model="project-chat", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: hi"
    sent = google_upstream[1].last()
    assert sent.path == "/v1beta1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-echo:generateContent"
    assert sent.headers["authorization"] == f"Bearer {fake_google.TOKEN}"
    token_requests = [r for r in google_upstream[1].requests if r.path == "/token"]
    assert token_requests and token_requests[-1].body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    result = client.embeddings.create(model="project-embed", input=["a", "b"], extra_body={"task_type": "retrieval_document"})
    assert len(result.data) == 2
    sent = google_upstream[1].last()
    assert sent.path.endswith("/models/gemini-embedding-001:batchEmbedContents")
    assert sent.body["requests"][0]["embedContentConfig"] == {"taskType": "RETRIEVAL_DOCUMENT"}


def test_gemini_embeddings_base64(client: openai.OpenAI, google_upstream: tuple[str, Recorder]) -> None:
    result = client.embeddings.create(model="gem-embed", input="hello", dimensions=3)  # the SDK asks for base64
    assert result.data[0].embedding == [0.5, -0.25, 0.125] and result.model == "gem-embed"
    sent = google_upstream[1].last()
    assert sent.path == "/v1/models/gemini-embedding-001:batchEmbedContents"
    assert sent.body["requests"][0]["outputDimensionality"] == 3


@pytest.mark.parametrize(("model", "status", "etype", "message"), [
    ("gem/fail-400", 400, "invalid_request_error", "scripted failure 400"),
    ("gem/fail-404", 404, "invalid_request_error", "scripted failure 404"),
    ("gem/leak-401", 502, "upstream_error", None),
    ("gem/fail-403", 502, "upstream_error", None),
    ("gem/fail-429", 429, "rate_limit_error", None),
    ("gem/fail-500", 502, "upstream_error", None),
    ("gem-slow", 504, "timeout_error", None),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors(proxy: RunningProxy, model: str, status: int, etype: str, message: str | None, stream: bool) -> None:
    response = httpx.post(proxy.v1 + "/chat/completions", timeout=10, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == etype and set(error) == {"message", "type", "param", "code"}
    if message:
        assert message in error["message"]
    if status == 429:
        assert response.headers["retry-after"] == "0"
    assert GEMINI_KEY not in response.text


def test_error_mid_stream_is_one_event_without_done(proxy: RunningProxy) -> None:
    with httpx.stream("POST", proxy.v1 + "/chat/completions", json={
        "model": "gem-mid", "stream": True, "messages": [{"role": "user", "content": "a b c d"}],
    }) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert b"[DONE]" not in events
    chunks = [orjson.loads(e) for e in events]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "echo: a"
    assert chunks[-1]["error"]["type"] == "upstream_error"
    assert "scripted mid-stream failure" in chunks[-1]["error"]["message"]


async def test_vertex_project_mode_with_prebuilt_credentials(google_upstream: tuple[str, Recorder]) -> None:
    settings = {"project": "proj-2", "location": "us-east1", "base_url": google_upstream[0]}
    provider = GoogleProvider(ProviderConfig("vp", "vertex", settings),
                              credentials=google.oauth2.credentials.Credentials(token="ya29.fake"))
    try:
        deployment = Deployment("v", "vp", "tools")
        chunks = [c async for c in provider.stream({"messages": [{"role": "user", "content": "x"}]}, deployment)]
        sent = google_upstream[1].last()
        assert sent.path == "/v1beta1/projects/proj-2/locations/us-east1/publishers/google/models/tools:streamGenerateContent"
        assert sent.headers["authorization"] == "Bearer ya29.fake"
        calls = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls", [])]
        assert [c["index"] for c in calls] == [0, 1]
        embedded = await provider.embed({"input": ["a", "b"]}, Deployment("e", "vp", "text-embedding-005", mode="embedding"))
        assert len(embedded["data"]) == 2 and google_upstream[1].last().path.endswith("text-embedding-005:predict")
    finally:
        await provider.aclose()
