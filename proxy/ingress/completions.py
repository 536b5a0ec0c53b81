"""Legacy text completions (`POST /v1/completions`) <-> chat requests (pure).

https://platform.openai.com/docs/api-reference/completions. Each prompt of
`prompt` (a string or a list of strings) becomes one chat request with the
prompt as the user message; its `n` choices get the indices `prompt * n + j`,
as OpenAI numbers them. `max_tokens` defaults to 16 (OpenAI's default for this
endpoint). `echo` puts the prompt before each choice's text. `suffix`,
`logprobs`, `best_of` and `logit_bias` have no chat equivalent on most
vendors: they are dropped and named in `x-omni-dropped-params`. Token-id
prompts (lists of integers) need the model's own tokenizer and are refused.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import InvalidRequest, ProxyError
from translators.base import JSON

DEFAULT_MAX_TOKENS = 16
_COPIED = ("model", "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty", "seed", "user",
           "stream", "stream_options", "fallbacks", "fallback_strategy", "structured_output", "rag", "mcp", "cache")
_DROPPED = ("suffix", "logprobs", "best_of", "logit_bias")


def to_prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise InvalidRequest("token-id prompts are not supported by this gateway; send the prompt as text",
                             param="prompt")
    raise InvalidRequest("prompt must be a string or a non-empty list of strings", param="prompt")


def to_chat_requests(body: JSON) -> tuple[list[str], list[JSON], list[str]]:
    """(prompts, one chat request per prompt, the dropped parameter names)."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    prompts = to_prompts(body.get("prompt"))
    base: JSON = {k: body[k] for k in _COPIED if body.get(k) is not None}
    max_tokens = body.get("max_tokens")
    base["max_tokens"] = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    dropped = [k for k in _DROPPED if body.get(k) not in (None, "", 0, {})]
    return prompts, [{**base, "messages": [{"role": "user", "content": p}]} for p in prompts], dropped


def from_chat_completion(completion: JSON, offset: int, prompt: str, echo: bool) -> list[JSON]:
    """The `text_completion` choices of one prompt's `chat.completion` (indices shifted by `offset`)."""
    out = []
    for choice in completion.get("choices") or []:
        text = (choice.get("message") or {}).get("content") or ""
        out.append({"text": prompt + text if echo else text, "index": offset + choice.get("index", 0),
                    "logprobs": None, "finish_reason": choice.get("finish_reason") or "stop"})
    return out


class CompletionsEncoder:
    """Normalised chat chunks -> `text_completion` SSE chunks (`[DONE]` at the end, usage when asked)."""

    def __init__(self, completion_id: str, model: str, created: int, prompts: list[str], n: int, echo: bool,
                 include_usage: bool, render_error: Any, extra: JSON | None = None) -> None:
        self.base = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
        self.extra = extra or {}  # extension fields (rag_context, ...), on the first chunk
        self.prompts = prompts
        self.n = n
        self.echo = echo
        self.include_usage = include_usage
        self.render_error = render_error
        self._echoed: set[int] = set()

    def _frame(self, choices: list[JSON], **extra: Any) -> bytes:
        if self.extra:
            extra, self.extra = {**self.extra, **extra}, {}
        return b"data: " + orjson.dumps({**self.base, "choices": choices, **extra}) + b"\n\n"

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: JSON) -> bytes:
        choices = []
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            text = (choice.get("delta") or {}).get("content") or ""
            if self.echo and index not in self._echoed:
                self._echoed.add(index)
                text = self.prompts[index // self.n] + text
            if text or choice.get("finish_reason") is not None:
                choices.append({"text": text, "index": index, "logprobs": None,
                                "finish_reason": choice.get("finish_reason")})
        return self._frame(choices) if choices else b""

    def end(self, usage: JSON | None) -> bytes:
        tail = self._frame([], usage=usage) if self.include_usage and usage else b""
        return tail + b"data: [DONE]\n\n"

    def error(self, error: ProxyError) -> bytes:
        return b"data: " + orjson.dumps(self.render_error(error)) + b"\n\n"
