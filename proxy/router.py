"""The router owns retries and fallbacks: it walks a chain until one deployment answers.

A deployment is retried (up to its provider's `max_retries`) on 429, 5xx,
connection errors and timeouts — never on other 4xx — waiting the upstream's
Retry-After when given (capped; longer means move on), else exponential
backoff with jitter. Then the next deployment of the model, then the next
model of the chain. All of it happens before the first byte reaches the
client: for streams the caller's operation peeks the first chunk.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from proxy.config import Config, Deployment, ProviderConfig
from proxy.errors import (
    InvalidRequest,
    ProviderNotConfigured,
    ProviderUnavailable,
    ProxyError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from proxy.ranking import Needs, Stats, missing_capability, needs_of, rank
from proxy.routing import Balancer, Health, Link
from proxy.tracing import UPSTREAM_TRACE_HEADERS
from translators import MissingExtra, load_provider_class
from translators.base import GATEWAY_FIELDS, JSON, Provider

log = logging.getLogger("omni.router")
T = TypeVar("T")

# A model mode -> the provider capability (and the trace operation name) it needs.
_CAPABILITY_OF_MODE = {"chat": "chat", "embedding": "embeddings", "rerank": "rerank"}

# Fields every chat provider takes, whatever its supported_params say.
_ALWAYS = frozenset({"model", "messages", "stream", "stream_options"})


class ProviderPool:
    """One SDK-backed provider object per configured provider, built on first use, closed on shutdown."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._providers: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            cfg = self._config.providers[name]
            try:
                cls = load_provider_class(cfg.type)
            except MissingExtra as exc:
                raise ProviderUnavailable(f"provider '{name}' is unavailable: {exc}") from None
            try:
                provider = self._providers[name] = cls(cfg)
            except Exception as exc:  # a setting the SDK rejects: the operator's problem, never a 500
                log.warning("provider %r could not be set up", name, exc_info=True)
                raise ProviderUnavailable(f"provider '{name}' could not be set up from the config "
                                          f"({type(exc).__name__}: {exc}); run `omni-llm check`") from None
        return provider

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            try:
                await provider.aclose()
            except Exception:  # closing must not stop the others from closing
                log.warning("closing provider failed", exc_info=True)


def _itself(d: Deployment) -> tuple[Deployment]:
    return (d,)


def _deployments_of_link(link: Link) -> tuple[Deployment, ...]:
    return link[1]


def to_proxy_error(provider: Provider | None, exc: BaseException) -> ProxyError:
    """Any failure of an upstream call -> the gateway's error (never a raw traceback)."""
    if isinstance(exc, ProxyError):
        return exc
    if provider is not None:
        mapped = provider.map_error(exc)
        if mapped is not None:
            return mapped
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream timed out")
    log.warning("unmapped upstream failure", exc_info=exc)
    return UpstreamError(f"upstream call failed ({type(exc).__name__})")


def prepare_request(
    request: Mapping[str, Any], provider: Provider, strict: bool, name: str, mode: str = "chat"
) -> tuple[JSON, list[str]]:
    """Strip gateway fields; drop (or, strict, reject) chat params the provider cannot honour.

    `supported_params` describes chat requests; embedding fields are the translator's to map.
    """
    supported = provider.supported_params
    body = {k: v for k, v in request.items() if k not in GATEWAY_FIELDS}
    if supported is None or mode != "chat":
        return body, []
    dropped = [k for k in body if k not in supported and k not in _ALWAYS]
    if dropped and strict:
        raise InvalidRequest(f"parameter '{dropped[0]}' is not supported by provider '{name}'", param=dropped[0])
    for key in dropped:
        del body[key]
    return body, dropped


@dataclass
class Served(Generic[T]):
    result: T
    deployment: Deployment
    provider: ProviderConfig
    dropped: list[str]
    attempts: list[str] = field(default_factory=list)
    reason: str = "ordered"  # why this order: x-omni-route-reason (CONTRACT §16)


Operation = Callable[[Provider, JSON, Deployment], Awaitable[T]]


