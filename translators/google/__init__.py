"""Gemini API and Vertex AI (provider types `gemini` and `vertex`) through google-genai.

`request` maps OpenAI chat requests to Google's contents and config, `response`
maps Google's responses and stream chunks back, `provider` holds the one class
that touches the SDK (and the error table). See docs/providers/google.md.
"""

from translators.google.provider import (
    GoogleProvider,
    build_client,
    from_google_embeddings,
    map_google_error,
    to_google_embed_request,
)
from translators.google.request import to_google_contents, to_google_request, to_google_tools
from translators.google.response import (
    GoogleStreamState,
    finish_google_stream,
    from_google_event,
    from_google_response,
    from_google_usage,
)

__all__ = [
    "GoogleProvider",
    "GoogleStreamState",
    "build_client",
    "finish_google_stream",
    "from_google_embeddings",
    "from_google_event",
    "from_google_response",
    "from_google_usage",
    "map_google_error",
    "to_google_contents",
    "to_google_embed_request",
    "to_google_request",
    "to_google_tools",
]
