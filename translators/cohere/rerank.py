"""Rerank requests <-> Cohere's Rerank v2 (`POST /v2/rerank`, the SDK's `AsyncClientV2.rerank`) (pure).

https://docs.cohere.com/reference/rerank — the request takes `model`, `query`,
`documents` (strings only in v2), `top_n` and `max_tokens_per_doc`; the answer is
`{"id", "results": [{"index", "relevance_score"}], "meta": {"api_version",
"billed_units": {"search_units"}, "tokens"?}}`, already the gateway's internal
shape, so the mapping keeps just those fields (v2 never returns documents: the
gateway adds them from the request when asked).
"""

from __future__ import annotations

from proxy.errors import InvalidRequest
from translators.base import JSON


def to_cohere_rerank_request(request: JSON, model: str) -> JSON:
    """The SDK's `rerank(...)` keyword arguments."""
    documents = request.get("documents")
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise InvalidRequest("Cohere rerank takes a list of strings", param="documents")
    kwargs: JSON = {"model": model, "query": request["query"], "documents": documents}
    for key in ("top_n", "max_tokens_per_doc"):
        if request.get(key) is not None:
            kwargs[key] = request[key]
    return kwargs


def from_cohere_rerank_response(body: JSON) -> JSON:
    results = [{"index": r.get("index"), "relevance_score": r.get("relevance_score")}
               for r in body.get("results") or [] if isinstance(r, dict)]
    answer: JSON = {"results": results}
    if isinstance(body.get("id"), str):
        answer["id"] = body["id"]
    if isinstance(body.get("meta"), dict):
        answer["meta"] = body["meta"]
    return answer
