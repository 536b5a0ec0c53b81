"""`models.yaml`: load, expand `${VAR}` / `${VAR:-default}`, validate, decide readiness.

Validation reports every problem at once, each with its YAML path
(`models.gpt-4o.provider: unknown provider 'opnai'`), so `omni-llm check`
can list them all. The result is plain frozen data the router reads.

- schema.py: the dataclasses and constants;
- checks.py: `${VAR}` expansion and the scalar and flat-section checks;
- validate.py: the core sections and readiness; extensions.py: `rag` and `mcp_servers`;
- load.py: finding, reading and parsing the file.
"""

from proxy.config.checks import expand
from proxy.config.load import (default_config_path, duplicate_keys, load_config, parse_config, resolve_config_path,
                               state_of)
from proxy.config.schema import (MCP_TRANSPORTS, MODEL_MODES, MODEL_ROUTINGS, RAG_CHUNKING, STRATEGY_ORDERS, CacheConfig,
                                 Config, ConfigError, Deployment, LimitsConfig, McpServerConfig, MetricsConfig,
                                 ProviderConfig, RagConfig, RouterConfig, ServerConfig, StateConfig, UpstreamLimits)
from proxy.config.validate import with_catalog_defaults

__all__ = [
    "MCP_TRANSPORTS", "MODEL_MODES", "MODEL_ROUTINGS", "RAG_CHUNKING", "STRATEGY_ORDERS", "CacheConfig", "Config",
    "ConfigError", "Deployment", "LimitsConfig", "McpServerConfig", "MetricsConfig", "ProviderConfig", "RagConfig",
    "RouterConfig", "ServerConfig", "StateConfig", "UpstreamLimits", "default_config_path", "duplicate_keys", "expand",
    "load_config", "parse_config", "resolve_config_path", "state_of", "with_catalog_defaults",
]
