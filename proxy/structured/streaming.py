"""A structured stream: relayed as produced, validated at the end (CONTRACT §9).

No repair is possible once the first byte is out, so the content goes to the
client as it arrives and the accumulated answer is checked when the upstream
ends; an invalid answer raises `StructuredOutputInvalid`, which the relay turns
into one in-band error event and no `[DONE]`. With `method: tool` the forced
call's argument fragments are relayed as `content` (and its finish_reason as
`stop`); a top-level array (sent upstream as `{"items": [...]}`) is unwrapped
on the fly by `ArrayUnwrapper`. A stream that calls other tools is a tool
round: relayed untouched and not validated.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from proxy.errors import StructuredOutputInvalid
from proxy.structured.spec import Spec
from proxy.structured.validate import check_answer

JSON = dict[str, Any]
_PREFIX = re.compile(r'\s*\{\s*"items"\s*:\s*')
_TAIL = re.compile(r"\s*(?:\}\s*)?$")


class ArrayUnwrapper:
    """`{"items": [1, 2]}` streamed in pieces -> `[1, 2]` streamed in pieces.

    The prefix is held until it is complete; the end is held while it could be the wrapper's closing brace.
    A stream that does not start like the wrapper is relayed as it is (it will fail validation anyway).
    """

    def __init__(self) -> None:
        self.head: str | None = ""  # None once the prefix was consumed (or found missing)
        self.held = ""
        self.unwrapping = True  # False: the stream did not start like the wrapper, relayed as is

    def feed(self, piece: str) -> str:
        if self.head is not None:
            self.head += piece
            match = _PREFIX.match(self.head)
            if match and match.end() < len(self.head):
                piece, self.head = self.head[match.end() :], None
            elif _could_be_prefix(self.head):
                return ""
            else:
                piece, self.head, self.unwrapping = self.head, None, False
        if not self.unwrapping:
            return piece
        text = self.held + piece
        cut = _TAIL.search(text).start()  # type: ignore[union-attr]
        self.held = text[cut:]
        return text[:cut]

    def close(self) -> str:
        """Whatever is still held that is not the wrapper's closing brace."""
        rest = (self.head or "") + self.held
        self.head, self.held = None, ""
        return rest if not self.unwrapping or rest.strip() not in ("}", "") else ""


def _could_be_prefix(text: str) -> bool:
    target = '{"items":'
    compact = re.sub(r"\s+", "", text)
    return target.startswith(compact) or (compact.startswith(target) and not compact[len(target) :])


class StructuredStream:
    """Per-stream state: the accumulated answer, our tool call's index, the unwrapper."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.text: list[str] = []
        self.our_index: int | None = None  # index of the forced tool call in the upstream stream
        self.other_tools = False
        self.unwrapper = ArrayUnwrapper() if spec.wrapped else None

    def chunk(self, chunk: JSON) -> JSON:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta")
            if delta is not None:
                self._delta(delta)
            if (
                choice.get("finish_reason") == "tool_calls"
                and self.our_index is not None
                and not self.other_tools
            ):
                choice["finish_reason"] = "stop"
            if (
                choice.get("finish_reason") is not None
                and self.unwrapper is not None
                and not self.other_tools
            ):
                tail = self.unwrapper.close()
                if tail and delta is not None:
                    delta["content"] = (delta.get("content") or "") + tail
        return chunk

    def _delta(self, delta: JSON) -> None:
        pieces: list[str] = []
        if delta.get("content"):
            pieces.append(delta["content"])
        if self.spec.method == "tool" and delta.get("tool_calls"):
            kept = []
            for call in delta["tool_calls"]:
                name = (call.get("function") or {}).get("name")
                if name == self.spec.name and self.our_index is None:
                    self.our_index = call.get("index", 0)
                if self.our_index is not None and call.get("index", 0) == self.our_index:
                    args = (call.get("function") or {}).get("arguments")
                    if args:
                        pieces.append(args)
                else:
                    self.other_tools = True
                    kept.append(call)
            if kept:
                delta["tool_calls"] = kept
            else:
                del delta["tool_calls"]
        elif delta.get("tool_calls"):
            self.other_tools = True
        if not pieces:
            return
        raw = "".join(pieces)
        self.text.append(raw)
        delta["content"] = self.unwrapper.feed(raw) if self.unwrapper is not None else raw

    def verdict(self) -> None:
        """Raise when the finished answer is not valid (tool rounds are not answers)."""
        if self.other_tools:
            return
        _, errors = check_answer("".join(self.text), self.spec.validator, self.spec.wrapped)
        if errors:
            raise StructuredOutputInvalid(
                "the streamed answer is not valid against the structured_output schema: " + "; ".join(errors)
            )


def structured_stream(
    spec: Spec, first: list[JSON], rest: AsyncIterator[Any]
) -> tuple[list[JSON], AsyncIterator[Any]]:
    """The stream's first chunks and the rest, rewritten per `spec` and checked when the upstream ends."""
    state = StructuredStream(spec)
    first = [state.chunk(c) for c in first]

    async def relayed() -> AsyncIterator[Any]:
        try:
            async for item in rest:
                if type(item) is list:
                    yield [state.chunk(c) for c in item]
                else:
                    yield state.chunk(item)
            state.verdict()
        finally:
            aclose = getattr(rest, "aclose", None)
            if aclose is not None:
                await aclose()

    return first, relayed()
