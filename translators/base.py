"""The fixed surface every translator implements.

A translator module holds pure mapping functions named for their direction
(`to_<vendor>_request`, `from_<vendor>_response`, `from_<vendor>_event` over a
`<Vendor>StreamState`, `map_<vendor>_error`) and one thin provider class, the
only code that touches the vendor SDK. Requests and responses stay in the
OpenAI wire format (plain dicts) on the gateway side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from proxy.config import Deployment, ProviderConfig
    from proxy.errors import ProxyError

JSON = dict[str, Any]

# Capability names the gateway and the conformance tests select on.
CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA = "chat", "stream", "embeddings", "tools", "vision", "json_schema"
# A provider with RERANK also has `async def rerank(request, deployment) -> JSON`: `request` is
# {"model", "query", "documents": [str], "top_n", ...}, the answer Cohere's v2 shape
# {"id"?, "results": [{"index", "relevance_score"}], "meta"?} (proxy/rerank.py orders and checks it).
RERANK = "rerank"

# Request fields the gateway itself consumes; never forwarded, never "dropped".
GATEWAY_FIELDS = frozenset({"fallbacks", "fallback_strategy", "structured_output", "rag", "mcp"})


class Provider(Protocol):
    """One configured upstream account; built once, lazily, on first use, and cached.

    `chat` returns an OpenAI `chat.completion` dict, `stream` yields OpenAI
    `chat.completion.chunk` dicts (the gateway fills in id, model and created)
    — or lists of them, everything one upstream read carried, which the gateway
    then writes to the client at once —
    `embed` returns an OpenAI embedding list. The request is the client's OpenAI
    body minus gateway fields and dropped params; `deployment.model` is the
    upstream model id. Any exception is handed to `map_error`, which turns what
    it knows into a `ProxyError` (None: the gateway reports a generic 502).
    """

    capabilities: ClassVar[frozenset[str]]
    # Chat request fields the vendor can honour; None means "forward everything".
    supported_params: ClassVar[frozenset[str] | None]

    def __init__(self, config: ProviderConfig) -> None: ...

    async def chat(self, request: JSON, deployment: Deployment) -> JSON: ...

    def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON] | AsyncIterator[list[JSON]]: ...

    async def embed(self, request: JSON, deployment: Deployment) -> JSON: ...

    def map_error(self, exc: BaseException) -> ProxyError | None: ...

    async def aclose(self) -> None: ...
