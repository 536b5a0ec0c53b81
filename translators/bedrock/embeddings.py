"""OpenAI embedding requests <-> Bedrock `InvokeModel` bodies (pure).

Bedrock has no unified embedding API: `InvokeModel` takes each family's own
JSON body (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed.html).

- Amazon Titan text embeddings take ONE text per call: `{"inputText", "dimensions",
  "normalize"}` (v2; v1 takes only `inputText`, fixed 1536 dimensions) and answer
  `{"embedding": [...], "inputTextTokenCount": n}`.
- Cohere Embed on Bedrock takes a batch (at most 96 texts): `{"texts", "input_type",
  "embedding_types": ["float"]}` (`output_dimension` on embed-v4) and answers
  `{"embeddings": {"float": [[...]]}}` with no token count in the body, so usage comes
  from the `X-Amzn-Bedrock-Input-Token-Count` response header.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest, UpstreamError
from translators.base import JSON
from translators.bedrock.request import bedrock_family

COHERE_BATCH = 96
TOKEN_COUNT_HEADER = "x-amzn-bedrock-input-token-count"


def embedding_inputs(request: JSON) -> list[str]:
    raw = request.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise InvalidRequest("Bedrock embeddings take a string or a list of strings", param="input")
    return inputs


def bedrock_embedding_kind(model_id: str) -> str:
    """"titan-v1", "titan" or "cohere" for the model id; anything else is a 400."""
    family = bedrock_family(model_id)
    if family == "amazon" and "titan-embed-text" in model_id:
        return "titan-v1" if "titan-embed-text-v1" in model_id else "titan"
    if family == "cohere" and "embed" in model_id:
        return "cohere"
    raise InvalidRequest(
        f"embeddings on Bedrock support Amazon Titan text and Cohere Embed models, not {model_id!r}", param="model"
    )


def to_bedrock_embedding_bodies(request: JSON, model_id: str) -> list[JSON]:
    """One InvokeModel body per call: one per text for Titan, batches of 96 for Cohere."""
    inputs = embedding_inputs(request)
    dimensions = request.get("dimensions")
    kind = bedrock_embedding_kind(model_id)
    if kind == "titan-v1":
        if dimensions is not None and dimensions != 1536:
            raise InvalidRequest("amazon.titan-embed-text-v1 has a fixed 1536 dimensions", param="dimensions")
        return [{"inputText": text} for text in inputs]
    if kind == "titan":
        extra = {"dimensions": dimensions} if dimensions is not None else {}
        return [{"inputText": text, **extra, "normalize": True} for text in inputs]
    base: JSON = {"input_type": request.get("input_type") or "search_document", "embedding_types": ["float"]}
    if dimensions is not None:
        base["output_dimension"] = dimensions
    return [{"texts": inputs[i : i + COHERE_BATCH], **base} for i in range(0, len(inputs), COHERE_BATCH)]


def from_bedrock_embedding_body(body: JSON, headers: dict[str, str]) -> tuple[list[list[float]], int]:
    """(vectors, input tokens) of one InvokeModel answer, Titan or Cohere."""
    if "embedding" in body:
        return [body["embedding"]], int(body.get("inputTextTokenCount") or headers.get(TOKEN_COUNT_HEADER) or 0)
    embeddings: Any = body.get("embeddings")
    if isinstance(embeddings, dict):
        embeddings = embeddings.get("float")
    if not isinstance(embeddings, list):
        raise UpstreamError("Bedrock sent an embedding response without embeddings")
    return embeddings, int(headers.get(TOKEN_COUNT_HEADER) or 0)


def from_bedrock_embeddings(answers: list[tuple[JSON, dict[str, str]]]) -> JSON:
    """InvokeModel answers in request order -> an OpenAI embedding list."""
    vectors: list[list[float]] = []
    tokens = 0
    for body, headers in answers:
        batch, used = from_bedrock_embedding_body(body, headers)
        vectors += batch
        tokens += used
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
