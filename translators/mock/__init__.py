"""The `mock` provider: a deterministic stand-in for a capable model, with no upstream and no credentials.

It answers text containing the last user message (a configured `response` is
a canned answer that replaces every text and JSON answer), valid JSON for
`response_format` (`json_schema`: an instance of the schema; `json_object`: a
small object), tool calls with valid arguments
(`tool_choice` `required` or naming a tool; with `auto`, the tools the last
user message names), and after tool results a text quoting them. It streams
the way OpenAI does (word by word, `chunk_delay_ms` apart; tool-call argument
fragments; usage always, the relay strips it when the client did not ask),
honours `n`, `stop`, `max_tokens`/`max_completion_tokens` and
`reasoning_effort` (a short `reasoning_content`), and names what it cannot
honour (`logprobs`, `logit_bias`, ...) in `x-omni-dropped-params` like every
real provider. Embeddings are deterministic unit vectors (a token-id array is
one input). It lets a fresh checkout show every client path offline, and it is
the load-test target: a plain text request costs a few dict lookups more than
an echo.

`answer.py` decides what to say (pure), `schema.py` builds JSON Schema
instances (pure; `regex.py` for `pattern`), `provider.py` shapes it into
OpenAI responses, chunks, embeddings and rerank results.
"""

from translators.mock.answer import last_user_text, plan_mock_answer
from translators.mock.provider import MOCK_CHAT_PARAMS, MockProvider, mock_embedding
from translators.mock.schema import instance_of

__all__ = ["MOCK_CHAT_PARAMS", "MockProvider", "instance_of", "last_user_text", "mock_embedding", "plan_mock_answer"]
