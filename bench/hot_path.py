"""Where the gateway's time goes per streamed token, stage by stage, in one process; and, with
``--request``, the per-request stages before the first byte goes upstream, and the record's
listeners after the stream (the meter with its audit line and spool write, metrics). With
``PYTHONPATH=../wt-base/src`` the same stages time another tree.

    .venv/bin/python bench/hot_path.py [--request]

Each stage runs on the same OpenAI chunk the simulator sends (and its Anthropic counterpart),
many times, timed with ``perf_counter_ns``; the figure is the median of several repetitions, in
microseconds per event. What this cannot show, the syscalls and event-loop wake-ups of reading
the upstream socket and writing the client's, is in the py-spy profile of BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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


def request_stages() -> list[tuple[str, float]]:
    """The gate, the parse, the route and the upstream request's body and headers, on a gateway
    configured as ``bench/run.py``'s (in-process limiter, screen, ledger), warm, in a loop: the
    work itself, without the cold caches of a request on an idle machine (see BENCHMARKS.md)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from run import BODY, HEADERS, gateway_env
    from tokenrelay.gate.identity import request_headers
    from tokenrelay.gateway import Gateway
    from tokenrelay.settings import load

    raw = [(b"host", b"gw"), (b"content-length", b"%d" % len(BODY))]
    raw += [(name.encode(), value.encode()) for name, value in HEADERS.items()]
    dialect = openai

    async def measure() -> list[tuple[str, float]]:
        environ = gateway_env("http://127.0.0.1:9")
        environ["TOKENRELAY_AUDIT__DESTINATION"] = os.devnull  # the line is built, then dropped
        environ["TOKENRELAY_AUDIT__SECRET"] = "bench-" + "x" * 32
        gateway = Gateway(load(environ=environ))
        await gateway.start()
        try:
            headers = request_headers(raw)
            request = dialect.parse_request(BODY)
            route = gateway.router.resolve(request)
            admission = await gateway.gate.admit_caller(headers, "127.0.0.1")
            target, provider = route.targets[0]

            async def awaited(work: Callable[[], Awaitable[object]], n: int = 5_000) -> float:
                times = []
                for _ in range(5):
                    started = time.perf_counter_ns()
                    for _ in range(n):
                        await work()
                    times.append((time.perf_counter_ns() - started) / n / 1000)
                return statistics.median(times)

            listeners = await _listener_stage(gateway, request, route, admission)
            return [
                ("request headers", per_event_us(lambda: request_headers(raw), 20_000, 5)),
                (
                    "gate: identity + request limit",
                    await awaited(lambda: gateway.gate.admit_caller(headers, "127.0.0.1")),
                ),
                ("parse (OpenAI request)", per_event_us(lambda: dialect.parse_request(BODY))),
                ("route", per_event_us(lambda: gateway.router.resolve(request), 20_000, 5)),
                (
                    "gate: route access, limits, screen",
                    await awaited(
                        lambda: gateway.gate.admit_request(route, request, headers, admission)
                    ),
                ),
                (
                    "upstream body + headers",
                    per_event_us(
                        lambda: (
                            provider.build_body(request, target),
                            provider.build_headers(target, headers),
                        ),
                        20_000,
                        5,
                    ),
                ),
                listeners,
            ]
        finally:
            await gateway.stop()

    return asyncio.run(measure())


async def _listener_stage(
    gateway: Any, request: Request, route: Any, admission: Any
) -> tuple[str, float]:
    """The record's listeners (meter: usage, price, ledger spool line, budget, audit line;
    stored responses; metrics) on a completed one-token stream's record, priced."""
    from tokenrelay.model import Finish, Usage
    from tokenrelay.records import Attempt, StreamRecord

    await gateway.meter.pricer.load()
    accumulator = Accumulator()
    for event in (TextDelta("hi"), Usage(12, 1, model="gpt-5.5"), Finish("stop")):
        accumulator.add(event)
    completion = accumulator.result()
    target, provider = route.targets[0]

    def emit() -> None:
        record = StreamRecord(
            request_id="0123456789abcdef01234567",
            dialect="openai",
            route=route.name,
            outcome="completed",
            status=200,
            provider=provider.name,
            model=target.model,
            usage=completion.usage,
            content_events=1,
            finish_reason="stop",
            ttft_ms=21.5,
            duration_ms=22.4,
            attempts=[Attempt(provider.name, target.model, "ok", 200, 21.0)],
            metadata=request.metadata,
        )
        record.request = request
        record.completion = completion
        record.identity = admission.identity
        record.verdict = admission.verdict
        gateway.listeners.emit(record)

    return "the record's listeners (after the stream)", per_event_us(emit, 5_000, 5)


def main() -> None:
    if "--request" in sys.argv:
        rows = request_stages()
        *before, after = rows
        print("| per-request stage | µs per request |\n| --- | --- |")
        for name, us in before:
            print(f"| {name} | {us:.2f} |")
        print(f"| **before the first byte upstream** | **{sum(us for _, us in before):.2f}** |")
        print(f"| {after[0]} | {after[1]:.2f} |")
        return
    rows = stages()
    print("| stage | µs per event |\n| --- | --- |")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")
    openai_path = rows[0][1] + rows[1][1] + rows[3][1] + rows[4][1]
    print(f"| **OpenAI in, OpenAI out: Python work per token** | **{openai_path:.2f}** |")


if __name__ == "__main__":
    main()
