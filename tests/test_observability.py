"""Observability (CONTRACT §13): OpenTelemetry GenAI spans (in-memory exporter, and OTLP/HTTP to a local
receiver through `omni-llm serve`), W3C traceparent continued, content capture switch, CloudWatch EMF lines."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the `otel` extra is not installed")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from proxy.app import create_app  # noqa: E402
from proxy.config import parse_config  # noqa: E402
from proxy.otel import Tracing  # noqa: E402
from proxy.tracing import tracing_wanted  # noqa: E402
from tests.fakes.server import Recorder  # noqa: E402
from tests.proxy_server import free_port, run_proxy  # noqa: E402


def config_yaml(upstream: str) -> str:
    return f"""
providers:
  up: {{type: openai, api_key: k, base_url: "{upstream}/v1", max_retries: 1}}
  demo: {{type: mock}}
models:
  demo: {{provider: demo, model: mock-1}}
  gpt: {{provider: up, model: gpt-4o-mini}}
  flaky: {{provider: up, model: flaky-1-otel}}
  broken: {{provider: up, model: fail-503}}
  cut: {{provider: up, model: midstream-error}}
  vectors: {{provider: demo, model: mock-embed-1, mode: embedding}}
"""


class Traced:
    def __init__(self, upstream: str, capture: bool = False) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"} if capture else {}
        self.app = create_app(parse_config(config_yaml(upstream), dict(os.environ)), tracing=Tracing(provider, env))

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as client:
            return await client.post(path, json=body, headers=headers)

    def spans(self) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """(the request span, its children in start order); exactly one request span."""
        spans = list(self.exporter.get_finished_spans())
        roots = [s for s in spans if s.kind is SpanKind.SERVER]
        assert len(roots) == 1, [s.name for s in spans]
        root = roots[0]
        children = sorted((s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id),
                          key=lambda s: s.start_time)
        assert len(children) == len(spans) - 1, [s.name for s in spans]
        return root, children


@pytest.fixture
def traced(openai_upstream: tuple[str, Recorder]) -> Traced:
    return Traced(openai_upstream[0])


async def test_the_attempt_span_is_the_upstream_request_parent(openai_upstream: tuple[str, Recorder]) -> None:
    """W3C trace context goes upstream (OpenAI accepts it): the vendor's spans join the gateway's trace."""
    traced = Traced(openai_upstream[0])
    marker = "traceparent check"
    response = await traced.post("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": marker}]})
    assert response.status_code == 200
    _, (attempt,) = traced.spans()
    sent = [r for r in openai_upstream[1].requests if marker in str(r.body)]
    assert sent and sent[-1].headers["traceparent"].startswith(
        f"00-{attempt.context.trace_id:032x}-{attempt.context.span_id:016x}-")


HI = [{"role": "user", "content": "hi"}]


async def test_plain_call_is_a_request_span_with_one_attempt(traced: Traced) -> None:
    response = await traced.post("/v1/chat/completions", {"model": "gpt", "messages": HI, "max_tokens": 20,
                                                          "temperature": 0.5})
    assert response.status_code == 200
    root, (attempt,) = traced.spans()
    assert root.name == "chat gpt" and root.status.status_code is not StatusCode.ERROR
    usage = response.json()["usage"]
    assert dict(root.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt", "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai", "omni_llm.provider": "up",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"], "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "gen_ai.response.finish_reasons": ("stop",), "gen_ai.request.max_tokens": 20,
        "gen_ai.request.temperature": 0.5, "http.response.status_code": 200}
    assert attempt.name == "chat gpt-4o-mini" and attempt.kind is SpanKind.CLIENT
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert "gen_ai.input.messages" not in root.attributes  # content is not recorded unless asked


async def test_retry_and_fallback_are_sibling_attempts(traced: Traced) -> None:
    response = await traced.post("/v1/chat/completions", {"model": "flaky", "messages": HI})
    assert response.status_code == 200
    root, attempts = traced.spans()
    assert [a.name for a in attempts] == ["chat flaky-1-otel", "chat flaky-1-otel"]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[0].attributes["http.response.status_code"] == 502
    assert attempts[1].status.status_code is not StatusCode.ERROR
    traced.exporter.clear()

    response = await traced.post("/v1/chat/completions", {"model": "broken", "messages": HI, "fallbacks": ["demo"]})
    assert response.status_code == 200
    root, attempts = traced.spans()
    assert [a.name for a in attempts] == ["chat fail-503", "chat fail-503", "chat mock-1"]
    assert [a.attributes["gen_ai.provider.name"] for a in attempts] == ["openai", "openai", "omni_llm.mock"]
    assert root.attributes["gen_ai.request.model"] == "broken"
    assert root.attributes["gen_ai.response.model"] == "mock-1"


async def test_stream_span_ends_with_the_stream_and_its_usage(traced: Traced) -> None:
    response = await traced.post("/v1/chat/completions", {"model": "gpt", "messages": HI, "stream": True,
                                                          "stream_options": {"include_usage": True}})
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    usage = orjson.loads(events[-2][6:])["usage"]
    root, (attempt,) = traced.spans()
    assert root.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert root.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert root.end_time >= attempt.end_time  # the attempt ends at the first chunk, the request at [DONE]


async def test_error_after_the_first_byte_marks_the_request_span(traced: Traced) -> None:
    response = await traced.post("/v1/chat/completions", {"model": "cut", "messages": HI, "stream": True})
    assert response.status_code == 200 and '"error"' in response.text
    root, _ = traced.spans()
    assert root.status.status_code is StatusCode.ERROR and root.attributes["http.response.status_code"] == 200


async def test_error_before_the_first_byte(traced: Traced) -> None:
    response = await traced.post("/v1/chat/completions", {"model": "no-such-model", "messages": HI})
    assert response.status_code == 404
    root, children = traced.spans()
    assert children == [] and root.status.status_code is StatusCode.ERROR
    assert root.attributes["http.response.status_code"] == 404


async def test_traceparent_is_continued(traced: Traced) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await traced.post("/v1/chat/completions", {"model": "demo", "messages": HI},
                      headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    root, (attempt,) = traced.spans()
    assert f"{root.context.trace_id:032x}" == trace_id and f"{root.parent.span_id:016x}" == parent_id
    assert attempt.context.trace_id == root.context.trace_id


async def test_embeddings_span(traced: Traced) -> None:
    response = await traced.post("/v1/embeddings", {"model": "vectors", "input": "hello"})
    assert response.status_code == 200
    root, (attempt,) = traced.spans()
    assert root.name == "embeddings vectors" and attempt.name == "embeddings mock-embed-1"


async def test_content_only_when_the_capture_variable_says_so(openai_upstream: tuple[str, Recorder]) -> None:
    traced = Traced(openai_upstream[0], capture=True)
    response = await traced.post("/v1/chat/completions", {"model": "gpt", "messages": HI})
    root, _ = traced.spans()
    assert orjson.loads(root.attributes["gen_ai.input.messages"]) == HI
    output = orjson.loads(root.attributes["gen_ai.output.messages"])
    assert output[0]["content"] == response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("env, wanted", [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
])
def test_tracing_is_switched_by_the_standard_variables(env: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(env) is wanted


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/v1/traces":
            Receiver.bodies.append(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def received_spans() -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for body in list(Receiver.bodies):
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return spans


def test_otlp_http_export_from_the_server(receiver: str, openai_upstream: tuple[str, Recorder]) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "gw-test"}
    with run_proxy(config_yaml(openai_upstream[0]), env=env) as proxy:
        response = httpx.post(proxy.v1 + "/chat/completions", json={"model": "gpt", "messages": HI}, timeout=30)
        assert response.status_code == 200
        deadline = time.monotonic() + 20
        while len(received_spans()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the receiver for the batch the exporter sends
    spans = {s.name: s for s in received_spans()}
    assert {"chat gpt", "chat gpt-4o-mini"} <= set(spans)
    root, attempt = spans["chat gpt"], spans["chat gpt-4o-mini"]
    assert attempt.parent_span_id == root.span_id
    attributes = {a.key: a.value for a in root.attributes}
    assert attributes["gen_ai.request.model"].string_value == "gpt"
    assert attributes["gen_ai.provider.name"].string_value == "openai"


def test_emf_lines_follow_the_specification(openai_upstream: tuple[str, Recorder]) -> None:
    yaml = config_yaml(openai_upstream[0]) + "metrics: {emf: true}\n"
    with run_proxy(yaml) as proxy:
        assert httpx.post(proxy.v1 + "/chat/completions", json={"model": "gpt", "messages": HI}).status_code == 200
        assert httpx.post(proxy.v1 + "/chat/completions", json={"model": "broken", "messages": HI}).status_code == 502
        assert httpx.post(proxy.v1 + "/embeddings", json={"model": "vectors", "input": "x"}).status_code == 200
        assert httpx.get(proxy.url + "/health").status_code == 200  # not a model request: no line
        deadline = time.monotonic() + 10
        while proxy.logs().count('{"_aws"') < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = [orjson.loads(line) for line in proxy.logs().splitlines() if line.startswith('{"_aws"')]
    assert len(lines) == 3
    for line in lines:
        meta = line["_aws"]
        assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
        (directive,) = meta["CloudWatchMetrics"]
        assert directive["Namespace"] == "OmniLLM" and directive["Dimensions"] == [["Model", "Provider"]]
        for dimension in directive["Dimensions"][0]:
            assert isinstance(line[dimension], str)  # a dimension must name a string member of the root
        names = [m["Name"] for m in directive["Metrics"]]
        assert names[:5] == ["omni_llm.requests.total", "omni_llm.requests.duration_ms", "omni_llm.errors.by_provider",
                             "omni_llm.costs.by_model_usd", "omni_llm.container.cold_starts"]
        for metric in directive["Metrics"]:
            assert isinstance(line[metric["Name"]], int | float)
            assert metric["Unit"] in ("Count", "Milliseconds", "None")
    ok, failed, embedded = lines
    assert (ok["Model"], ok["Provider"], ok["StatusClass"]) == ("gpt", "up", "2xx")
    assert ok["omni_llm.container.cold_starts"] == 1 and failed["omni_llm.container.cold_starts"] == 0
    assert ok["omni_llm.errors.by_provider"] == 0 and failed["omni_llm.errors.by_provider"] == 1
    assert failed["StatusClass"] == "5xx" and embedded["Model"] == "vectors"
    assert ok["omni_llm.costs.by_model_usd"] > 0  # gpt-4o-mini has shipped prices


def test_the_lambda_dashboard_charts_what_the_emf_lines_carry() -> None:
    """deploy/template.yaml's dashboard (cfn-lint checks the template in deploy/check.sh) names only
    metrics the gateway writes, in its namespace and dimensions."""
    import re
    from pathlib import Path

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else loader.construct_scalar(node)

    Loader.add_multi_constructor("!", any_tag)
    template = yaml.load(Path("deploy/template.yaml").read_text(), Loader=Loader)  # noqa: S506 - our own file
    body, variables = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    dashboard = orjson.loads(body.replace("${AWS::Region}", "us-east-1").replace("${Ns}", variables["Ns"]))
    expressions = [m[0]["expression"] for w in dashboard["widgets"] for m in w["properties"]["metrics"]]
    names = {re.search(r'MetricName="([^"]+)"', e).group(1) for e in expressions}  # type: ignore[union-attr]
    assert all("{OmniLLM,Model,Provider}" in e for e in expressions)
    written: list[str] = []
    from proxy.emf import EmfWriter

    EmfWriter(write=written.append).record({"log": {}, "rag_retrieval_ms": 1.0}, 200, 1.0)
    emitted = {m["Name"] for m in orjson.loads(written[0])["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == emitted
    env = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert env["OMNI_LLM_EMF"] == "EnableEmfMetrics" and "xray" in env["OTEL_PROPAGATORS"]


async def test_a_rag_call_has_a_retrieval_span_and_emf_time(tmp_path: Any, openai_upstream: tuple[str, Recorder]) -> None:
    pytest.importorskip("numpy", reason="the `rag` extra is not installed")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "facts.txt").write_text("The lighthouse keeper's cat is called Biscuit.")
    yaml = (config_yaml(openai_upstream[0]) + f"""
  local-embedding: {{provider: local, model: l2_supercat, mode: embedding}}
rag:
  store: {{type: sqlite, path: "{tmp_path}/rag.db"}}
  allowed_paths: ["{tmp_path}/docs"]
metrics: {{emf: true}}
""").replace("  demo: {type: mock}\n", "  demo: {type: mock}\n  local: {type: local}\n", 1)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    written: list[str] = []
    app = create_app(parse_config(yaml, dict(os.environ)), tracing=Tracing(provider, {}))
    app.state.gateway.emf._write = written.append
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "demo", "messages": [{"role": "user", "content": "What is the cat called?"}],
            "rag": {"sources": [f"{tmp_path}/docs/facts.txt"]}})
    assert response.status_code == 200, response.text
    spans = {s.name: s for s in exporter.get_finished_spans()}
    retrieval = spans["retrieval sources"]
    assert retrieval.parent.span_id == spans["chat demo"].context.span_id
    assert retrieval.attributes["omni_llm.rag.chunks"] >= 1 and retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    line = orjson.loads(written[-1])
    names = [m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "omni_llm.rag.retrieval_time_ms" in names and line["omni_llm.rag.retrieval_time_ms"] >= 0
