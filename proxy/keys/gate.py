"""The gate every model call passes when keys, limits, budgets or the cache are configured.

It is the outermost step of the chat pipeline (so every ingress that goes
through `Gateway.complete_chat` / `open_chat` gets it, and a cache hit skips
RAG and MCP too) and wraps the embeddings call. Per request, in order:
key permissions (models, MCP servers, collections) → rpm/tpm → budget
reservation → cache lookup → the call → settle spend, correct tpm, store in the
cache, one usage-log row. Off the request path: the usage write, and with Redis
the tpm correction and budget settlement.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from proxy.config import Deployment, state_of
from proxy.errors import InvalidRequest, PermissionDenied, ProxyError, RateLimited
from proxy.keys import tokens
from proxy.keys.budget import MemoryBudget, RedisBudget, Reservation
from proxy.keys.cache import MemoryCache, RedisCache, StreamRecorder, cache_key, iterate, to_chunks
from proxy.keys.limits import MemoryLimiter, RedisLimiter, Verdict
from proxy.keys.prices import cost_of
from proxy.keys.redis import unavailable
from proxy.keys.service import KeyService
from proxy.keys.store import KeyRecord, UsageRow
from proxy.router import Served
from translators.base import JSON

if TYPE_CHECKING:
    from proxy.app import Gateway
    from proxy.pipeline import ChatCall, Complete, OpenStream
    from proxy.routing import Link
    from proxy.streaming import Item, Stream


@dataclass
class Ticket:
    """What one admitted request holds until it is settled."""

    key: KeyRecord | None
    route: str
    model: str
    request_id: str
    started: float
    est_tokens: int = 0
    tpm: int = 0
    reservation: Reservation | None = None
    cache_key: str | None = None
    store_ttl: float = 0.0  # > 0: store the answer for this long
    settled: bool = field(default=False)
    log: dict[str, Any] | None = None  # the request's log line: what inner steps spent besides the model call


# A budget reservation outlives the longest request by this much before another instance reclaims it.
LEASE_MARGIN_S = 60.0


class Gate:
    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config
        self.config = config
        self.keys = KeyService(state_of(config))
        self.limits = config.limits
        self.cache_config = config.cache
        # Every request passes the gate (not only virtual keys') when one of these is configured.
        self.active = config.state is not None or bool(config.limits.rpm or config.limits.tpm or config.cache.enabled)
        self.log_all = config.state is not None  # else only virtual-key requests are usage rows
        redis_url = state_of(config).redis_url
        self.redis: Any = None
        if redis_url:
            from proxy.keys.redis import connect

            self.redis = connect(redis_url)
            self.limiter: MemoryLimiter | RedisLimiter = RedisLimiter(self.redis)
            from proxy.keys.health import SharedBalancer, SharedHealth

            self.health: SharedHealth | None = SharedHealth(config.router, self.redis)
            gateway.router.health = self.health
            self.balancer: SharedBalancer | None = SharedBalancer(self.redis)
            gateway.router.balancer = self.balancer
            self.budget: MemoryBudget | RedisBudget = RedisBudget(self.redis, self.keys.spent,
                                                                       LEASE_MARGIN_S + config.server.request_timeout_s)
        else:
            self.health = None
            self.balancer = None
            self.limiter = MemoryLimiter()
            self.budget = MemoryBudget(self.keys.spent)
        self.cache: MemoryCache | RedisCache | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        if config.cache.enabled:
            self.cache = RedisCache(self.redis) if self.redis is not None else MemoryCache(config.cache.max_entries)

    # -- pipeline step -------------------------------------------------------------
    async def complete(self, call: ChatCall, nxt: Complete) -> Served[JSON]:
        ticket = await self._admit(call.state, call.body, call.chain, "chat")
        try:
            self._cache_plan(ticket, call)
            if ticket.cache_key is not None and call.state.get("cache") != b"refresh":
                hit = await self._lookup(ticket, call)
                if hit is not None:
                    served, completion = hit
                    served.result = completion
                    self._settle(ticket, served, completion.get("usage"), 200, cached=True)
                    return served
            served = await nxt(call)
        except BaseException as exc:
            self._settle(ticket, None, None, _status(exc))
            raise
        result = served.result
        usage = result.get("usage") or _offline_usage(call.body, result)
        if ticket.store_ttl > 0:
            self._store(ticket, served, result, call.extra)
        self._settle(ticket, served, usage, 200)
        return served

    async def stream(self, call: ChatCall, nxt: OpenStream) -> Served[Stream]:
        ticket = await self._admit(call.state, call.body, call.chain, "chat")
        try:
            self._cache_plan(ticket, call)
            if ticket.cache_key is not None and call.state.get("cache") != b"refresh":
                hit = await self._lookup(ticket, call)
                if hit is not None:
                    served, completion = hit
                    chunks = to_chunks(completion)
                    self._settle(ticket, served, completion.get("usage"), 200, cached=True)
                    return Served((chunks[:1], iterate(chunks[1:])), served.deployment, served.provider, [],
                                  served.attempts)
            served = await nxt(call)
        except BaseException as exc:
            self._settle(ticket, None, None, _status(exc))
            raise
        first, rest = served.result
        recorder = StreamRecorder()
        for chunk in first:
            recorder.add(chunk)
        served.result = (first, self._watch(rest, recorder, ticket, served, call))
        return served

    async def _watch(self, rest: AsyncIterator[Item], recorder: StreamRecorder, ticket: Ticket,
                     served: Served[Any], call: ChatCall) -> AsyncIterator[Item]:
        status = 499  # the client went away, unless the stream ends or fails first
        try:
            async for item in rest:
                if type(item) is list:
                    for chunk in item:
                        recorder.add(chunk)
                else:
                    recorder.add(item)  # type: ignore[arg-type]
                yield item
            status = 200
        except BaseException as exc:
            status = _status(exc)
            raise
        finally:
            completion = recorder.completion()
            usage = recorder.usage or _offline_usage(call.body, completion)  # a cut stream: what was sent
            ok = status == 200 and recorder.complete
            if ok and ticket.store_ttl > 0:
                self._store(ticket, served, completion, call.extra)
            self._settle(ticket, served, usage, status if ok or status != 200 else 502)
            closer = getattr(rest, "aclose", None)
            if closer is not None:
                await closer()

    # -- embeddings ----------------------------------------------------------------
    async def embed(self, state: dict[str, Any], body: JSON, chain: list[Link],
                    run: Callable[[], Awaitable[Served[JSON]]], route: str = "embeddings") -> Served[JSON]:
        """An embeddings call (and, with `route="rerank"`, a `/v1/rerank` call: the same admission and row)."""
        ticket = await self._admit(state, body, chain, route)
        try:
            served = await run()
        except BaseException as exc:
            self._settle(ticket, None, None, _status(exc))
            raise
        usage = served.result.get("usage") or {"prompt_tokens": tokens.count_prompt(body), "completion_tokens": 0}
        self._settle(ticket, served, usage, 200)
        return served

    def visible_models(self, state: dict[str, Any], data: list[JSON]) -> list[JSON]:
        key: KeyRecord | None = state.get("key")
        if key is None or key.models is None:
            return data
        return [m for m in data if m["id"] in key.models]

    # -- admission -----------------------------------------------------------------
    def permit(self, state: dict[str, Any], body: JSON) -> None:
        """The key's models, MCP servers and collections (a refusal is a usage row too)."""
        key: KeyRecord | None = state.get("key")
        if key is not None:
            try:
                _check_permissions(key, body)
            except ProxyError as error:
                ticket = Ticket(key, "chat", str(body.get("model")), state.get("request_id", ""), time.perf_counter(),
                                log=state.get("log"))
                self._settle(ticket, None, None, error.status)
                raise

    async def _admit(self, state: dict[str, Any], body: JSON, chain: list[Link], route: str) -> Ticket:
        key: KeyRecord | None = state.get("key")
        ticket = Ticket(key, route, str(body.get("model")), state.get("request_id", ""), time.perf_counter(),
                        log=state.get("log"))
        if key is not None:
            try:
                await self._enforce(ticket, key, state, body, chain)
            except ProxyError as error:  # refused requests are rows of the usage log too
                self._settle(ticket, None, None, error.status)
                raise
        return ticket

    async def _enforce(self, ticket: Ticket, key: KeyRecord, state: dict[str, Any], body: JSON,
                       chain: list[Link]) -> None:
        _check_permissions(key, body)
        rpm = key.rpm if key.rpm is not None else self.limits.rpm
        tpm = key.tpm if key.tpm is not None else self.limits.tpm
        prompt = tokens.count_prompt(body)
        estimate = prompt + tokens.max_completion(body, unbounded=0)
        estimate_usd = 0.0
        if key.budget_usd is not None:
            worst = prompt, tokens.max_completion(body)
            estimate_usd = max((cost_of(d, *worst) for _, deployments in chain for d in deployments), default=0.0)
        if (rpm or tpm) and key.budget_usd is not None and self.redis is not None:
            await self._enforce_pipelined(ticket, key, state, rpm, tpm, estimate, estimate_usd)
            return
        if rpm or tpm:
            verdict = await self.limiter.acquire(key.id, rpm, tpm, estimate)
            _limit_headers(state, rpm, tpm, verdict)
            if not verdict.allowed:
                raise _rate_limited(key, rpm, tpm, verdict)
            ticket.est_tokens, ticket.tpm = estimate, tpm  # taken: corrected when settled
        if key.budget_usd is not None:
            ticket.reservation = await self.budget.reserve(key.id, key.budget_usd, key.budget_period, estimate_usd,
                                                           time.time())

    async def _enforce_pipelined(self, ticket: Ticket, key: KeyRecord, state: dict[str, Any], rpm: int, tpm: int,
                                 estimate: int, estimate_usd: float) -> None:
        """Limits and budget in one Redis round trip (two scripts in one pipeline)."""
        assert isinstance(self.limiter, RedisLimiter) and isinstance(self.budget, RedisBudget)
        from redis.exceptions import NoScriptError

        now = time.time()
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            self.limiter.queue(pipe, key.id, rpm, tpm, estimate)
            reservation = self.budget.queue(pipe, key.id, key.budget_usd or 0.0, key.budget_period, estimate_usd, now)
            try:
                limit_reply, budget_reply = await pipe.execute()
                break
            except NoScriptError:  # Redis restarted or flushed its scripts: load them, once
                if attempt == 2:
                    raise
                await self.limiter.load()
                await self.budget.load()
            except Exception as exc:
                raise unavailable("rate-limit", exc) from exc
        verdict = self.limiter.verdict(limit_reply)
        _limit_headers(state, rpm, tpm, verdict)
        reserved = int(budget_reply[0]) == 1
        if not verdict.allowed:
            if reserved:
                self.budget.settle(reservation, 0.0)
            raise _rate_limited(key, rpm, tpm, verdict)
        ticket.est_tokens, ticket.tpm = estimate, tpm
        if reserved:
            ticket.reservation = reservation
        else:  # refused (raises, the tokens are given back when settled) or this period not seeded yet
            ticket.reservation = await self.budget.reserve(key.id, key.budget_usd or 0.0, key.budget_period,
                                                           estimate_usd, now)

    def _settle(self, ticket: Ticket, served: Served[Any] | None, usage: JSON | None, status: int,
                cached: bool = False) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        prompt = int((usage or {}).get("prompt_tokens") or 0)
        completion = int((usage or {}).get("completion_tokens") or 0)
        deployment: Deployment | None = served.deployment if served is not None else None
        cost = cost_of(deployment, prompt, completion) if deployment is not None and not cached else 0.0
        cost += float((ticket.log or {}).get("rag_rerank_cost_usd") or 0.0)  # `rag.rerank` ran for this request
        key = ticket.key
        if ticket.reservation is not None:
            self.budget.settle(ticket.reservation, cost)
        if key is not None and ticket.tpm:
            used = 0 if cached or served is None else prompt + completion
            self.limiter.correct(key.id, ticket.tpm, used - ticket.est_tokens)
        if key is None and not self.log_all:
            return
        self.keys.log(UsageRow(
            request_id=ticket.request_id, key_id=key.id if key else None,
            model=deployment.name if deployment else ticket.model,
            provider=served.provider.name if served is not None else "", prompt_tokens=prompt,
            completion_tokens=completion, cost_usd=cost, latency_ms=round((time.perf_counter() - ticket.started) * 1000, 3),
            status=status, cached=cached, route=ticket.route, created_at=time.time()))

    # -- cache ---------------------------------------------------------------------
    def _cache_plan(self, ticket: Ticket, call: ChatCall) -> None:
        if self.cache is None:
            return
        ttl = self.cache_config.ttl_s
        options = call.body.get("cache")
        if options is not None:
            if not isinstance(options, dict) or set(options) - {"ttl_s"}:
                raise InvalidRequest("'cache' must be an object like {\"ttl_s\": 60}", param="cache")
            value = options.get("ttl_s", ttl)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidRequest("'cache.ttl_s' must be a number of seconds >= 0", param="cache.ttl_s")
            ttl = float(value)
        directive = call.state["headers"].get(b"x-omni-cache", b"").strip().lower() if "headers" in call.state else b""
        call.state["cache"] = directive
        if directive == b"bypass":
            call.headers.append((b"x-omni-cache", b"bypass"))
            return
        key = ticket.key
        namespace = "shared" if self.cache_config.shared else (key.id if key is not None else "master")
        ticket.cache_key = cache_key(call.body, namespace)
        ticket.store_ttl = ttl
        call.headers.append((b"x-omni-cache", b"miss"))

    async def _lookup(self, ticket: Ticket, call: ChatCall) -> tuple[Served[Any], JSON] | None:
        assert self.cache is not None and ticket.cache_key is not None
        raw = await self.cache.get(ticket.cache_key)
        if raw is None:
            return None
        entry = orjson.loads(raw)
        for _, deployments in call.chain:
            for deployment in deployments:
                if deployment.name == entry["deployment"] and deployment.provider == entry["provider"]:
                    completion = entry["completion"]
                    call.extra.update(entry.get("extra") or {})
                    call.headers[-1] = (b"x-omni-cache", b"hit")
                    call.state["cache_hit"] = True
                    provider = self.config.providers[deployment.provider]
                    return Served(completion, deployment, provider, [], ["cache"]), completion
        return None  # the config changed since: that answer came from a model this request no longer routes to

    def _store(self, ticket: Ticket, served: Served[Any], completion: JSON, extra: JSON) -> None:
        """Serialise now (the answer is decorated after this), write in the background."""
        assert self.cache is not None and ticket.cache_key is not None
        kept = {k: v for k, v in completion.items() if k not in ("id", "created", "model")}
        entry = orjson.dumps({"deployment": served.deployment.name, "provider": served.deployment.provider,
                              "completion": kept, "extra": extra})
        task = asyncio.get_running_loop().create_task(self.cache.set(ticket.cache_key, entry, ticket.store_ttl))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        if self.health is not None:
            await self.health.start()

    async def aclose(self) -> None:
        if self.health is not None:
            await self.health.aclose()
        if self.balancer is not None:
            await self.balancer.aclose()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.limiter.aclose()
        await self.budget.aclose()
        await self.keys.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def _check_permissions(key: KeyRecord, body: JSON) -> None:
    model = body.get("model")
    if key.models is not None and model not in key.models:
        raise PermissionDenied(f"This key may not use the model '{model}'.", param="model")
    mcp = body.get("mcp")
    if key.mcp_servers is not None and isinstance(mcp, dict):
        servers = mcp.get("servers")
        if servers is None:
            body["mcp"] = {**mcp, "servers": list(key.mcp_servers)}
        else:
            for server in servers if isinstance(servers, list) else [servers]:
                if server not in key.mcp_servers:
                    raise PermissionDenied(f"This key may not use the MCP server '{server}'.", param="mcp.servers",
                                           code="mcp_server_not_allowed")
    rag = body.get("rag")
    reranker = rag.get("rerank") if isinstance(rag, dict) else None
    if key.models is not None and isinstance(reranker, str) and reranker not in key.models:
        raise PermissionDenied(f"This key may not use the model '{reranker}'.", param="rag.rerank")
    if key.collections is not None and isinstance(rag, dict) and rag.get("collection") is not None:
        names = rag["collection"]
        for name in names if isinstance(names, list) else [names]:
            if name not in key.collections:
                raise PermissionDenied(f"This key may not use the collection '{name}'.", param="rag.collection",
                                       code="collection_not_allowed")


