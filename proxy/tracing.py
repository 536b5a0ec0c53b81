"""Tracing switch: OpenTelemetry only when the standard `OTEL_*` variables ask for it.

`tracing_from_env()` reads the environment and returns None (tracing off: the
gateway then does no tracing work at all and imports no OpenTelemetry module)
or the OpenTelemetry-backed `proxy.otel.Tracing`. On when
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER` is set; off when `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none`. The OpenTelemetry SDK and OTLP exporter are the
`otel` extra; asked for without it, the gateway says so once and runs untraced.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.otel import Tracing

log = logging.getLogger("omni")

# Header lines (`\r\ntraceparent: ...`) for the upstream request of the current attempt, set by the
# router while tracing is on and read by the lean HTTP client (translators/http/sender.py): OpenAI,
# Anthropic, Groq and OpenAI-compatible upstreams accept W3C trace context. Empty when tracing is off.
UPSTREAM_TRACE_HEADERS: contextvars.ContextVar[bytes] = contextvars.ContextVar("omni_upstream_trace", default=b"")


def tracing_wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracing_from_env(env: Mapping[str, str]) -> Tracing | None:
    if not tracing_wanted(env):
        return None
    try:
        from proxy.otel import Tracing, provider_from_env
    except ImportError as exc:
        log.warning("OTEL_* asks for traces but the OpenTelemetry SDK is not installed "
                    "(pip install 'omni-llm[otel]'): tracing is off (%s)", exc)
        return None
    return Tracing(provider_from_env(), env)
