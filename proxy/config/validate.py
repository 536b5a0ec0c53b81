"""The core sections (server, providers, models, strategies, state, limits, cache) and readiness."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from translators import PROVIDER_TYPES

from proxy.config.checks import expand
from proxy.config.extensions import ExtensionSections
from proxy.config.schema import (_DEFAULT_DATABASE, CacheConfig, Config, ConfigError, Deployment,
                                 LimitsConfig, MODEL_MODES, MODEL_ROUTINGS, MetricsConfig, ProviderConfig,
                                 RouterConfig, STRATEGY_ORDERS, ServerConfig, StateConfig,
                                 _CAPABILITY_KEYS, kind)


class Validator(ExtensionSections):
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

    def providers(self, raw: Any) -> dict[str, ProviderConfig]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail("providers", f"expected a mapping, got {kind(raw)}")
            return {}
        return {name: p for name, body in raw.items() if (p := self.provider(str(name), body)) is not None}

    def provider(self, name: str, raw: Any) -> ProviderConfig | None:
        path = f"providers.{name}"
        if "/" in name:
            self.fail(path, "provider names cannot contain '/'")
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping, got {kind(raw)}")
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
                    self.fail(where, f"expected a mapping, got {kind(value)}")
            elif key in spec.keys or key == "base_url":
                if key == "chunk_delay_ms":
                    settings[key] = self.number(value, where)
                elif (key == "base_url" or key in spec.secret_keys) and not isinstance(value, str):
                    self.fail(where, f"expected a string, got {kind(value)}")  # a number here is a mistake
                elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                    settings[key], referenced[key] = expand(str(value), self.env)
                    if key == "base_url" and settings[key]:
                        self.url(settings[key], where)
                else:
                    self.fail(where, f"expected a string, got {kind(value)}")
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
            self.fail("models", f"expected a mapping, got {kind(raw)}")
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
                    self.fail(path, f"expected a list, got {kind(body)}")
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
            self.fail(path, f"expected a mapping, got {kind(raw)}")
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

    def strategies(self, raw: Any, models: Mapping[str, tuple[Deployment, ...]]) -> dict[str, tuple[str, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail("strategies", f"expected a mapping, got {kind(raw)}")
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


def with_catalog_defaults(deployment: Deployment) -> Deployment:
    """Capabilities and prices the entry left out, from the shipped model table (proxy/catalog.py)."""
    from proxy.catalog import lookup

    known = lookup(deployment.model)
    missing = {k: v for k, v in known.items() if getattr(deployment, k, None) is None}
    return dataclasses.replace(deployment, **missing) if missing else deployment


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

