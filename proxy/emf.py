"""CloudWatch Embedded Metric Format: one JSON line per model request on stdout.

On Lambda (and anywhere CloudWatch Logs collects stdout) each line becomes
metrics without a single PutMetricData call. The seeds' six metrics, in
namespace `OmniLLM` (configurable), with dimensions `Model` and `Provider`;
the status class (`2xx`, `4xx`, `5xx`) and the request id ride along as
properties. `omni_llm.container.cold_starts` is 1 on the first line a process
writes, 0 after; `omni_llm.rag.retrieval_time_ms` only when RAG retrieved.
Spec: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson


class EmfWriter:
    def __init__(self, namespace: str = "OmniLLM", write: Callable[[str], Any] | None = None) -> None:
        self.namespace = namespace
        self._write = write or _stdout_line
        self._cold = True

    def record(self, state: Mapping[str, Any], status: int, duration_ms: float) -> None:
        fields = state.get("log") or {}
        cold, self._cold = self._cold, False
        values: dict[str, tuple[float, str]] = {
            "omni_llm.requests.total": (1, "Count"),
            "omni_llm.requests.duration_ms": (round(duration_ms, 3), "Milliseconds"),
            "omni_llm.errors.by_provider": (1 if status >= 400 or fields.get("error") else 0, "Count"),
            "omni_llm.costs.by_model_usd": (float(fields.get("cost_usd") or 0.0), "None"),
            "omni_llm.container.cold_starts": (1 if cold else 0, "Count"),
        }
        if state.get("rag_retrieval_ms") is not None:
            values["omni_llm.rag.retrieval_time_ms"] = (float(state["rag_retrieval_ms"]), "Milliseconds")
        line: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Model", "Provider"]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                }],
            },
            "Model": str(fields.get("model") or state.get("requested_model") or "unknown"),
            "Provider": str(fields.get("provider") or "none"),
            "StatusClass": f"{status // 100}xx",
            "RequestId": str(state.get("request_id") or ""),
            **{name: value for name, (value, _) in values.items()},
        }
        self._write(orjson.dumps(line).decode() + "\n")


def _stdout_line(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()  # one whole line per request, now: CloudWatch Logs reads stdout line by line