class Router:
    def __init__(
        self,
        config: Config,
        pool: ProviderPool,
        health: Health | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_s: float = 0.5,
        stats: Stats | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.health = health or Health(config.router)
        self.balancer = Balancer()
        self.stats = stats or Stats()
        self.tracing: Any = None  # proxy.otel.Tracing when traces are on (set by the gateway)
        self._sleep = sleep
        self._backoff_s = backoff_s

    def plan(self, chain: list[Link], request: JSON) -> tuple[list[Deployment], list[str], str]:
        """Deployments to try in order, the members skipped for a missing capability, and the reason.

        A strategy with an order ranks its members; a model with a routing
        ranks its deployments (else its weighted round-robin). Deployments
        cooling down go last; members that cannot honour the request are left out.
        """
        links = list(chain)
        needs_cache: list[Needs] = []

        def needs() -> Needs:
            if not needs_cache:
                needs_cache.append(needs_of(request))
            return needs_cache[0]

        orders = self.config.orders
        reason = ""
        if orders:
            requested = request.get("model")
            for strategy in (requested, request.get("fallback_strategy")):
                order = orders.get(strategy) if strategy in self.config.strategies else None  # type: ignore[operator]
                if order:
                    members = set(self.config.strategies[strategy])  # type: ignore[index]
                    if strategy != requested:  # the model asked for stays first, whatever the fallback's order
                        members.discard(requested)  # type: ignore[arg-type]
                    where = [i for i, (name, _) in enumerate(links) if name in members]
                    # Members whose providers are not configured go last, unranked: the order (and the
                    # reason it gives) is about the members that can answer.
                    ready = [self._ready(links[i]) for i in where]
                    usable = [links[i] for i, ok in zip(where, ready) if ok]
                    ranked, why = rank(order, usable, _deployments_of_link, self.stats, needs,
                                       self.stats.turn(strategy))  # type: ignore[arg-type]
                    ranked += [links[i] for i, ok in zip(where, ready) if not ok]
                    for i, link in zip(where, ranked):
                        links[i] = link
                    reason = reason or why
        ready: list[Deployment] = []
        cooling: list[Deployment] = []
        skipped: list[str] = []
        available = self.health.available
        for name, deployments in links:
            routing = orders.get(name) if orders else None
            if routing:
                ordered, why = rank(routing, deployments, _itself, self.stats, needs, self.stats.turn(name))
            elif len(deployments) == 1:
                ordered, why = deployments, "ordered"  # type: ignore[assignment]
            else:
                ordered, why = self.balancer.order(name, deployments), "round_robin"
            reason = reason or why
            for d in ordered:
                if d.vision is False or d.tools is False or d.context_window is not None:  # has limits
                    missing = missing_capability(d, needs())
                    if missing is not None:
                        skipped.append(f"{name} skipped: {missing}")
                        continue
                (ready if available(d) else cooling).append(d)
        # Every deployment cooling down: probe them rather than fail without trying.
        return ready or cooling, skipped, reason

    def _ready(self, link: Link) -> bool:
        providers = self.config.providers
        for d in link[1]:
            if not providers[d.provider].not_ready:
                return True
        return False

    async def run(self, chain: list[Link], request: JSON, mode: str, operation: Operation[T]) -> Served[T]:
        errors: list[ProxyError] = []
        candidates, skipped, reason = self.plan(chain, request)
        if not candidates and skipped:
            raise InvalidRequest("no model can serve this request: " + "; ".join(skipped), param="model",
                                 code="capability_unsupported")
        attempts: list[str] = list(skipped)
        strict = not self.config.server.drop_unsupported_params
        for deployment in candidates:
            label = f"{deployment.name}={deployment.provider}/{deployment.model}"
            cfg = self.config.providers[deployment.provider]
            try:
                provider = self._provider(deployment, cfg, mode)
                body, dropped = prepare_request(request, provider, strict, deployment.provider, mode)
            except ProxyError as exc:
                if isinstance(exc, InvalidRequest) and len(chain) == 1:
                    raise
                errors.append(exc)
                attempts.append(f"{label}:{exc.status}")
                continue
            for attempt in range(cfg.max_retries + 1):
                started = self.stats.clock()
                self.stats.enter(deployment)
                try:
                    result = await self._attempt(operation, provider, body, deployment, cfg, mode)
                except Exception as exc:  # every failure becomes a ProxyError below
                    error = to_proxy_error(provider, exc)
                    attempts.append(f"{label}:{error.status}")
                    errors.append(error)
                    if error.retryable or error.status in (401, 403, 502):
                        self.health.record_failure(deployment)
                    if not error.retryable and error.status < 500:
                        raise error from None  # the request itself is wrong: no retry, no fallback
                    delay = self._delay(error, attempt)
                    if not error.retryable or attempt == cfg.max_retries or delay is None:
                        break
                    await self._sleep(delay)
                else:
                    self.stats.observe(deployment, self.stats.clock() - started)
                    self.health.record_success(deployment)
                    attempts.append(f"{label}:200")
                    return Served(result, deployment, cfg, dropped, attempts, reason)
                finally:
                    self.stats.leave(deployment)
        raise self._final_error(errors, attempts)

    def _provider(self, deployment: Deployment, cfg: ProviderConfig, mode: str) -> Provider:
        if cfg.not_ready:
            raise ProviderNotConfigured(f"provider '{cfg.name}' for model '{deployment.name}' is not configured: {cfg.not_ready}")
        if deployment.mode != mode:
            raise InvalidRequest(
                f"model '{deployment.name}' is a {deployment.mode} model and cannot serve {mode} requests", param="model"
            )
        provider = self.pool.get(deployment.provider)
        needed = _CAPABILITY_OF_MODE.get(mode, "chat")
        if needed not in provider.capabilities:
            raise InvalidRequest(f"provider '{cfg.name}' does not support {needed}", param="model")
        return provider

    async def _attempt(
        self, operation: Operation[T], provider: Provider, body: JSON, deployment: Deployment, cfg: ProviderConfig,
        mode: str = "chat",
    ) -> T:
        if self.tracing is None:
            return await self._bounded_attempt(operation, provider, body, deployment, cfg)

        def describe(exc: BaseException) -> tuple[str, int]:
            error = to_proxy_error(provider, exc) if isinstance(exc, Exception) else None
            return (error.code or error.type, error.status) if error else (type(exc).__name__, 499)

        with self.tracing.attempt(deployment, cfg, _CAPABILITY_OF_MODE.get(mode, "chat"), describe):
            token = UPSTREAM_TRACE_HEADERS.set(self.tracing.upstream_header_lines())
            try:
                return await self._bounded_attempt(operation, provider, body, deployment, cfg)
            finally:
                UPSTREAM_TRACE_HEADERS.reset(token)

    async def _bounded_attempt(
        self, operation: Operation[T], provider: Provider, body: JSON, deployment: Deployment, cfg: ProviderConfig
    ) -> T:
        timeout = deployment.timeout_s or cfg.timeout_s
        if timeout is None:
            return await operation(provider, body, deployment)
        try:
            async with asyncio.timeout(timeout):
                return await operation(provider, body, deployment)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream did not answer within {timeout:g} s") from None

    def _delay(self, error: ProxyError, attempt: int) -> float | None:
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.config.router.retry_after_cap_s else None
        return self._backoff_s * (2**attempt) * (0.5 + random.random())

    @staticmethod
    def _final_error(errors: list[ProxyError], attempts: list[str]) -> ProxyError:
        if not errors:
            return UpstreamError("no deployment could serve the request")
        if len(errors) == 1:
            return errors[0]
        tried = ", ".join(attempts)
        if all(isinstance(e, RateLimited) for e in errors):
            waits = [e.retry_after for e in errors if e.retry_after is not None]
            return RateLimited(f"all upstreams are rate limited (tried {tried})", retry_after=min(waits) if waits else 1)
        if all(isinstance(e, UpstreamTimeout) for e in errors):
            return UpstreamTimeout(f"all upstreams timed out (tried {tried})")
        if all(isinstance(e, ProviderNotConfigured | ProviderUnavailable) for e in errors):
            return errors[0]
        return UpstreamError(f"all upstreams failed (tried {tried}); last error: {errors[-1].message}")
