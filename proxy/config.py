"""`models.yaml`: load, expand `${VAR}` / `${VAR:-default}`, validate, decide readiness.

Validation reports every problem at once, each with its YAML path
(`models.gpt-4o.provider: unknown provider 'opnai'`), so `omni-llm check`
can list them all. The result is plain frozen data the router reads.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from translators import PROVIDER_TYPES

STRATEGY_ORDERS = ("ordered", "latency", "cost", "least_busy")  # CONTRACT §16
MODEL_ROUTINGS = ("round_robin", *STRATEGY_ORDERS)
MODEL_MODES = ("chat", "embedding", "rerank")  # rerank: POST /v1/rerank and `rag.rerank` (CONTRACT §10)
_CAPABILITY_KEYS = ("context_window", "vision", "tools")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

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


def state_of(config: Config) -> StateConfig:
    """The `state` section, or its default (the database under `$OMNI_LLM_DATA` or ./.omni)."""
    return config.state or StateConfig(database=expand(_DEFAULT_DATABASE, os.environ)[0])


def default_config_path() -> Path:
    """The `models.yaml` shipped with the package (or the checkout's, in development)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "models.yaml", here.parent / "models.yaml"):
        if candidate.exists():
            return candidate
    return here / "models.yaml"


def resolve_config_path(explicit: str | None = None) -> Path:
    """`--config`, else `$OMNI_LLM_CONFIG`, else `./models.yaml`, else the shipped default."""
    if explicit:
        return Path(explicit)
    if os.environ.get("OMNI_LLM_CONFIG"):
        return Path(os.environ["OMNI_LLM_CONFIG"])
    if Path("models.yaml").exists():
        return Path("models.yaml")
    return default_config_path()


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    path = resolve_config_path(str(path) if path else None)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from exc
    config = parse_config(text, env if env is not None else os.environ)
    return dataclasses.replace(config, path=str(path))


def parse_config(text: str, env: Mapping[str, str]) -> Config:
    try:
        duplicates = duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid YAML: {exc}"]) from exc
    if duplicates:  # YAML lets the last one win silently: a typo'd copy would hide the first
        raise ConfigError(duplicates)
    return _Validator(env).config(raw if raw is not None else {})


def duplicate_keys(node: yaml.Node | None, path: str = "") -> list[str]:
    """Every mapping key that appears twice in the same mapping, with its YAML path and line."""
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            where = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in seen:
                found.append(f"{where}: duplicate key (line {line}; first on line {seen[key]})")
            else:
                seen[key] = line
            found += duplicate_keys(value_node, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += duplicate_keys(item, f"{path}[{i}]")
    return found


def expand(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}` and `${VAR:-default}`; also return the variable names referenced."""
    names: list[str] = []

    def sub(match: re.Match[str]) -> str:
        names.append(match.group(1))
        found = env.get(match.group(1), "")
        return found if found else (match.group(2) or "")

    return _VAR.sub(sub, value), names


class _Validator:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.orders: dict[str, str] = {}

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def config(self, raw: Any) -> Config:
        if not isinstance(raw, dict):
            raise ConfigError(["(root): expected a mapping with server, providers, models, strategies"])
        for key in raw.keys() - {"server", "providers", "models", "strategies", "router", "metrics", "mcp_servers",
                                     "state", "limits", "cache", "rag"}:
            self.fail(str(key), "unknown key")
        server = ServerConfig(**self.section(raw.get("server"), "server", ServerConfig))
        router = RouterConfig(**self.section(raw.get("router"), "router", RouterConfig))
        metrics = MetricsConfig(**self.section(raw.get("metrics"), "metrics", MetricsConfig))
        providers = self.providers(raw.get("providers"))
        for key in ("upstream_max_connections", "upstream_connect_timeout_s", "upstream_read_timeout_s",
                    "max_response_bytes"):
            if getattr(server, key) <= 0:
                self.fail(f"server.{key}", "must be > 0")
        limits = server.upstream_limits()
        providers = {name: dataclasses.replace(p, limits=limits) for name, p in providers.items()}
        models = self.models(raw.get("models"), providers)
        strategies = self.strategies(raw.get("strategies"), models)
        mcp_servers = self.mcp_servers(raw.get("mcp_servers"))
        state = self.state(raw)
        limits = LimitsConfig(**self.section(raw.get("limits"), "limits", LimitsConfig))
        cache = CacheConfig(**self.section(raw.get("cache"), "cache", CacheConfig))
        rag = self.rag(raw.get("rag"), models, strategies)
        if self.problems:
            raise ConfigError(self.problems)
        return Config(server, providers, models, strategies, router, orders=self.orders, metrics=metrics,
                      mcp_servers=mcp_servers, state=state, limits=limits, cache=cache, rag=rag)

    def state(self, raw: dict[str, Any]) -> StateConfig | None:
        fields = self.section(raw.get("state"), "state", StateConfig)
        database = fields.get("database") or expand(_DEFAULT_DATABASE, self.env)[0]
        if not database.startswith(("sqlite://", "postgresql://", "postgres://")):
            self.fail("state.database", f"expected sqlite:///PATH or postgresql://..., got {database!r}")
        for key in ("redis_url",):
            if fields.get(key) and not fields[key].startswith(("redis://", "rediss://", "unix://")):
                self.fail(f"state.{key}", f"expected redis://host:port[/db], got {fields[key]!r}")
        return StateConfig(**{**fields, "database": database}) if "state" in raw else None

    # -- scalar helpers ------------------------------------------------------
    def string(self, value: Any, path: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(path, f"expected a string, got {_kind(value)}")
            return None
        return expand(str(value), self.env)[0]

    def number(self, value: Any, path: str, *, integer: bool = False, minimum: float = 0) -> float | None:
        if isinstance(value, str):
            expanded = expand(value, self.env)[0]
            try:
                value = int(expanded) if integer else float(expanded)
            except ValueError:
                self.fail(path, f"expected a number, got {value!r}")
                return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.fail(path, f"expected {'an integer' if integer else 'a number'}, got {_kind(value)}")
            return None
        if value < minimum:
            self.fail(path, f"must be >= {minimum}")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if isinstance(value, str):
            value = {"true": True, "false": False}.get(expand(value, self.env)[0].strip().lower(), value)
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {_kind(value)}")
            return None
        return value

    def strings(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list, got {_kind(value)}")
            return []
        items = [self.string(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v in items if v is not None]

    def url(self, value: str, path: str) -> None:
        """An upstream base URL: http(s), a host, nothing that would fail only at request time."""
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            self.fail(path, f"not a valid URL ({exc}): {value!r}")
            return
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(path, f"expected an http:// or https:// URL with a host, got {value!r}")
        elif _CONTROL.search(value) or " " in value:
            self.fail(path, f"URL contains spaces or control characters: {value!r}")

    # -- sections ------------------------------------------------------------
    def section(self, raw: Any, path: str, cls: type) -> dict[str, Any]:
        """A flat section whose keys, types and defaults are those of dataclass `cls`."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping, got {_kind(raw)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"{path}.{key}"
            default = defaults.get(key)
            if key not in defaults:
                self.fail(where, "unknown key")
            elif isinstance(default, tuple):
                items = self.strings(value, where)
                out[key] = tuple(v for v in items if v)  # "" from an unset ${VAR:-} means "none"
            elif isinstance(default, bool):
                out[key] = self.boolean(value, where)
            elif isinstance(default, (int, float)):
                out[key] = self.number(value, where, integer=isinstance(default, int))
            elif isinstance(default, str):
                out[key] = self.string(value, where)
        return {k: v for k, v in out.items() if v is not None}

    def providers(self, raw: Any) -> dict[str, ProviderConfig]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail("providers", f"expected a mapping, got {_kind(raw)}")
            return {}
        return {name: p for name, body in raw.items() if (p := self.provider(str(name), body)) is not None}

    def provider(self, name: str, raw: Any) -> ProviderConfig | None:
        path = f"providers.{name}"
        if "/" in name:
            self.fail(path, "provider names cannot contain '/'")
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping, got {_kind(raw)}")
            return None
        ptype = raw.get("type")
        spec = PROVIDER_TYPES.get(ptype) if isinstance(ptype, str) else None
        if spec is None:
            self.fail(f"{path}.type", f"unknown provider type {ptype!r} (one of: {', '.join(PROVIDER_TYPES)})")
            return None
        settings: dict[str, Any] = {}
        referenced: dict[str, list[str]] = {}
        timeout_s, max_retries, headers = None, 2, {}
        for key, value in raw.items():
            where = f"{path}.{key}"
            if key == "type":
                continue
            if key == "timeout_s":
                timeout_s = self.number(value, where)
            elif key == "max_retries":
                max_retries = self.number(value, where, integer=True)
                max_retries = 2 if max_retries is None else int(max_retries)
            elif key == "headers":
                if isinstance(value, dict):
                    headers = {str(k): s for k, v in value.items() if (s := self.string(v, f"{where}.{k}")) is not None}
                else:
                    self.fail(where, f"expected a mapping, got {_kind(value)}")
            elif key in spec.keys or key == "base_url":
                if key == "chunk_delay_ms":
                    settings[key] = self.number(value, where)
                elif (key == "base_url" or key in spec.secret_keys) and not isinstance(value, str):
                    self.fail(where, f"expected a string, got {_kind(value)}")  # a number here is a mistake
                elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                    settings[key], referenced[key] = expand(str(value), self.env)
                    if key == "base_url" and settings[key]:
                        self.url(settings[key], where)
                else:
                    self.fail(where, f"expected a string, got {_kind(value)}")
            else:
                self.fail(where, f"unknown key for provider type '{ptype}'")
        not_ready = _readiness(settings, referenced, spec.credentials)
        if not_ready is None and spec.ready_check is not None:
            not_ready = spec.ready_check(settings)
        return ProviderConfig(name, ptype, settings, timeout_s, max_retries, headers, not_ready)

    def models(self, raw: Any, providers: Mapping[str, ProviderConfig]) -> dict[str, tuple[Deployment, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail("models", f"expected a mapping, got {_kind(raw)}")
            return {}
        out: dict[str, tuple[Deployment, ...]] = {}
        for name, body in raw.items():
            path = f"models.{name}"
            inherited: dict[str, Any] = {}
            if isinstance(body, dict) and "deployments" in body:  # {routing, deployments, capabilities}
                for key in body.keys() - {"routing", "deployments", *_CAPABILITY_KEYS}:
                    self.fail(f"{path}.{key}", "unknown key (with `deployments`, per-deployment keys go in each deployment)")
                routing = body.get("routing", "round_robin")
                if routing not in MODEL_ROUTINGS:
                    self.fail(f"{path}.routing", f"expected one of {', '.join(MODEL_ROUTINGS)}, got {routing!r}")
                elif routing != "round_robin":
                    self.orders[str(name)] = routing
                inherited = {k: body[k] for k in _CAPABILITY_KEYS if k in body}
                body = body["deployments"]
                path = f"{path}.deployments"
                if not isinstance(body, list):
                    self.fail(path, f"expected a list, got {_kind(body)}")
                    continue
            entries = body if isinstance(body, list) else [body]
            if isinstance(body, list) and not body:
                self.fail(path, "a deployment list needs at least one deployment")
            where = [f"{path}[{i}]" for i in range(len(entries))] if isinstance(body, list) else [path]
            entries = [{**inherited, **e} if isinstance(e, dict) else e for e in entries]
            deployments = [self.deployment(str(name), e, w, providers) for e, w in zip(entries, where)]
            if all(d is not None for d in deployments) and deployments:
                out[str(name)] = tuple(d for d in deployments if d is not None)
        return out

    def deployment(
        self, name: str, raw: Any, path: str, providers: Mapping[str, ProviderConfig]
    ) -> Deployment | None:
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping, got {_kind(raw)}")
            return None
        provider_name = raw.get("provider")
        provider = providers.get(provider_name) if isinstance(provider_name, str) else None
        if provider_name is None:
            self.fail(f"{path}.provider", "required")
        elif provider is None:
            self.fail(f"{path}.provider", f"unknown provider {provider_name!r}")
        spec = PROVIDER_TYPES[provider.type] if provider else None
        fields: dict[str, Any] = {"options": {}}
        ok = provider is not None
        for key, value in raw.items():
            where = f"{path}.{key}"
            if key == "provider":
                continue
            if key in ("model", "mode"):
                fields[key] = self.string(value, where)
                if key == "mode" and fields[key] not in MODEL_MODES:
                    self.fail(where, f"expected chat, embedding or rerank, got {value!r}")
                elif key == "mode" and fields[key] == "rerank" and spec is not None and not spec.rerank:
                    rerankers = ", ".join(t for t, s in PROVIDER_TYPES.items() if s.rerank)
                    self.fail(where, f"provider type '{provider.type}' cannot serve rerank models "  # type: ignore[union-attr]
                                     f"(rerank works with: {rerankers})")
            elif key in ("input_cost_per_mtok", "output_cost_per_mtok", "weight", "timeout_s"):
                fields[key] = self.number(value, where)
            elif key == "context_window":
                fields[key] = self.number(value, where, integer=True, minimum=1)
            elif key in ("vision", "tools"):
                fields[key] = self.boolean(value, where)
            elif spec is not None and key in spec.model_keys:
                fields["options"][key] = self.number(value, where) if key in ("chunk_delay_ms", "max_tokens") else (
                    self.string(value, where)
                )
            elif provider is not None:  # with an unknown provider, its own keys cannot be judged
                self.fail(where, f"unknown key for provider type '{provider.type}'")
        if "model" not in fields:
            if provider is not None and provider.type == "mock":
                fields["model"] = name
            else:
                self.fail(f"{path}.model", "required")
                ok = False
        if not ok or any(fields.get(k) is None for k in ("model",)) or fields.get("mode", "chat") is None:
            return None
        fields = {k: v for k, v in fields.items() if v is not None}
        return with_catalog_defaults(Deployment(name=name, provider=str(provider_name), **fields))

    def mcp_servers(self, raw: Any) -> dict[str, McpServerConfig]:
        return _mcp_servers(self, raw)

    def strategies(self, raw: Any, models: Mapping[str, tuple[Deployment, ...]]) -> dict[str, tuple[str, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail("strategies", f"expected a mapping, got {_kind(raw)}")
            return {}
        out: dict[str, tuple[str, ...]] = {}
        for name, members in raw.items():
            path = f"strategies.{name}"
            if name in models:
                self.fail(path, f"'{name}' is already a model name")
            if isinstance(members, dict):  # {order, members}
                for key in members.keys() - {"order", "members"}:
                    self.fail(f"{path}.{key}", "unknown key (expected order and members)")
                order = members.get("order", "ordered")
                if order not in STRATEGY_ORDERS:
                    self.fail(f"{path}.order", f"expected one of {', '.join(STRATEGY_ORDERS)}, got {order!r}")
                elif order != "ordered":
                    self.orders[str(name)] = order
                members = members.get("members")
                path = f"{path}.members"
            names = self.strings(members, path)
            if isinstance(members, list) and not members:
                self.fail(path, "a strategy needs at least one model")
            for i, member in enumerate(names):
                if member not in models:
                    self.fail(f"{path}[{i}]", f"unknown model {member!r}")
            out[str(name)] = tuple(names)
        return out

    # -- rag (CONTRACT §10) ----------------------------------------------------
    def rag(self, raw: Any, models: Mapping[str, tuple[Deployment, ...]], strategies: Mapping[str, Any]) -> RagConfig:
        # Without one, the built-in offline model (proxy/rag/embed.py BUILTIN_MODEL) embeds.
        default_model = next((m for m in ("local-embedding", "demo-embedding") if m in models), "local-embedding")
        store = {"type": "sqlite", "path": expand(_RAG_DEFAULT_DB, self.env)[0]}
        if raw is None:
            return RagConfig(store=store, embedding_model=default_model)
        if not isinstance(raw, dict):
            self.fail("rag", f"expected a mapping, got {_kind(raw)}")
            return RagConfig(store=store, embedding_model=default_model)
        for key in raw.keys() - {"store", "allowed_paths", "embedding_model", "chunking", "collections"}:
            self.fail(f"rag.{key}", "unknown key")
        if raw.get("store") is not None:
            store = self.rag_store(raw["store"])
        allowed = tuple(p for p in self.strings(raw.get("allowed_paths") or [], "rag.allowed_paths") if p)
        model = self.rag_model(raw.get("embedding_model"), "rag.embedding_model", models, strategies) or default_model
        chunking = self.rag_chunking(raw.get("chunking"), "rag.chunking")
        collections: dict[str, Mapping[str, Any]] = {}
        declared = raw.get("collections") or {}
        if not isinstance(declared, dict):
            self.fail("rag.collections", f"expected a mapping, got {_kind(declared)}")
            declared = {}
        for name, body in declared.items():
            path = f"rag.collections.{name}"
            if not isinstance(body, dict):
                self.fail(path, f"expected a mapping, got {_kind(body)}")
                continue
            for key in body.keys() - {"sources", "embedding_model", "chunking"}:
                self.fail(f"{path}.{key}", "unknown key")
            collections[str(name)] = {
                "sources": tuple(self.strings(body.get("sources") or [], f"{path}.sources")),
                "embedding_model": self.rag_model(body.get("embedding_model"), f"{path}.embedding_model", models,
                                                  strategies) or model,
                "chunking": {**chunking, **self.rag_chunking(body.get("chunking"), f"{path}.chunking")},
            }
        return RagConfig(store, allowed, model, chunking, collections)

    def rag_store(self, raw: Any) -> dict[str, Any]:
        from proxy.rag.store import STORES  # a table of names: imports no store client

        if not isinstance(raw, dict):
            self.fail("rag.store", f"expected a mapping, got {_kind(raw)}")
            return {}
        kind = raw.get("type")
        spec = STORES.get(kind) if isinstance(kind, str) else None
        if spec is None:
            self.fail("rag.store.type", f"unsupported store type {kind!r} (available: {', '.join(STORES)})")
            return {}
        out: dict[str, Any] = {"type": kind}
        for key, value in raw.items():
            if key == "type":
                continue
            path = f"rag.store.{key}"
            if key in spec.flags:
                out[key] = self.boolean(value, path)
            elif key in spec.required or key in spec.optional:
                out[key] = self.string(value, path)
            else:
                known = ", ".join((*spec.required, *spec.optional, *spec.flags))
                self.fail(path, f"unknown key for store type '{kind}' (known: {known})")
        for key in spec.required:
            if not out.get(key):
                self.fail(f"rag.store.{key}", f"store type '{kind}' needs `{key}`")
        if spec.one_of and sum(1 for key in spec.one_of if out.get(key)) != 1:
            self.fail(f"rag.store.{spec.one_of[0]}", f"store type '{kind}' needs exactly one of "
                                                    f"{' or '.join('`' + k + '`' for k in spec.one_of)}")
        if kind == "sqlite":
            out["path"] = out.get("path") or expand(_RAG_DEFAULT_DB, self.env)[0]
        return out

    def rag_model(self, raw: Any, path: str, models: Mapping[str, tuple[Deployment, ...]],
                  strategies: Mapping[str, Any]) -> str | None:
        if raw is None:
            return None
        name = self.string(raw, path)
        if name is None:
            return None
        if name in strategies:
            return name
        if name not in models:
            self.fail(path, f"unknown model {name!r}")
        elif models[name][0].mode != "embedding":
            self.fail(path, f"model {name!r} is not a `mode: embedding` model")
        return name

    def rag_chunking(self, raw: Any, path: str) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping, got {_kind(raw)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"{path}.{key}"
            if key == "strategy":
                if value not in RAG_CHUNKING:
                    self.fail(where, f"expected one of {', '.join(RAG_CHUNKING)}, got {value!r}")
                else:
                    out[key] = value
            elif key in ("chunk_size", "chunk_overlap"):
                number = self.number(value, where, integer=True, minimum=1 if key == "chunk_size" else 0)
                if number is not None:
                    out[key] = int(number)
            elif key == "separators":
                out[key] = tuple(self.strings(value, where))
            elif key == "encoding":
                out[key] = self.string(value, where)
            elif key == "breakpoint_percentile":
                number = self.number(value, where)
                if number is not None and number > 100:
                    self.fail(where, "must be <= 100")
                elif number is not None:
                    out[key] = float(number)
            else:
                self.fail(where, "unknown key")
        if out.get("chunk_overlap", 0) >= out.get("chunk_size", 1 << 30):
            self.fail(f"{path}.chunk_overlap", "must be smaller than chunk_size")
        return out


def with_catalog_defaults(deployment: Deployment) -> Deployment:
    """Capabilities and prices the entry left out, from the shipped model table (proxy/catalog.py)."""
    from proxy.catalog import lookup

    known = lookup(deployment.model)
    missing = {k: v for k, v in known.items() if getattr(deployment, k, None) is None}
    return dataclasses.replace(deployment, **missing) if missing else deployment
_MCP_KEYS = {
    "stdio": {"command", "args", "env", "cwd"},
    "streamable_http": {"url", "headers"},
    "sse": {"url", "headers"},
    "websocket": {"url", "headers"},
}
_MCP_COMMON = {"transport", "allowed_tools", "timeout_s", "connect_timeout_s", "max_retries", "max_result_bytes", "max_concurrency",
               "tools_ttl_s"}


def _mcp_servers(v: _Validator, raw: Any) -> dict[str, McpServerConfig]:
    """The `mcp_servers` section: transport-specific keys checked, `${VAR}` expanded (headers carry secrets)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        v.fail("mcp_servers", f"expected a mapping, got {_kind(raw)}")
        return {}
    out: dict[str, McpServerConfig] = {}
    for name, body in raw.items():
        path = f"mcp_servers.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) or "__" in str(name):
            v.fail(path, "server names use letters, digits, '_' and '-' (no '__': it separates SERVER__TOOL)")
        if not isinstance(body, dict):
            v.fail(path, f"expected a mapping, got {_kind(body)}")
            continue
        transport = body.get("transport")
        if transport not in _MCP_KEYS:
            v.fail(f"{path}.transport", f"expected one of {', '.join(MCP_TRANSPORTS)}, got {transport!r}")
            continue
        fields: dict[str, Any] = {}
        for key, value in body.items():
            where = f"{path}.{key}"
            if key == "transport":
                continue
            if key not in _MCP_KEYS[transport] | _MCP_COMMON:
                v.fail(where, f"unknown key for transport '{transport}'")
            elif key in ("command", "url", "cwd"):
                fields[key] = v.string(value, where)
            elif key in ("args", "allowed_tools"):
                fields[key] = tuple(v.strings(value, where))
            elif key in ("env", "headers"):
                if isinstance(value, dict):
                    fields[key] = {str(k): s for k, x in value.items() if (s := v.string(x, f"{where}.{k}")) is not None}
                else:
                    v.fail(where, f"expected a mapping, got {_kind(value)}")
            elif key in ("timeout_s", "connect_timeout_s", "tools_ttl_s"):
                fields[key] = v.number(value, where, minimum=0.001)
            else:
                fields[key] = v.number(value, where, integer=True, minimum=0 if key == "max_retries" else 1)
        for needed in ("command",) if transport == "stdio" else ("url",):
            if not fields.get(needed):
                v.fail(f"{path}.{needed}", "required")
        url = fields.get("url") or ""
        schemes = ("ws://", "wss://") if transport == "websocket" else ("http://", "https://")
        if url and not url.startswith(schemes):
            v.fail(f"{path}.url", f"expected a {' or '.join(schemes)} URL")
        out[str(name)] = McpServerConfig(str(name), str(transport), **{k: x for k, x in fields.items() if x is not None})
    return out


def _readiness(
    settings: Mapping[str, Any], referenced: Mapping[str, list[str]], groups: tuple[tuple[str, ...], ...]
) -> str | None:
    if not groups or any(all(settings.get(k) for k in group) for group in groups):
        return None
    missing = []
    for group in groups:
        for key in group:
            if not settings.get(key):
                names = referenced.get(key) or []
                missing.append(f"{key} (set {' or '.join(names)})" if names else key)
    return "missing " + " or ".join(missing)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )
