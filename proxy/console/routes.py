"""`/ui` (the console's static files) and `GET /admin/health` (models, deployments, live health)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import NotFound, PermissionDenied

if TYPE_CHECKING:
    from proxy.app import Gateway

# The only files served; the middleware lets exactly these paths through without a key (the login page).
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
_SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer",
             "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"}


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("proxy.console").joinpath("static", name).read_bytes()


async def static(gateway: Gateway, request: Request) -> Response:
    name = request.path_params.get("name") or "index.html"
    if name not in FILES:
        raise NotFound(f"Unknown route: GET {request.url.path}")
    return Response(_read(name), media_type=FILES[name], headers={**_SECURITY, "cache-control": "no-cache"})


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile (seconds) from cumulative histogram buckets `(le, count)`, interpolated like Prometheus."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, low, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return low
            return low + (le - low) * ((rank - below) / (count - below) if count > below else 1.0)
        low, below = le, count
    return low


def _samples(gateway: Gateway) -> dict[str, dict[str, Any]]:
    """Per public model name: requests, errors, latency buckets (summed over routes and providers)."""
    out: dict[str, dict[str, Any]] = {}
    for family in gateway.metrics.registry.collect():
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            entry = out.setdefault(model, {"requests": 0.0, "errors": 0.0, "buckets": {}})
            if sample.name == "omni_requests_total":
                entry["requests"] += sample.value
                if int(sample.labels.get("status", "0")) >= 400:
                    entry["errors"] += sample.value
            elif sample.name == "omni_request_duration_seconds_bucket":
                le = float(sample.labels["le"])
                entry["buckets"][le] = entry["buckets"].get(le, 0.0) + sample.value
    return out


def _upstream_errors(gateway: Gateway) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in gateway.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "omni_upstream_errors_total":
                key = (sample.labels["provider"], sample.labels["model"])
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _stats(entry: dict[str, Any] | None) -> dict[str, Any]:
    if entry is None:
        return {"requests": 0, "errors": 0, "error_rate": None, "p50_ms": None, "p99_ms": None}
    buckets = list(entry["buckets"].items())
    p50, p99 = _quantile(buckets, 0.5), _quantile(buckets, 0.99)
    requests = int(entry["requests"])
    return {"requests": requests, "errors": int(entry["errors"]),
            "error_rate": entry["errors"] / requests if requests else None,
            "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p99_ms": None if p99 is None else round(p99 * 1000, 1)}


async def health(gateway: Gateway, request: Request) -> Response:
    """Every model and strategy with its deployments, readiness (and why not), cooldowns, error rate, p50/p99."""
    if "key" in request.scope["state"]:
        raise PermissionDenied("The admin API needs a master key (server.api_keys), not a virtual key.",
                               code="admin_only")
    config = gateway.config
    samples, failures = _samples(gateway), _upstream_errors(gateway)
    cooling = {key for key, healthy in gateway.router.health.snapshot().items() if not healthy}
    models = []
    for name, deployments in config.models.items():
        rows = []
        for d in deployments:
            reason = config.providers[d.provider].not_ready
            rows.append({"provider": d.provider, "model": d.model, "mode": d.mode, "ready": reason is None,
                         "not_ready": reason, "cooling_down": (d.provider, d.model) in cooling,
                         "upstream_errors": int(failures.get((d.provider, d.model), 0))})
        models.append({"id": name, "kind": "model", "ready": any(r["ready"] for r in rows), "deployments": rows,
                       **_stats(samples.get(name))})
    ready = {m["id"] for m in models if m["ready"]}
    for name, members in config.strategies.items():
        models.append({"id": name, "kind": "strategy", "ready": any(m in ready for m in members),
                       "members": list(members), "deployments": [], **_stats(samples.get(name))})
    return Response(orjson.dumps({"object": "list", "data": models}), media_type="application/json")
