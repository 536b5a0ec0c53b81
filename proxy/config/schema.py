"""The config's data: the frozen dataclasses the router reads, and the names every check shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from translators import PROVIDER_TYPES

STRATEGY_ORDERS = ("ordered", "latency", "cost", "least_busy")  # CONTRACT §16
MODEL_ROUTINGS = ("round_robin", *STRATEGY_ORDERS)
MODEL_MODES = ("chat", "embedding", "rerank")  # rerank: POST /v1/rerank and `rag.rerank` (CONTRACT §10)
_CAPABILITY_KEYS = ("context_window", "vision", "tools")



class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class UpstreamLimits:
    """How the gateway's own HTTP client treats an upstream (`server.upstream_*`, `server.max_response_bytes`)."""

    max_connections: int = 100  # per provider; requests beyond it wait (within the connect timeout)
    connect_timeout_s: float = 10.0  # also bounds the wait for a free connection
    read_timeout_s: float = 120.0  # the longest silence between two reads of a response
    idle_timeout_s: float = 60.0  # an idle keep-alive connection older than this is not reused
    max_response_bytes: int = 256 * 1024 * 1024  # decoded body; larger answers fail


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    settings: Mapping[str, Any]  # expanded type-specific keys: api_key, base_url, region, ...
    timeout_s: float | None = None
    max_retries: int = 2
    headers: Mapping[str, str] = field(default_factory=dict)
    not_ready: str | None = None  # why the provider cannot serve; None when ready
    limits: UpstreamLimits = field(default_factory=lambda: UpstreamLimits())  # from server.upstream_*

    def get(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key)
        return default if value in (None, "") else value


@dataclass(frozen=True)
class Deployment:
    name: str  # the public model name this deployment serves
    provider: str
    model: str  # upstream model id
    mode: str = "chat"  # chat | embedding | rerank
    input_cost_per_mtok: float | None = None
    output_cost_per_mtok: float | None = None
    weight: float = 1.0
    timeout_s: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # type-specific: response, max_tokens, ...
    context_window: int | None = None  # tokens; None: unknown (no check)
    vision: bool | None = None  # False: cannot take images
    tools: bool | None = None  # False: cannot call tools

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.input_cost_per_mtok is None and self.output_cost_per_mtok is None:
            return None
        return (prompt_tokens * (self.input_cost_per_mtok or 0) + completion_tokens * (self.output_cost_per_mtok or 0)) / 1e6


@dataclass(frozen=True)
class ServerConfig:
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ("*",)
    max_request_bytes: int = 10 * 1024 * 1024
    request_timeout_s: float = 600.0
    drop_unsupported_params: bool = True
    # Slow clients (see docs/hardening.md): headers must arrive within header_timeout_s, a body may
    # stall at most body_timeout_s between reads; more than max_connections open connections shed the
    # oldest ones still sending headers. drain_timeout_s: how long SIGTERM waits for requests in flight.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 2048
    drain_timeout_s: float = 10.0
    upstream_max_connections: int = UpstreamLimits.max_connections
    upstream_connect_timeout_s: float = UpstreamLimits.connect_timeout_s
    upstream_read_timeout_s: float = UpstreamLimits.read_timeout_s
    upstream_idle_timeout_s: float = UpstreamLimits.idle_timeout_s
    max_response_bytes: int = UpstreamLimits.max_response_bytes

    def upstream_limits(self) -> UpstreamLimits:
        return UpstreamLimits(self.upstream_max_connections, self.upstream_connect_timeout_s,
                              self.upstream_read_timeout_s, self.upstream_idle_timeout_s, self.max_response_bytes)


@dataclass(frozen=True)
class RouterConfig:
    cooldown_failures: int = 3  # failures within the window that trip a deployment
    cooldown_window_s: float = 60.0
    cooldown_s: float = 30.0
    retry_after_cap_s: float = 10.0  # a longer upstream Retry-After means: move on
    first_token_timeout_s: float = 60.0


