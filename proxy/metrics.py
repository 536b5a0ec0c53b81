"""Prometheus metrics, one registry per app (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.routing import Health

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "omni_requests", "Requests served", ["route", "model", "provider", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "omni_request_duration_seconds", "Request latency (to the last byte)", ["route", "model", "provider"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.upstream_errors = Counter(
            "omni_upstream_errors", "Failed upstream attempts", ["provider", "model", "status"], registry=self.registry
        )
        self.tokens = Counter(
            "omni_tokens", "Tokens processed", ["model", "provider", "kind"], registry=self.registry
        )
        self.cost = Counter("omni_cost_usd", "Estimated spend in USD", ["model", "provider"], registry=self.registry)
        self.deployment_up = Gauge(
            "omni_deployment_healthy", "1 when a deployment is not cooling down", ["provider", "upstream_model"],
            registry=self.registry,
        )

    def observe(self, route: str, model: str, provider: str, status: int, seconds: float) -> None:
        self.requests.labels(route, model, provider, str(status)).inc()
        self.latency.labels(route, model, provider).observe(seconds)

    def account(self, model: str, provider: str, usage: dict | None, cost: float | None) -> None:
        if usage:
            self.tokens.labels(model, provider, "prompt").inc(usage.get("prompt_tokens") or 0)
            self.tokens.labels(model, provider, "completion").inc(usage.get("completion_tokens") or 0)
        if cost:
            self.cost.labels(model, provider).inc(cost)

    def render(self, health: Health) -> bytes:
        for (provider, model), healthy in health.snapshot().items():
            self.deployment_up.labels(provider, model).set(1 if healthy else 0)
        return generate_latest(self.registry)
