"""OpenTelemetry traces with the GenAI semantic conventions (imported only when tracing is on).

Span tree for one request (the names a trace viewer such as Jaeger shows):

    chat demo                      SERVER  the request: gen_ai.request.model = the model asked for,
    ├── chat gpt-4o                CLIENT  one per upstream attempt (retries, fallbacks), with the
    ├── chat claude-haiku-4-5      CLIENT  provider, the upstream model and the failure if any
    ├── retrieval handbook         INTERNAL  RAG retrieval / embedding batch (`span()`)
    └── execute_tool files__read   INTERNAL  one per MCP tool call (`span()`)

Attribute names follow the current conventions (`gen_ai.provider.name`, not the
older `gen_ai.system`). A client's W3C `traceparent` is continued. Prompts and
answers are recorded only with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
A stream's request span ends when the stream does, with its usage.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.config import Deployment, ProviderConfig

# Our provider types -> the registry values of `gen_ai.provider.name`.
PROVIDER_NAMES = {
    "openai": "openai", "openai_compatible": "openai", "anthropic": "anthropic", "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini", "vertex": "gcp.vertex_ai", "mistral": "mistral_ai", "cohere": "cohere",
    "groq": "groq", "mock": "omni_llm.mock",
}
TRACE_CONTEXT = TraceContextTextMapPropagator()  # upstreams get W3C trace context, whatever OTEL_PROPAGATORS says
# What OTEL_PROPAGATORS may read: W3C trace context and baggage, AWS X-Ray (Lambda sets it).
_PROPAGATION_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage", b"x-amzn-trace-id"})
_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens", "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p", "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty", "presence_penalty": "gen_ai.request.presence_penalty",
}


def provider_from_env() -> TracerProvider:
    """A TracerProvider exporting as OTEL_TRACES_EXPORTER says (default otlp, over HTTP/protobuf)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "omni-llm"}))  # OTEL_SERVICE_NAME wins
    for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        exporter: SpanExporter
        name = name.strip().lower()
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name in ("otlp", ""):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT
        else:
            raise ValueError(f"unsupported OTEL_TRACES_EXPORTER {name!r} (otlp, console or none)")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Tracing:
    def __init__(self, provider: TracerProvider, env: Mapping[str, str]) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("omni-llm")
        self.capture = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() == "true"

    # -- the request span ---------------------------------------------------------
    def start_request(self, scope: Mapping[str, Any], operation: str) -> tuple[Span, object]:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATION_HEADERS}
        parent = propagate.extract(carrier) if carrier else None
        span = self.tracer.start_span(operation, context=parent, kind=SpanKind.SERVER,
                                      attributes={"gen_ai.operation.name": operation})
        return span, context.attach(trace.set_span_in_context(span, parent))

    def end_request(self, span: Span, token: object, state: Mapping[str, Any], status: int,
                    provider_types: Mapping[str, str]) -> None:
        fields = state.get("log") or {}
        requested = state.get("requested_model") or fields.get("model")
        if requested:
            span.update_name(f"{span.name} {requested}")  # type: ignore[attr-defined]
            span.set_attribute("gen_ai.request.model", str(requested))
        if fields.get("upstream_model"):
            span.set_attribute("gen_ai.response.model", str(fields["upstream_model"]))
        provider = fields.get("provider")
        if provider:
            span.set_attribute("gen_ai.provider.name", _provider_name(provider_types.get(provider, provider)))
            span.set_attribute("omni_llm.provider", str(provider))
        for key in ("prompt_tokens", "completion_tokens"):
            if fields.get(key) is not None:
                span.set_attribute("gen_ai.usage.input_tokens" if key == "prompt_tokens" else "gen_ai.usage.output_tokens",
                                   int(fields[key]))
        if state.get("finish_reasons"):
            span.set_attribute("gen_ai.response.finish_reasons", list(state["finish_reasons"]))
        for key, value in (state.get("trace_attributes") or {}).items():
            span.set_attribute(key, value)
        span.set_attribute("http.response.status_code", status)
        if status >= 400 or fields.get("error"):
            span.set_status(Status(StatusCode.ERROR, str(fields.get("error") or "")))
            span.set_attribute("error.type", str(fields.get("error_type") or status))
        span.end()
        context.detach(token)  # type: ignore[arg-type]

    def request_attributes(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """What the request says about itself (set once the body is parsed)."""
        attributes: dict[str, Any] = {}
        for key, name in _REQUEST_PARAMS.items():
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if self.capture and body.get("messages") is not None:
            attributes["gen_ai.input.messages"] = orjson.dumps(body["messages"]).decode()
        return attributes

    def output_attributes(self, result: Mapping[str, Any]) -> dict[str, Any]:
        if not self.capture:
            return {}
        messages = [c.get("message") for c in result.get("choices") or () if isinstance(c, dict)]
        return {"gen_ai.output.messages": orjson.dumps(messages).decode()}

    # -- child spans ---------------------------------------------------------------
    @contextlib.contextmanager
    def attempt(self, deployment: Deployment, provider: ProviderConfig, operation: str,
                describe: Callable[[BaseException], tuple[str, int]]) -> Iterator[Span]:
        """One upstream attempt: `describe(exc)` names a failure (error type, status)."""
        with self.tracer.start_as_current_span(
            f"{operation} {deployment.model}", kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False,
            attributes={"gen_ai.operation.name": operation, "gen_ai.provider.name": _provider_name(provider.type),
                        "gen_ai.request.model": deployment.model, "omni_llm.model": deployment.name,
                        "omni_llm.provider": provider.name},
        ) as span:
            try:
                yield span
            except BaseException as exc:
                error_type, status = describe(exc)
                span.set_attribute("error.type", error_type)
                span.set_attribute("http.response.status_code", status)
                span.set_status(Status(StatusCode.ERROR, error_type))
                raise

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
        """A child of the current span: a RAG retrieval, an embedding batch, an MCP tool call."""
        with self.tracer.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=dict(attributes or {})) as span:
            yield span

    def inject(self, headers: dict[str, str]) -> None:
        """`traceparent` (and `tracestate`) of the current span, for an upstream that accepts them."""
        propagate.inject(headers)

    def upstream_header_lines(self) -> bytes:
        """The current span's W3C trace context as raw header lines for the lean HTTP client."""
        carrier: dict[str, str] = {}
        TRACE_CONTEXT.inject(carrier)
        return b"".join(f"\r\n{name}: {value}".encode("latin-1") for name, value in carrier.items()
                        if "\r" not in value and "\n" not in value)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what the batch processor still holds


def _provider_name(provider_type: str) -> str:
    return PROVIDER_NAMES.get(provider_type, provider_type)