def _limit_headers(state: dict[str, Any], rpm: int, tpm: int, verdict: Verdict) -> None:
    headers = state.setdefault("response_headers", [])
    if rpm:
        headers += [(b"x-ratelimit-limit-requests", str(rpm).encode()),
                    (b"x-ratelimit-remaining-requests", str(verdict.remaining_requests).encode())]
    if tpm:
        headers += [(b"x-ratelimit-limit-tokens", str(tpm).encode()),
                    (b"x-ratelimit-remaining-tokens", str(verdict.remaining_tokens).encode())]


def _rate_limited(key: KeyRecord, rpm: int, tpm: int, verdict: Verdict) -> RateLimited:
    return RateLimited(f"Rate limit reached for key {key.id} ({_limits_text(rpm, tpm)}); "
                       f"retry in {verdict.retry_after:.1f} s.", retry_after=math.ceil(verdict.retry_after))


def _offline_usage(body: JSON, result: JSON) -> JSON:
    return {"prompt_tokens": tokens.count_prompt(body), "completion_tokens": tokens.count_completion(result)}


def _status(exc: BaseException) -> int:
    if isinstance(exc, ProxyError):
        return exc.status
    return 499 if isinstance(exc, (asyncio.CancelledError, GeneratorExit)) else 500


def _limits_text(rpm: int, tpm: int) -> str:
    return ", ".join(part for part in (f"{rpm} requests/min" if rpm else "", f"{tpm} tokens/min" if tpm else "") if part)
