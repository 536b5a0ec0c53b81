"""`POST /v1/rerank` (Cohere-compatible) and the rerank call `rag.rerank` makes (CONTRACT §10).

    {"model": "demo-rerank", "query": "...", "documents": ["...", {"text": "..."}], "top_n": 3,
     "return_documents": false}
    -> {"id", "model", "results": [{"index", "relevance_score", "document": {"text"}?}], "meta", "usage"}

Documents are strings or objects with `text` (Cohere's v1 API took both; v2 takes
strings), at most MAX_DOCUMENTS of them (Cohere's own advice and the Bedrock
Rerank API's hard limit). Providers get plain strings and answer in Cohere's v2
shape (`results` of `index` and `relevance_score`); the gateway checks the indices,
orders the results by relevance, applies `top_n` and adds the documents, so every
vendor answers the same. The call goes through the router (retries, fallbacks,
strategies of rerank models) and the keys gate (model allow-list, limits, spend)
like an embeddings call. Served at `/v1/rerank`, `/rerank` and, for the Cohere v2
SDK pointed at the gateway, `/v2/rerank`. This module is imported on first use.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.keys.tokens import count_text
from proxy.routing import Link, resolve_chain, resolve_model
from proxy.schemas import parse_json_object
from translators.base import JSON

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from proxy.app import Endpoint, Gateway
    from proxy.config import Config, Deployment
    from proxy.router import Served
    from translators.base import Provider

MAX_DOCUMENTS = 1000
DOCUMENTS_PER_SEARCH_UNIT = 100  # how Cohere and Bedrock bill: one search unit per query and 100 documents


@dataclass(frozen=True)
class RerankRequest:
    model: str
    query: str
    documents: tuple[str, ...]
    top_n: int  # already clamped to len(documents)
    return_documents: bool


def parse_rerank(body: JSON) -> RerankRequest:
    """Validate a `/v1/rerank` body; every failure names its field in `param`."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required: the name of a `mode: rerank` model", param="model")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest("'query' is required and must be a non-empty string", param="query")
    raw = body.get("documents")
    if not isinstance(raw, list):
        raise InvalidRequest("'documents' is required: a list of strings or of objects with 'text'",
                             param="documents")
    if not raw:
        raise InvalidRequest("'documents' must not be empty", param="documents")
    if len(raw) > MAX_DOCUMENTS:
        raise InvalidRequest(f"'documents' holds {len(raw)} items; at most {MAX_DOCUMENTS} per request",
                             param="documents")
    documents = tuple(_document_text(item, i) for i, item in enumerate(raw))
    top_n = body.get("top_n")
    if top_n is None:
        top_n = len(documents)
    elif isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise InvalidRequest("'top_n' must be an integer >= 1", param="top_n")
    return_documents = body.get("return_documents", False)
    if return_documents is None:
        return_documents = False
    if not isinstance(return_documents, bool):
        raise InvalidRequest("'return_documents' must be true or false", param="return_documents")
    per_doc = body.get("max_tokens_per_doc")
    if per_doc is not None and (isinstance(per_doc, bool) or not isinstance(per_doc, int) or per_doc < 1):
        raise InvalidRequest("'max_tokens_per_doc' must be an integer >= 1", param="max_tokens_per_doc")
    return RerankRequest(model, query, documents, min(top_n, len(documents)), return_documents)


