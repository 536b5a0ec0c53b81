"""The `local` provider: embeddings computed in-process, offline, with no keys and no torch.

It runs WordLlama (https://github.com/dleemiller/WordLlama), a static
token-embedding model whose default weights (`l2_supercat`, 256 dimensions,
16 MB) and tokenizer ship inside the `wordllama` wheel. WordLlama looks for
the tokenizer under `<package>/tokenizer/` but the wheel keeps it under
`<package>/tokenizers/`, so the package directory is passed as its cache
directory (where both are found) and downloads are disabled: nothing is ever
fetched at run time. Vectors are mean-pooled and returned unit-length; the
model is Matryoshka-trained, so `dimensions` (64, 128, 256) truncates it.

The upstream `model` names a WordLlama config (`l2_supercat`, the one that
ships). Installed by the `rag` extra.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from proxy.config import Deployment, ProviderConfig
from proxy.errors import InvalidRequest, ProxyError
from translators.base import EMBEDDINGS, JSON

DEFAULT_MODEL = "l2_supercat"
FULL_DIMENSIONS = 256


def load_wordllama(model: str) -> Any:
    """A WordLlama model from the files in its wheel (never a download)."""
    import wordllama
    from wordllama import WordLlama

    try:
        return WordLlama.load(config=model, cache_dir=Path(wordllama.__file__).parent, dim=FULL_DIMENSIONS,
                              disable_download=True)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise InvalidRequest(f"local embedding model {model!r} is not available offline: {exc}", param="model") from None


class LocalEmbeddingProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({EMBEDDINGS})
    supported_params: ClassVar[frozenset[str] | None] = frozenset()

    def __init__(self, config: ProviderConfig) -> None:
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _model(self, name: str) -> Any:
        with self._lock:  # loading takes ~0.4 s: once per model, not once per concurrent caller
            if name not in self._models:
                self._models[name] = load_wordllama(name)
            return self._models[name]

    def _embed(self, name: str, texts: list[str], dimensions: int | None) -> tuple[list[list[float]], int]:
        import numpy as np

        model = self._model(name)
        vectors = model.embed(texts)[:, :dimensions]  # Matryoshka: a prefix is itself an embedding
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        tokens = sum(len(encoding.ids) for encoding in model.tokenize(texts)) if texts else 0
        return vectors.tolist(), tokens

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        inputs = request["input"]
        texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs]
        dimensions = request.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or not 1 <= dimensions <= FULL_DIMENSIONS):
            raise InvalidRequest(f"dimensions must be an integer from 1 to {FULL_DIMENSIONS}", param="dimensions")
        # CPU-bound (tokenizer + numpy): off the event loop so other requests keep flowing.
        vectors, tokens = await asyncio.to_thread(self._embed, deployment.model or DEFAULT_MODEL, texts, dimensions)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        raise InvalidRequest(f"'{deployment.name}' is an embedding model; it cannot chat", param="model")

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        raise InvalidRequest(f"'{deployment.name}' is an embedding model; it cannot chat", param="model")
        yield {}  # pragma: no cover - makes this an async generator

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return None

    async def aclose(self) -> None:
        self._models.clear()
