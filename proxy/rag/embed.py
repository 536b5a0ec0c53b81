"""Texts -> unit vectors through the gateway's own router (any `mode: embedding` model or strategy).

So ingest and query embeddings get the router's retries, fallbacks and
cooldowns like any `/v1/embeddings` call. Inputs go in batches no larger than
the vendor accepts, a few batches at a time; a failed batch fails the whole
call (the caller then writes nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from proxy.config import Deployment
from proxy.errors import ProxyError, UpstreamError
from proxy.routing import resolve_chain
from translators.base import JSON, Provider

if TYPE_CHECKING:
    import numpy as np

    from proxy.app import Gateway

# Inputs per embeddings call, by provider type (the vendors' documented limits, or less).
BATCH_SIZES = {"openai": 256, "openai_compatible": 128, "cohere": 96, "gemini": 100, "vertex": 100, "mistral": 64,
               "bedrock": 1, "local": 256, "mock": 256}
DEFAULT_BATCH = 64
CONCURRENCY = 4

Progress = Callable[[int, int], None]  # (texts embedded so far, texts in all)


class EmbeddingFailed(UpstreamError):
    """The embedding model failed during an ingest or a search (after the router's retries and fallbacks)."""


async def _embed(provider: Provider, request: JSON, deployment: Deployment) -> JSON:
    return await provider.embed(request, deployment)


# Used when the config names no embedding model: the offline local model (translators/local_embedding.py),
# called directly since the config has no provider entry for it.
BUILTIN_MODEL = "local-embedding"


class Embedder:
    def __init__(self, gateway: Gateway, model: str) -> None:
        self.gateway = gateway
        self.model = model
        self.builtin: Provider | None = None
        if model == BUILTIN_MODEL and model not in gateway.config.models and model not in gateway.config.strategies:
            from proxy.config import ProviderConfig
            from proxy.errors import ProviderUnavailable
            from translators import MissingExtra, load_provider_class

            try:
                self.builtin = load_provider_class("local")(ProviderConfig("local", "local", {}))
            except MissingExtra as exc:
                raise ProviderUnavailable(f"the built-in embedding model is unavailable: {exc}") from None
            self.chain: list[Any] = []
            self.batch_size = BATCH_SIZES["local"]
            return
        chain = resolve_chain(gateway.config, {"model": model})
        self.chain = chain
        provider_type = gateway.config.providers[chain[0][1][0].provider].type
        self.batch_size = BATCH_SIZES.get(provider_type, DEFAULT_BATCH)

    async def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """(len(texts), dim) float32, each row unit-length."""
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        limit = asyncio.Semaphore(CONCURRENCY)
        batches = [list(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        done = 0

        async def one(batch: list[str]) -> list[list[float]]:
            nonlocal done
            async with limit:
                vectors = await self._call(batch)
            done += len(batch)
            if progress is not None:
                progress(done, len(texts))
            return vectors

        tasks = [asyncio.ensure_future(one(b)) for b in batches]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed batch fails the call: stop spending on the others
                task.cancel()
            raise
        matrix = np.asarray([v for batch in results for v in batch], dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12)

    async def _call(self, batch: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.model, "input": batch}
        if self.builtin is not None:
            deployment = Deployment(name=self.model, provider="local", model="l2_supercat", mode="embedding")
            result = await self.builtin.embed(body, deployment)
            return [item["embedding"] for item in sorted(result["data"], key=lambda item: item["index"])]
        try:
            served = await self.gateway.router.run(self.chain, body, "embedding", _embed)
        except ProxyError as exc:  # keep its status and code (503 provider_unavailable, 429...), say what failed
            exc.message = f"embedding with '{self.model}' failed: {exc.message}"
            raise
        data = sorted(served.result.get("data") or [], key=lambda item: item.get("index", 0))
        if len(data) != len(batch) or not all(isinstance(item.get("embedding"), list) for item in data):
            raise EmbeddingFailed(f"embedding with '{self.model}' returned {len(data)} vectors for {len(batch)} inputs",
                                  retryable=False)
        return [item["embedding"] for item in data]
