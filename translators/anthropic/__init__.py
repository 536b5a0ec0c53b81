"""Anthropic Messages API (https://docs.anthropic.com/en/api/messages) behind the OpenAI wire format.

Quirks that shape the mapping (anthropic SDK 2.x; https://docs.anthropic.com/en/api/messages):
- `system` is a top-level field, not a message; `developer` messages join it.
  Turns must alternate user/assistant, so consecutive same-role turns are
  merged and tool results (`tool_result` blocks) ride in a user turn.
- `max_tokens` is required: the request's, else the model entry's
  `max_tokens`, else 4096. Thinking tokens count against it.
- The SDK's `messages.create` lost `temperature`/`top_p`/`top_k` (they must go
  through `extra_body`). We post the body ourselves, so they are ordinary body
  keys: base URL, auth and headers come from the SDK client, the bytes go
  through the lean client of `translators.http` (the SDK's own `post` when an
  environment proxy applies). Streams are read as raw event dicts (every event
  carries its `type`, so `data:` lines suffice), no pydantic model per event.
- Structured output is `output_config.format` (json_schema only); the schema is
  adapted by the SDK's own `transform_schema` (objects closed, unsupported
  keywords moved into descriptions). `json_object` has no native form and
  becomes a system instruction.
- Thinking (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking):
  `reasoning_effort` -> `thinking.budget_tokens`; thinking text is returned as
  `reasoning_content`, and the signed `thinking` / `redacted_thinking` blocks
  as `thinking_blocks`, which clients send back verbatim on the assistant
  message so multi-turn tool use keeps working.
- Streams (https://docs.anthropic.com/en/api/messages-streaming) need `event:`
  lines; usage arrives split between `message_start` and `message_delta`;
  an `event: error` (e.g. overloaded_error) may arrive after HTTP 200.
- No embeddings API: the provider has no EMBEDDINGS capability.
"""

from translators.anthropic.errors import map_anthropic_error
from translators.anthropic.provider import AnthropicProvider
from translators.anthropic.request import to_anthropic_messages, to_anthropic_request
from translators.anthropic.response import (
    AnthropicStreamState,
    from_anthropic_event,
    from_anthropic_response,
    from_anthropic_stop_reason,
    from_anthropic_usage,
)

__all__ = [
    "AnthropicProvider",
    "AnthropicStreamState",
    "from_anthropic_event",
    "from_anthropic_response",
    "from_anthropic_stop_reason",
    "from_anthropic_usage",
    "map_anthropic_error",
    "to_anthropic_messages",
    "to_anthropic_request",
]
