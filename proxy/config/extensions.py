"""The extension sections: `rag` (CONTRACT §10) and `mcp_servers` (§11)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.config.checks import Checks, expand
from proxy.config.schema import (MCP_TRANSPORTS, RAG_CHUNKING, _RAG_DEFAULT_DB, Deployment, McpServerConfig, RagConfig,
                                 kind)


class ExtensionSections(Checks):
    """The sections of the extensions, checked like the core ones (validate.py `Validator` is both)."""

    # -- rag (CONTRACT §10) ----------------------------------------------------
    def rag(self, raw: Any, models: Mapping[str, tuple[Deployment, ...]], strategies: Mapping[str, Any]) -> RagConfig:
        # Without one, the built-in offline model (proxy/rag/embed.py BUILTIN_MODEL) embeds.
        default_model = next((m for m in ("local-embedding", "demo-embedding") if m in models), "local-embedding")
        store = {"type": "sqlite", "path": expand(_RAG_DEFAULT_DB, self.env)[0]}
        if raw is None:
            return RagConfig(store=store, embedding_model=default_model)
        if not isinstance(raw, dict):
            self.fail("rag", f"expected a mapping, got {kind(raw)}")
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
            self.fail("rag.collections", f"expected a mapping, got {kind(declared)}")
            declared = {}
        for name, body in declared.items():
            path = f"rag.collections.{name}"
            if not isinstance(body, dict):
                self.fail(path, f"expected a mapping, got {kind(body)}")
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
            self.fail("rag.store", f"expected a mapping, got {kind(raw)}")
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
            self.fail(path, f"expected a mapping, got {kind(raw)}")
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


    def mcp_servers(self, raw: Any) -> dict[str, McpServerConfig]:
        return _mcp_servers(self, raw)


_MCP_KEYS = {
    "stdio": {"command", "args", "env", "cwd"},
    "streamable_http": {"url", "headers"},
    "sse": {"url", "headers"},
    "websocket": {"url", "headers"},
}
_MCP_COMMON = {"transport", "allowed_tools", "timeout_s", "connect_timeout_s", "max_retries", "max_result_bytes", "max_concurrency",
               "tools_ttl_s"}


def _mcp_servers(v: Checks, raw: Any) -> dict[str, McpServerConfig]:
    """The `mcp_servers` section: transport-specific keys checked, `${VAR}` expanded (headers carry secrets)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        v.fail("mcp_servers", f"expected a mapping, got {kind(raw)}")
        return {}
    out: dict[str, McpServerConfig] = {}
    for name, body in raw.items():
        path = f"mcp_servers.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) or "__" in str(name):
            v.fail(path, "server names use letters, digits, '_' and '-' (no '__': it separates SERVER__TOOL)")
        if not isinstance(body, dict):
            v.fail(path, f"expected a mapping, got {kind(body)}")
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
                    v.fail(where, f"expected a mapping, got {kind(value)}")
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