RAG_CHUNKING = ("fixed_size", "character", "recursive", "token", "semantic")
_RAG_DEFAULT_DB = "${OMNI_LLM_DATA:-./.omni}/rag.db"


@dataclass(frozen=True)
class RagConfig:
    """The `rag:` section (CONTRACT §10); read by proxy/rag only, on first use."""

    store: Mapping[str, Any] = field(default_factory=dict)  # {type: sqlite, path: ...}
    allowed_paths: tuple[str, ...] = ()  # folders a request's ad-hoc `sources` may read
    embedding_model: str | None = None  # None: the config has no embedding model
    chunking: Mapping[str, Any] = field(default_factory=dict)  # strategy, chunk_size, chunk_overlap, ...
    collections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> sources, overrides


@dataclass(frozen=True)
class MetricsConfig:
    emf: bool = False  # one CloudWatch Embedded Metric Format line per model request on stdout
    namespace: str = "OmniLLM"


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server the gateway may use as a client (CONTRACT §11); only ever from the operator's config."""

    name: str
    transport: str  # stdio | streamable_http | sse | websocket
    command: str = ""  # stdio
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""  # streamable_http, sse, websocket
    headers: Mapping[str, str] = field(default_factory=dict)
    allowed_tools: tuple[str, ...] | None = None  # the operator's ceiling; None = every tool
    timeout_s: float = 30.0  # per tool call
    connect_timeout_s: float = 30.0  # starting/connecting and listing tools (a stdio server may start slowly)
    max_retries: int = 2  # connection attempts beyond the first (tool calls are never retried)
    max_result_bytes: int = 100_000
    max_concurrency: int = 16  # tool calls in flight on this server
    tools_ttl_s: float = 300.0  # how long a tool list is trusted without a list_changed


MCP_TRANSPORTS = ("stdio", "streamable_http", "sse", "websocket")


@dataclass(frozen=True)
class StateConfig:
    """Where keys, spend and the usage log live (CONTRACT §12); see docs/keys.md."""

    database: str = "sqlite:///./.omni/state.db"
    redis_url: str = ""  # set: rate limits, cache, budgets in flight and deployment health are shared
    key_cache_ttl_s: float = 10.0  # how long a key lookup is trusted (a revoke elsewhere shows within this)


@dataclass(frozen=True)
class LimitsConfig:
    rpm: int = 0  # defaults for virtual keys without their own; 0 = unlimited
    tpm: int = 0


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = False
    ttl_s: float = 3600.0
    shared: bool = False  # true: one cache for every key (otherwise each virtual key has its own)
    max_entries: int = 10_000  # bound of the in-memory LRU (without Redis)


_DEFAULT_DATABASE = "sqlite:///${OMNI_LLM_DATA:-./.omni}/state.db"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, tuple[Deployment, ...]]
    strategies: Mapping[str, tuple[str, ...]]
    router: RouterConfig = RouterConfig()
    path: str | None = None
    # Non-default orders: strategy name -> STRATEGY_ORDERS, model name -> MODEL_ROUTINGS (CONTRACT §16).
    orders: Mapping[str, str] = field(default_factory=dict)
    metrics: MetricsConfig = MetricsConfig()
    mcp_servers: Mapping[str, McpServerConfig] = field(default_factory=dict)
    state: StateConfig | None = None  # None: no `state` section (virtual keys still use the default database)
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    rag: RagConfig = RagConfig()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Upstream credentials, to scrub from anything that leaves the process."""
        found = {
            str(value)
            for p in self.providers.values()
            for key, value in p.settings.items()
            if key in PROVIDER_TYPES[p.type].secret_keys and value and len(str(value)) >= 4
        }
        found.update(v for p in self.providers.values() for v in p.headers.values() if len(v) >= 8)
        found.update(v for m in self.mcp_servers.values() for v in m.headers.values() if len(v) >= 8)
        return tuple(sorted(found, key=len, reverse=True))



def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )
