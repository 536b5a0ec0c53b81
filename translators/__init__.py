"""The translator registry: provider `type` -> where its code lives and what it needs.

Pure data, so `import proxy.app` stays free of vendor SDKs: a translator module
(and with it its SDK) is imported on the first request that needs it.
Adding a provider is one row here plus one module; nothing in `proxy/` changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys every provider type accepts (README, Configuration).
COMMON_PROVIDER_KEYS = frozenset({"type", "base_url", "timeout_s", "max_retries", "headers"})


@dataclass(frozen=True)
class ProviderType:
    target: str  # "module:Class"
    extra: str | None  # the pip extra that installs the SDK
    sdk_module: str | None  # imported by the translator; checked before importing it
    keys: frozenset[str] = frozenset()  # provider keys beyond COMMON_PROVIDER_KEYS
    model_keys: frozenset[str] = frozenset()  # model-entry keys beyond the common ones
    # Alternatives: the provider is ready when every key of one group is non-empty.
    credentials: tuple[tuple[str, ...], ...] = ()
    # Extra readiness rule over the expanded settings: a reason, or None when ready.
    ready_check: Callable[[Mapping[str, Any]], str | None] | None = field(default=None, compare=False)
    rerank: bool = False  # can serve `mode: rerank` models (`POST /v1/rerank`, `rag.rerank`)

    @property
    def secret_keys(self) -> frozenset[str]:
        return frozenset(k for k in self.keys if k in _SECRET_KEYS)


_SECRET_KEYS = frozenset({"api_key", "aws_secret_access_key", "aws_session_token"})

_AWS_CHAIN_HINTS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_LAMBDA_FUNCTION_NAME",
)


def _bedrock_ready(settings: Mapping[str, Any]) -> str | None:
    """Explicit keys, or a sign that boto3's credential chain has something to find.

    Checking the chain itself would import boto3 and may call the instance
    metadata service; `credentials: chain` says "trust the chain" (EC2 roles).
    """
    key_id, secret = settings.get("aws_access_key_id"), settings.get("aws_secret_access_key")
    if key_id or secret:
        return None if key_id and secret else "aws_access_key_id and aws_secret_access_key must both be set"
    if settings.get("credentials") == "chain" or settings.get("profile"):
        return None
    if any(os.environ.get(name) for name in _AWS_CHAIN_HINTS):
        return None
    aws_dir = Path(os.environ.get("HOME", "~")).expanduser() / ".aws"
    if (aws_dir / "credentials").exists() or (aws_dir / "config").exists():
        return None
    return "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or credentials: chain)"


_KEYED = frozenset({"api_key"})
_OPENAI_KEYS = frozenset({"api_key", "organization", "project"})

PROVIDER_TYPES: dict[str, ProviderType] = {
    "openai": ProviderType("translators.openai:OpenAIProvider", None, "openai", _OPENAI_KEYS, credentials=(("api_key",),)),
    "openai_compatible": ProviderType(
        "translators.openai:OpenAIProvider", None, "openai", _OPENAI_KEYS, credentials=(("base_url",),)
    ),
    "mock": ProviderType(
        "translators.mock:MockProvider",
        None,
        None,
        frozenset({"response", "chunk_delay_ms"}),
        frozenset({"response", "chunk_delay_ms"}),
        rerank=True,
    ),
    "anthropic": ProviderType(
        "translators.anthropic:AnthropicProvider", "anthropic", "anthropic", _KEYED, frozenset({"max_tokens"}),
        credentials=(("api_key",),),
    ),
    "bedrock": ProviderType(
        "translators.bedrock:BedrockProvider",
        "bedrock",
        "boto3",
        frozenset({"region", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "profile", "credentials"}),
        frozenset({"max_tokens"}),
        credentials=(("region",),),
        ready_check=_bedrock_ready,
        rerank=True,
    ),
    "vertex": ProviderType(
        "translators.google:GoogleProvider",
        "vertex",
        "google.genai",
        frozenset({"api_key", "project", "location", "credentials_file"}),
        credentials=(("api_key",), ("project",)),
    ),
    "gemini": ProviderType("translators.google:GoogleProvider", "vertex", "google.genai", _KEYED, credentials=(("api_key",),)),
    "mistral": ProviderType("translators.mistral:MistralProvider", "mistral", "mistralai", _KEYED, credentials=(("api_key",),)),
    "cohere": ProviderType("translators.cohere:CohereProvider", "cohere", "cohere", _KEYED, credentials=(("api_key",),),
                           rerank=True),
    "groq": ProviderType("translators.groq:GroqProvider", "groq", "groq", _KEYED, credentials=(("api_key",),)),
    # In-process embeddings (WordLlama, weights in its wheel): offline, no keys; the `rag` extra.
    "local": ProviderType("translators.local_embedding:LocalEmbeddingProvider", "rag", "wordllama"),
}


class MissingExtra(Exception):
    """The provider's SDK is not installed; `extra` names the pip extra."""

    def __init__(self, provider_type: str, extra: str | None) -> None:
        hint = f"pip install 'omni-llm[{extra}]'" if extra else "reinstall omni-llm"
        super().__init__(f"the SDK for provider type '{provider_type}' is not installed ({hint})")
        self.extra = extra


def load_provider_class(provider_type: str) -> type:
    """Import the translator for `provider_type` (and so its SDK) on first use."""
    spec = PROVIDER_TYPES[provider_type]
    if spec.sdk_module and not _importable(spec.sdk_module):
        raise MissingExtra(provider_type, spec.extra)
    module_name, _, class_name = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # a partially installed SDK
        raise MissingExtra(provider_type, spec.extra) from exc
    return getattr(module, class_name)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # parent package missing ("google" for "google.genai")
        return False