def _document_text(item: Any, i: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        text = item.get("text")
        if isinstance(text, str):
            return text
        raise InvalidRequest(f"documents[{i}] is an object without a string 'text'", param=f"documents[{i}].text")
    raise InvalidRequest(f"documents[{i}] must be a string or an object with 'text'", param=f"documents[{i}]")


def rerank_chain(config: Config, body: JSON, param: str = "model") -> list[Link]:
    """The chain of a rerank call; a model that is not `mode: rerank` is a 400 naming where it came from.

    `PROVIDER/UPSTREAM_MODEL` (no config entry) is taken as a rerank model of that provider.
    """
    if param == "model":
        chain = resolve_chain(config, body)
    else:  # rag.rerank: a 400 (not a 404) for an unknown name, it is a field of a chat request
        try:
            chain = resolve_model(config, str(body["model"]), param)
        except ProxyError as exc:
            raise InvalidRequest(f"{param}: {exc.message}", param=param) from None
    fallbacks = body.get("fallbacks") or []
    out: list[Link] = []
    for name, deployments in chain:
        if name not in config.models and name not in config.strategies and "/" in name:
            deployments = tuple(dataclasses.replace(d, mode="rerank") for d in deployments)
        elif deployments[0].mode != "rerank":
            where = f"fallbacks[{fallbacks.index(name)}]" if name in fallbacks else param
            raise InvalidRequest(f"model '{name}' is a {deployments[0].mode} model, not a `mode: rerank` model",
                                 param=where)
        out.append((name, deployments))
    return out


def to_upstream_body(request: RerankRequest, body: JSON | None = None) -> JSON:
    """What a provider's `rerank` gets: plain strings, and the gateway's fields for the router."""
    upstream: JSON = {"model": request.model, "query": request.query, "documents": list(request.documents),
                      "top_n": request.top_n}
    for key in ("max_tokens_per_doc",):  # Cohere's own knob, forwarded where the vendor has it
        if body is not None and body.get(key) is not None:
            upstream[key] = body[key]
    return upstream


def from_upstream_results(answer: JSON, request: RerankRequest) -> list[JSON]:
    """A provider's results checked (indices in range, each once), sorted by relevance, cut to top_n."""
    results = answer.get("results")
    if not isinstance(results, list):
        raise UpstreamError("the rerank model answered without results")
    seen: set[int] = set()
    out: list[JSON] = []
    for item in results:
        index = item.get("index") if isinstance(item, dict) else None
        score = item.get("relevance_score") if isinstance(item, dict) else None
        if (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(request.documents)
                or index in seen or isinstance(score, bool) or not isinstance(score, int | float)):
            raise UpstreamError(f"the rerank model answered a malformed result: {str(item)[:200]}")
        seen.add(index)
        out.append({"index": index, "relevance_score": float(score)})
    out.sort(key=lambda r: (-r["relevance_score"], r["index"]))
    return out[:request.top_n]


def usage_of(answer: JSON, request: RerankRequest) -> JSON:
    """Input tokens as the vendor counted them (Cohere's `meta.tokens`), else counted offline."""
    meta = answer.get("meta") if isinstance(answer.get("meta"), dict) else {}
    tokens = (meta.get("tokens") or {}).get("input_tokens") if isinstance(meta.get("tokens"), dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        tokens = count_text(request.query) + sum(count_text(d) for d in request.documents)
    units = (meta.get("billed_units") or {}).get("search_units") if isinstance(meta.get("billed_units"), dict) else None
    if not isinstance(units, int | float) or isinstance(units, bool):
        units = math.ceil(len(request.documents) / DOCUMENTS_PER_SEARCH_UNIT)
    return {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens, "search_units": units}


def to_rerank_response(answer: JSON, request: RerankRequest, model: str, request_id: str) -> JSON:
    results = from_upstream_results(answer, request)
    if request.return_documents:
        for result in results:
            result["document"] = {"text": request.documents[result["index"]]}
    usage = usage_of(answer, request)
    meta = answer.get("meta") if isinstance(answer.get("meta"), dict) else {}
    meta = {**meta, "billed_units": {**(meta.get("billed_units") or {}), "search_units": usage["search_units"]}}
    answer_id = answer.get("id")
    return {"id": answer_id if isinstance(answer_id, str) and answer_id else f"rerank-{request_id}",
            "model": model, "results": results, "meta": meta, "usage": usage}


async def call_rerank(provider: Provider, body: JSON, deployment: Deployment) -> JSON:
    return await provider.rerank(body, deployment)  # type: ignore[attr-defined, no-any-return]


async def run_rerank(gateway: Gateway, chain: list[Link], request: RerankRequest, body: JSON | None = None,
                     request_id: str = "") -> Served[JSON]:
    """One rerank through the router (retries, fallbacks); `served.result` is the shaped answer."""
    upstream = to_upstream_body(request, body)
    for key in ("fallbacks", "fallback_strategy"):
        if body is not None and body.get(key) is not None:
            upstream[key] = body[key]  # the router strips gateway fields before the provider sees them
    served: Served[JSON] = await gateway.router.run(chain, upstream, "rerank", call_rerank)
    served.result = to_rerank_response(served.result, request, served.deployment.name, request_id)
    return served


async def rerank_texts(gateway: Gateway, chain: list[Link], query: str, texts: Sequence[str], top_n: int,
                       log: JSON | None = None) -> list[tuple[int, float]]:
    """(index into texts, relevance) best first: what `rag.rerank` keeps of its candidate pool.

    Its tokens and cost go to the metrics under the rerank model (and to `log`, the chat request's
    log line); the chat request's own usage and spend stay the chat model's.
    """
    request = RerankRequest(chain[0][0], query, tuple(texts), min(top_n, len(texts)), False)
    served: Served[JSON] = await gateway._bounded(run_rerank(gateway, chain, request))
    usage = served.result["usage"]
    cost = served.deployment.cost(usage["prompt_tokens"], 0)
    gateway.metrics.account(served.deployment.name, served.provider.name, usage, cost)
    if log is not None:
        log.update(rag_rerank_model=served.deployment.name, rag_rerank_tokens=usage["prompt_tokens"],
                   rag_rerank_cost_usd=cost)
    return [(r["index"], r["relevance_score"]) for r in served.result["results"]]


async def rerank_endpoint(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    from proxy.endpoint import read_body
    from proxy.middleware import send_json

    started = time.perf_counter()
    body = parse_json_object(await read_body(receive))
    request = parse_rerank(body)
    state = scope["state"]
    state["log"]["model"] = state["requested_model"] = request.model
    chain = rerank_chain(gateway.config, body)

    async def run() -> Served[JSON]:
        served: Served[JSON] = await gateway._bounded(run_rerank(gateway, chain, request, body, state["request_id"]))
        return served

    if gateway.gated(state):  # the key's model allow-list, limits, budget, one usage row
        served = await gateway.gate.embed(state, body, chain, run, route="rerank")
    else:
        served = await run()
    cost = gateway._account("rerank", state, served, served.result["usage"], started)
    await send_json(send, served.result, headers=gateway._headers(served, started, cost))


def build(gateway: Gateway) -> Endpoint:
    from proxy.app import Endpoint

    async def bound(scope: Scope, receive: Receive, send: Send) -> None:
        await rerank_endpoint(gateway, scope, receive, send)

    return Endpoint(gateway, "rerank", bound)
