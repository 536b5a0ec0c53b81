"""Cohere Chat API v2 and Embed v2 through the `cohere` SDK's `AsyncClientV2`.

Vendor quirks that shape the mapping (https://docs.cohere.com/reference/chat):
- Messages: `system`/`user`/`assistant`/`tool`; a tool result is a list of
  content blocks, here one `document` whose `data` must be an object (a
  non-object result is wrapped as `{"result": ...}`). Images are `image_url`
  parts that take both `data:` and web URLs, so they pass through unchanged.
- `tool_plan`: the model's plan before it calls tools. It is returned as
  `reasoning_content` (message and stream deltas, like thinking text) and an
  assistant message replayed with `tool_calls` and `reasoning_content` sends it
  back as `tool_plan`.
- `tool_choice` is only `REQUIRED` / `NONE`; "auto" is the default (omitted)
  and a named function keeps only that tool in `tools`, with `REQUIRED`.
- `response_format`: `{"type": "json_object"}` with an optional `json_schema`;
  `top_p` is `p`, the `top_k` extension field is `k`, `stop` is
  `stop_sequences`; `reasoning_effort` becomes `thinking` (reasoning models).
- Finish reasons COMPLETE/STOP_SEQUENCE/MAX_TOKENS/TOOL_CALL; ERROR and
  TIMEOUT mean the generation failed and become 502 / 504 errors.
- Usage: `billed_units` (what Cohere charges), falling back to `tokens`.
- Streams are typed events discriminated on `data.type` (see `stream.py`).
- Embed v2 requires `input_type` (extension field, default `search_document`)
  and `embedding_types`; we ask for floats and the gateway base64-encodes.
- Rerank v2 (`rerank.py`): strings only, Cohere's result shape is the gateway's own.
- The SDK's `base_url` default reads `CO_API_URL` at import time, so the
  provider always passes one; its own retries are off (the router retries).
"""

from translators.cohere.provider import CohereProvider, map_cohere_error
from translators.cohere.request import to_cohere_embed_request, to_cohere_messages, to_cohere_request
from translators.cohere.rerank import from_cohere_rerank_response, to_cohere_rerank_request
from translators.cohere.response import (
    from_cohere_embed_response,
    from_cohere_finish_reason,
    from_cohere_response,
    from_cohere_usage,
)
from translators.cohere.stream import CohereStreamState, from_cohere_event

__all__ = [
    "CohereProvider",
    "CohereStreamState",
    "from_cohere_embed_response",
    "from_cohere_event",
    "from_cohere_finish_reason",
    "from_cohere_rerank_response",
    "from_cohere_response",
    "from_cohere_usage",
    "map_cohere_error",
    "to_cohere_embed_request",
    "to_cohere_messages",
    "to_cohere_request",
    "to_cohere_rerank_request",
]
