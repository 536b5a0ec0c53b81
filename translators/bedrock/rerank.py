"""Rerank requests <-> the Bedrock `Rerank` operation of `bedrock-agent-runtime` (pure).

AWS documents one way to call a reranker directly: "send a Rerank request with an
Agents for Amazon Bedrock runtime endpoint"
(https://docs.aws.amazon.com/bedrock/latest/userguide/rerank-use.html,
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent-runtime_Rerank.html).
It serves Amazon Rerank 1.0 (`amazon.rerank-v1:0`) and Cohere Rerank 3.5
(`cohere.rerank-v3-5:0`) with one request shape, where `InvokeModel` would need each
family's own body, so the gateway uses it:

- `queries`: exactly one `{"type": "TEXT", "textQuery": {"text"}}`;
- `sources`: 1–1000 `{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT",
  "textDocument": {"text"}}}` (each text 1–32,000 characters);
- `rerankingConfiguration`: `{"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration":
  {"modelConfiguration": {"modelArn", "additionalModelRequestFields"?}, "numberOfResults"}}` —
  the model is a foundation-model ARN (`arn:aws:bedrock:REGION::foundation-model/ID`), built
  here from the configured model id and the provider's region unless the id is an ARN already;
- the answer: `{"results": [{"index", "relevanceScore", "document"?}], "nextToken"?}`, best
  first; a `nextToken` asks for the next page with the same request.
"""

from __future__ import annotations

from proxy.errors import InvalidRequest
from translators.base import JSON
from translators.bedrock.request import bedrock_family

MAX_TEXT_CHARS = 32_000


def bedrock_rerank_model_arn(model_id: str, region: str) -> str:
    if model_id.startswith("arn:"):
        return model_id
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    return f"arn:{partition}:bedrock:{region}::foundation-model/{model_id}"


def to_bedrock_rerank_request(request: JSON, model_id: str, region: str) -> JSON:
    """The `rerank(**kwargs)` of boto3's `bedrock-agent-runtime` client."""
    documents = request.get("documents")
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise InvalidRequest("Bedrock rerank takes a list of strings", param="documents")
    for i, text in enumerate(documents):
        if not text or len(text) > MAX_TEXT_CHARS:
            raise InvalidRequest(f"Bedrock rerank takes documents of 1 to {MAX_TEXT_CHARS} characters "
                                 f"(documents[{i}] has {len(text)})", param=f"documents[{i}]")
    model: JSON = {"modelArn": bedrock_rerank_model_arn(model_id, region)}
    if request.get("max_tokens_per_doc") is not None and bedrock_family(model_id) == "cohere":
        model["additionalModelRequestFields"] = {"max_tokens_per_doc": request["max_tokens_per_doc"]}
    configuration: JSON = {"modelConfiguration": model}
    if request.get("top_n") is not None:
        configuration["numberOfResults"] = request["top_n"]
    return {
        "queries": [{"type": "TEXT", "textQuery": {"text": request["query"]}}],
        "sources": [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": text}}}
                    for text in documents],
        "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL",
                                   "bedrockRerankingConfiguration": configuration},
    }


def from_bedrock_rerank_response(pages: list[JSON]) -> JSON:
    """Every page's results in Cohere's shape (`index`, `relevance_score`)."""
    return {"results": [{"index": r.get("index"), "relevance_score": r.get("relevanceScore")}
                        for page in pages for r in page.get("results") or [] if isinstance(r, dict)]}
