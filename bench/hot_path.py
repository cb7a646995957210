"""Where the gateway's time goes per streamed token, stage by stage, in one process.

    .venv/bin/python bench/hot_path.py

Each stage runs on the same OpenAI chunk the simulator sends (and its Anthropic counterpart),
many times, timed with ``perf_counter_ns``; the figure is the median of several repetitions, in
microseconds per event. What this cannot show, the syscalls and event-loop wake-ups of reading
the upstream socket and writing the client's, is in the py-spy profile of BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from tokenrelay.dialects import anthropic, openai
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import Accumulator, Message, Request, TextDelta, TextPart

OPENAI_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764000000,'
    b'"model":"gpt-5.5","choices":[{"index":0,"delta":{"content":" streaming"},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)
ANTHROPIC_CHUNK = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":" streaming"}}\n\n'
)
REQUEST = Request(dialect="openai", model="default", messages=[Message("user", [TextPart("hi")])])


def per_event_us(work: Callable[[], object], n: int = 50_000, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(n):
            work()
        times.append((time.perf_counter_ns() - started) / n / 1000)
    return statistics.median(times)


def stages() -> list[tuple[str, float]]:
    parser = SSEParser()
    parser.feed(b": warm\n\n")
    (event,) = parser.feed(OPENAI_CHUNK)
    reader = openai.stream_reader()
    delta = reader.feed(event)[-1]  # the first chunk also names the model (a Usage event)
    assert isinstance(delta, TextDelta)
    accumulator = Accumulator()
    writer = openai.stream_writer(REQUEST, id="chatcmpl-x", model="gpt-5.5")
    writer.write(TextDelta("first"))
    a_parser = SSEParser()
    a_parser.feed(b": warm\n\n")
    (a_event,) = a_parser.feed(ANTHROPIC_CHUNK)
    a_reader = anthropic.stream_reader()
    a_writer = anthropic.stream_writer(REQUEST, id="msg_x", model="claude")
    a_writer.write(TextDelta("first"))
    return [
        (
            "SSE parse (our parser, one event per chunk)",
            per_event_us(lambda: parser.feed(OPENAI_CHUNK)),
        ),
        (
            "OpenAI chunk -> event (msgspec decode + mapping)",
            per_event_us(lambda: reader.feed(event)),
        ),
        ("Anthropic event -> event", per_event_us(lambda: a_reader.feed(a_event))),
        ("accumulate (for metering and the record)", per_event_us(lambda: accumulator.add(delta))),
        ("event -> OpenAI chunk bytes", per_event_us(lambda: writer.write(delta))),
        ("event -> Anthropic event bytes", per_event_us(lambda: a_writer.write(delta))),
    ]


def main() -> None:
    rows = stages()
    print("| stage | µs per event |\n| --- | --- |")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")
    openai_path = rows[0][1] + rows[1][1] + rows[3][1] + rows[4][1]
    print(f"| **OpenAI in, OpenAI out: Python work per token** | **{openai_path:.2f}** |")


if __name__ == "__main__":
    main()
