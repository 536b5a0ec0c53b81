"""Request validation at the edge, once.

The models only check: the gateway forwards the client's own dict, so unknown
fields survive untouched and nothing is re-serialised. Validation is strict
(no "0.5" for a number) and every failure names the field, OpenAI-style.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.errors import InvalidRequest

_CONFIG = ConfigDict(extra="allow", strict=True)


class _Model(BaseModel):
    model_config = _CONFIG


class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImageURL(_Model):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: ImageURL


class OtherPart(_Model):
    type: Literal["input_audio", "file", "refusal"]


Part = Annotated[TextPart | ImagePart | OtherPart, Field(discriminator="type")]


class FunctionCall(_Model):
    name: str
    arguments: str


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Model):
    role: Literal["system", "developer"]
    content: str | list[TextPart]


class UserMessage(_Model):
    role: Literal["user"]
    content: str | list[Part]


class AssistantMessage(_Model):
    role: Literal["assistant"]
    content: str | list[Part] | None = None
    tool_calls: list[ToolCall] | None = None


class ToolMessage(_Model):
    role: Literal["tool"]
    tool_call_id: str
    content: str | list[TextPart]


class FunctionMessage(_Model):
    role: Literal["function"]
    name: str
    content: str | None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage, Field(discriminator="role")
]


class FunctionDef(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Model):
    type: Literal["function"]
    function: FunctionDef


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(_Model):
    include_usage: bool | None = None


class ChatRequest(_Model):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    fallbacks: list[str] | None = None
    fallback_strategy: str | None = None


class EmbeddingRequest(_Model):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    fallbacks: list[str] | None = None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def validate(model: type[BaseModel], body: dict[str, Any]) -> None:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise _to_invalid_request(exc, body) from None
    if model is EmbeddingRequest and body.get("input") in ("", []):
        raise InvalidRequest("'input' must not be empty", param="input")


def _to_invalid_request(exc: ValidationError, body: dict[str, Any]) -> InvalidRequest:
    # Union members each report an error; the most specific one (deepest path) says most.
    error = max(exc.errors(), key=lambda e: len(_path(e["loc"])))
    path = _param(error["loc"])
    message = error["msg"]
    if error["type"] == "missing":
        message = "is a required property"
    elif error["type"] == "union_tag_invalid":
        path += "." + str(error["ctx"]["discriminator"]).strip("'")
        message = f"{error['ctx']['tag']!r} is not one of {error['ctx']['expected_tags']}"
    return InvalidRequest(f"Invalid value for '{path}': {message}", param=path)


_TYPE_NAMES = {"str", "int", "float", "bool", "none"}


def _path(loc: tuple[Any, ...]) -> list[Any]:
    """The location without the union-member names pydantic inserts (`messages.0.user.content`)."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        # Discriminated unions (messages by role, content parts by type) put the tag after the index.
        tag_position = i > 1 and isinstance(loc[i - 1], int) and (
            loc[i - 2] == "messages" or "tagged-union" in str(loc[i - 2]))
        if isinstance(part, str) and ("[" in part or part in _TYPE_NAMES or (tag_position and part in _TAGS)):
            continue
        out.append(part)
    return out


_TAGS = {"system", "developer", "user", "assistant", "tool", "function", "text", "image_url", "input_audio", "file",
         "refusal"}


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in _path(loc):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
