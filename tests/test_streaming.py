"""The stream lifecycle state machine, the SSE decoder and request validation, fed plain data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.schemas import CHAT_REQUEST, EMBEDDING_REQUEST, parse_json_object, validate
from proxy import sse
from proxy.sse import iter_chunk_batches, iter_sse_batches, iter_sse_data
from proxy.streaming import StreamRelay, relay


async def chunks_of(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


def choice(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"index": 0, "delta": delta}
    if finish is not None:
        c["finish_reason"] = finish
    return {"choices": [c], **extra}


async def run_relay(
    first: dict[str, Any], rest: list[Any], include_usage: bool, batched: bool = False
) -> tuple[list[Any], StreamRelay, list[Any]]:
    """Relay `first` then `rest`; `batched`: the way a translator yields per read (one list, one frame write)."""
    state = StreamRelay("chatcmpl-1", "public", include_usage)
    done: list[Any] = []
    closed: list[bool] = []

    async def tracked() -> AsyncIterator[Any]:
        try:
            async for item in chunks_of([rest] if batched else rest):
                yield item
        finally:
            closed.append(True)

    frames = [
        f async for f in relay(state, [first], tracked(), lambda e: e if isinstance(e, ProxyError) else UpstreamError("x"),
                               lambda e: e.to_dict(), lambda s, err: done.append(err))
    ]
    assert not batched or len(frames) <= 3, "first chunk, then one write per batch, then usage with [DONE]"
    raw = b"".join(frames).split(b"\n\n")
    assert raw.pop() == b""
    events = [orjson.loads(e[6:]) if e != b"data: [DONE]" else "[DONE]" for e in raw]
    assert closed == [True], "the upstream iterator is always closed"
    return events, state, done


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("include_usage", [True, False])
async def test_invariants_and_usage(include_usage: bool, batched: bool) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    events, state, done = await run_relay(
        choice({"content": "Hel"}, id="upstream-id", model="upstream-model"),
        [choice({"content": "lo"}, usage=None), {"choices": []}, choice({}, "stop"), {"choices": [], "usage": usage},
         choice({"content": "late"})],
        include_usage,
        batched,
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-1"} and {c["model"] for c in chunks} == {"public"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    with_choices = [c for c in chunks if c["choices"]]
    assert all("finish_reason" in ch for c in with_choices for ch in c["choices"])
    assert [c["choices"][0]["finish_reason"] for c in with_choices] == [None, None, "stop"]  # "late" dropped
    assert all("usage" not in c for c in with_choices)
    if include_usage:
        assert chunks[-1] == {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": state.created,
                              "model": "public", "choices": [], "usage": usage}
    else:
        assert chunks[-1] is with_choices[-1]
    assert state.usage == usage and done == [None]


@pytest.mark.parametrize(
    ("rest", "message"),
    [
        ([choice({"content": "b"})], "ended before the answer was complete"),
        ([choice({"content": "b"}), UpstreamError("boom mid-stream")], "boom mid-stream"),
    ],
)
async def test_failure_after_first_byte_is_one_error_event_without_done(rest: list[Any], message: str) -> None:
    events, _, done = await run_relay(choice({"content": "a"}), rest, True)
    assert "[DONE]" not in events
    assert message in events[-1]["error"]["message"]
    assert events[-1]["error"]["type"] == "upstream_error"
    assert isinstance(done[0], UpstreamError)


async def test_sse_decoder_handles_framing() -> None:
    raw = [b"data: {\"a\":1}\n\nda", b"ta: x\r\n\r\n: comment\n\nevent: e\ndata: l1\ndata: l2\n\n", b"data: [DONE]\n\n",
           b"data: tail"]
    got = [d async for d in iter_sse_data(chunks_of(raw))]
    assert got == [b'{"a":1}', b"x", b"l1\nl2", b"[DONE]", b"tail"]
    assert [d async for d in iter_sse_data(chunks_of(raw), end=b"[DONE]")] == [b'{"a":1}', b"x", b"l1\nl2"]
    batches = [b async for b in iter_sse_batches(chunks_of(raw))]
    assert batches == [[b'{"a":1}'], [b"x", b"l1\nl2"], [b"[DONE]"], [b"tail"]]


async def test_sse_line_split_over_many_reads_is_joined_once_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    pieces = [b"data: "] + [b"x" * 7] * 20000 + [b"\n\n", b"data: next\n\n"]
    got = [d async for d in iter_sse_data(chunks_of(pieces))]
    assert got == [b"x" * 140000, b"next"]
    monkeypatch.setattr(sse, "MAX_LINE_BYTES", 1000)
    with pytest.raises(UpstreamError, match="longer than 1000 bytes"):
        [d async for d in iter_sse_data(chunks_of([b"data: "] + [b"x" * 7] * 200))]


async def test_chunk_batches_keep_what_came_before_a_failure_and_stop_at_the_end() -> None:
    def decode(data: bytes) -> dict[str, Any] | None:
        if data == b"bad":
            raise UpstreamError("in-band error")
        return None if data == b"ping" else {"n": int(data)}

    raw = [b"data: 1\n\ndata: ping\n\ndata: 2\n\n", b"data: 3\n\ndata: bad\n\ndata: 4\n\n"]
    got: list[Any] = []
    with pytest.raises(UpstreamError):
        async for batch in iter_chunk_batches(chunks_of(raw), decode):
            got.append(batch)
    assert got == [[{"n": 1}, {"n": 2}], [{"n": 3}]]
    ended = [b async for b in iter_chunk_batches(chunks_of([b"data: 5\n\ndata: [DONE]\n\ndata: 6\n\n"]), decode,
                                                 end=b"[DONE]")]
    assert ended == [[{"n": 5}]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "0.5"}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools[0].function"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0].image_url.url"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}},
         "response_format.type"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": True}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5}, "stop"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "always"}, "tool_choice"),
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
         "messages[0].content[0].type"),
        ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
         "messages[0].tool_calls[0].id"),
    ],
)
def test_validation_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(CHAT_REQUEST, body)
    assert info.value.param == param and param in info.value.message


def test_validation_accepts_full_openai_request_and_unknown_fields() -> None:
    validate(CHAT_REQUEST, {
        "model": "m", "stream": True, "stream_options": {"include_usage": True}, "n": 1, "seed": 1, "user": "u",
        "messages": [
            {"role": "developer", "content": "be terse"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}], "x_vendor": 1},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "max_completion_tokens": 5, "stop": ["x"], "reasoning_effort": "low", "logprobs": True, "custom": {"k": 1},
    })
    validate(EMBEDDING_REQUEST, {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8})
    validate(EMBEDDING_REQUEST, {"model": "e", "input": [[1, 2], [3]]})
    for bad, param in (([], "input"), ("", "input"), (["a", 1], "input[1]"), ([1.5], "input[0]"), ([[1, "x"]], "input[0][1]")):
        with pytest.raises(InvalidRequest) as info:
            validate(EMBEDDING_REQUEST, {"model": "e", "input": bad})
        assert info.value.param == param


@pytest.mark.parametrize("raw", [b"", b"{bad", b"[1, 2]", b'"text"'])
def test_body_must_be_a_json_object(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_json_object(raw)


async def test_n_choices_finish_independently() -> None:
    def two(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    events, _, _ = await run_relay(
        two(0, {"content": "a"}),
        [two(1, {"content": "b"}), two(0, {}, "stop"), two(0, {"content": "late"}), two(1, {"content": "c"}),
         two(1, {}, "length")],
        False,
    )
    assert events[-1] == "[DONE]"
    seen = [(c["choices"][0]["index"], c["choices"][0]["delta"].get("content"), c["choices"][0]["finish_reason"])
            for c in events[:-1]]
    assert seen == [(0, "a", None), (1, "b", None), (0, None, "stop"), (1, "c", None), (1, None, "length")]


async def test_stream_with_an_unfinished_choice_is_an_error() -> None:
    events, _, _ = await run_relay(
        {"choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {"content": "b"}}]},
        [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}], False)
    assert "error" in events[-1]
