"""Prometheus metrics, one registry per app (no process globals).

Label values are bounded: a `model` label is a configured model or strategy
name, anything else (an unknown name, an ad-hoc `PROVIDER/MODEL`) is counted
as `other`; a provider label is a configured provider or `other`. Clients
therefore cannot grow the registry (or `/metrics`) by inventing names.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.routing import Health

OTHER = "other"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, models: Iterable[str] = (), providers: Iterable[str] = (),
                 deployments: Iterable[tuple[str, str]] = ()) -> None:
        self._models = frozenset(models)
        self._providers = frozenset(providers)
        self._deployments = frozenset(deployments)  # (provider, upstream model) pairs of the config
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

    def label(self, model: str, provider: str) -> tuple[str, str]:
        return (model if model in self._models else OTHER,
                provider if provider in self._providers or not provider else OTHER)

    def observe(self, route: str, model: str, provider: str, status: int, seconds: float) -> None:
        model, provider = self.label(model, provider)
        self.requests.labels(route, model, provider, str(status)).inc()
        self.latency.labels(route, model, provider).observe(seconds)

    def account(self, model: str, provider: str, usage: dict | None, cost: float | None) -> None:
        model, provider = self.label(model, provider)
        if usage:
            self.tokens.labels(model, provider, "prompt").inc(usage.get("prompt_tokens") or 0)
            self.tokens.labels(model, provider, "completion").inc(usage.get("completion_tokens") or 0)
        if cost:
            self.cost.labels(model, provider).inc(cost)

    def render(self, health: Health) -> bytes:
        for (provider, model), healthy in health.snapshot().items():
            if (provider, model) in self._deployments:  # ad-hoc PROVIDER/MODEL circuits stay unlabelled
                self.deployment_up.labels(provider, model).set(1 if healthy else 0)
        return generate_latest(self.registry)
