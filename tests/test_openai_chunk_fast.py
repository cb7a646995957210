"""The OpenAI stream reader's typed fast path against its dict path: the same events, in the
same order, and the same reader state, for every chunk shape upstreams send or get wrong."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.dialects.openai import OpenAIReader
from tokenrelay.dialects.openai_chunk import Chunk
from tokenrelay.dialects.sse import SSEEvent
from tokenrelay.model import Event, TextDelta, Usage

_MISSING = object()
_text = st.sampled_from([None, "", "t", " streaming", 5, ["a"], {"a": 1}])
_calls = st.sampled_from(
    [
        None,
        [],
        [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            }
        ],
        [{"index": 0, "function": {"arguments": '{"a":'}}],
        [{"function": {"arguments": "1}"}}],
        [{"id": "call_2", "function": {"name": "g", "arguments": {"x": 1}}}],
        ["bad"],
        [{"function": "bad"}],
        "bad",
    ]
)


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_MISSING), values)


def _object(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    parts = st.fixed_dictionaries({name: _maybe(value) for name, value in fields.items()})
    return parts.map(lambda found: {k: v for k, v in found.items() if v is not _MISSING})


_delta = st.one_of(
    st.sampled_from([None, [], "x"]),
    _object(
        role=st.just("assistant"),
        content=_text,
        refusal=_text,
        reasoning_content=_text,
        reasoning=_text,
        tool_calls=_calls,
    ),
)
_logprobs = st.sampled_from(
    [None, {}, {"content": [{"token": "t", "logprob": -0.1}]}, {"refusal": None}, [1], "x"]
)
_choice = st.one_of(
    st.sampled_from([None, "x", 3]),
    _object(
        index=st.sampled_from([0, 1, 2, -1, None, "1", True, 10**6]),
        delta=_delta,
        logprobs=_logprobs,
        finish_reason=st.sampled_from([None, "", "stop", "length", "tool_calls"]),
        stop_reason=st.sampled_from([None, "END"]),
    ),
)
_chunk = st.one_of(
    st.sampled_from([[], "x", 1, None]),
    _object(
        id=st.just("chatcmpl-1"),
        object=st.just("chat.completion.chunk"),
        model=st.sampled_from([None, "", "gpt-5.5", 5]),
        choices=st.one_of(st.sampled_from([None, {}, "x"]), st.lists(_choice, max_size=3)),
        usage=st.sampled_from(
            [None, {"prompt_tokens": 3, "completion_tokens": 4}, {"prompt_tokens_details": []}]
        ),
        error=st.sampled_from([None, "", {"message": "overloaded", "type": "server_error"}]),
    ),
)
_data = st.one_of(
    _chunk.map(lambda chunk: msgspec.json.encode(chunk).decode()),
    st.sampled_from(["[DONE]", " [DONE] ", "{not json", ""]),
)


class _DictReader(OpenAIReader):
    """The reader with its fast path off: every chunk through the dict path."""

    __slots__ = ()

    def _chunk_events(self, chunk: Chunk) -> list[Event] | None:
        return None


def _state(reader: OpenAIReader) -> tuple[Any, ...]:
    return reader.done, reader._model, dict(reader._ids), reader._last


@settings(max_examples=500, deadline=None)
@given(st.lists(_data, min_size=1, max_size=5))
def test_fast_path_reads_as_the_dict_path(datas: list[str]) -> None:
    fast, slow = OpenAIReader(), _DictReader()
    for data in datas:
        assert fast.feed(SSEEvent("message", data)) == slow.feed(SSEEvent("message", data))
        assert _state(fast) == _state(slow)


def test_the_usual_chunk_reads_as_its_model_then_its_text() -> None:
    reader = OpenAIReader()
    chunk = (
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-5.5",'
        '"choices":[{"index":0,"delta":{"content":" streaming"},"logprobs":null,'
        '"finish_reason":null}]}'
    )
    assert reader.feed(SSEEvent("message", chunk)) == [
        Usage(model="gpt-5.5"),
        TextDelta(" streaming"),
    ]
    assert reader.feed(SSEEvent("message", chunk)) == [TextDelta(" streaming")]
