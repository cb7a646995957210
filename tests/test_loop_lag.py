"""The event-loop lag monitor (``observe.loop_lag``) and what the slow-streams bench relies on:
the lag shown in ``/metrics``, the simulator's drawn token gaps, the open files limit raised at
``tokenrelay serve`` start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from tests.servers import gateway_environ, gateway_server
from tokenrelay.observe.loop_lag import LoopLagMonitor, LoopLagReporter
from tokenrelay.observe.prometheus import render
from tokenrelay.simulator import SimulatorSettings, _validate

ASYNC = pytest.mark.asyncio(loop_scope="session")


@ASYNC
async def test_a_blocked_loop_shows_as_lag() -> None:
    monitor = LoopLagMonitor(interval=0.005)
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.06)  # noqa: ASYNC251 (a callback hogging the loop is the point)
        await asyncio.sleep(0.02)
    finally:
        monitor.close()
    child = monitor.histogram.labels()
    assert monitor.samples >= 2
    assert sum(child.counts) == monitor.samples
    assert monitor.recent_max >= 0.05  # the 60 ms block, less at most one interval
    page = render(LoopLagReporter(monitor)()).decode()
    assert "tokenrelay_event_loop_lag_seconds_bucket{le=" in page
    assert "tokenrelay_event_loop_lag_max_seconds " in page
    samples = monitor.samples
    await asyncio.sleep(0.02)
    assert monitor.samples == samples  # closed: no more sampling


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LoopLagMonitor(0)


@ASYNC
async def test_the_gateway_reports_its_loop_lag(simulator: Any) -> None:
    environ = {**gateway_environ(simulator.url), "TOKENRELAY_METRICS__LOOP_LAG_INTERVAL": "0.01"}
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:
        await asyncio.sleep(0.1)
        async with http.get(gw.url + "/metrics") as response:
            page = await response.text()
    count = next(
        line
        for line in page.splitlines()
        if line.startswith("tokenrelay_event_loop_lag_seconds_count")
    )
    assert int(count.split()[-1]) >= 3
    assert "tokenrelay_event_loop_lag_max_seconds " in page


@ASYNC
async def test_loop_lag_sampling_can_be_turned_off(simulator: Any) -> None:
    environ = {**gateway_environ(simulator.url), "TOKENRELAY_METRICS__LOOP_LAG_INTERVAL": "0"}
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:
        assert gw.gateway.metrics is not None and gw.gateway.metrics.loop_lag is None
        async with http.get(gw.url + "/metrics") as response:
            assert "event_loop_lag" not in await response.text()


@ASYNC
async def test_the_simulator_draws_each_token_gap_from_the_range(simulator: Any) -> None:
    """tokens=6, gaps drawn from [10, 30] ms: the answer is complete and takes at least the
    five smallest gaps (an upper bound would be a timing assertion on a shared box)."""
    url = simulator.url + "/v1/chat/completions?tokens=6&token_delay_ms=10&token_delay_max_ms=30"
    body = {"model": "gpt-5.5", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(url, json=body) as response:
            text = await response.text()
        elapsed = time.monotonic() - started
    assert text.count('"content":"') >= 6 and text.rstrip().endswith("data: [DONE]")
    assert elapsed >= 0.05


def test_the_simulator_refuses_a_bad_gap_range() -> None:
    with pytest.raises(ValueError, match="token_delay_max_ms"):
        _validate(SimulatorSettings(token_delay_max_ms=-1))


def test_serve_raises_the_open_files_limit_to_the_hard_one() -> None:
    script = (
        "import resource\n"
        "from tokenrelay.server import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "raise_open_files_limit()\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    soft, hard = result.stdout.split()
    assert soft == hard


# --- what a stream in flight holds ---------------------------------------------------------------


def test_a_long_generation_is_kept_as_a_few_joined_strings() -> None:
    """Ten thousand slow streams each hold their text so far: piece by piece, a token's str
    costs ten times its characters, so the accumulator joins them as it goes."""
    from tokenrelay.model import (
        FOLD_CHARS,
        FOLD_PIECES,
        Accumulator,
        TextDelta,
        ThinkingDelta,
        Usage,
    )

    accumulator = Accumulator()
    words = [f" w{i}" for i in range(1000)]
    for i, word in enumerate(words):
        accumulator.add(ThinkingDelta(f"t{i};"))
        accumulator.add(TextDelta(word))
    accumulator.add(Usage(input_tokens=3, output_tokens=2000))
    # the text so far as one string, and at most one loose piece per FOLD_CHARS characters
    assert len(accumulator._text) <= 2 + max(FOLD_PIECES, len("".join(words)) // FOLD_CHARS)
    thinking = accumulator._thinking
    assert thinking is not None and len(thinking) <= 2 + max(FOLD_PIECES, 6000 // FOLD_CHARS)
    completion = accumulator.result()
    assert completion.text == "".join(words)
    assert completion.thinking == "".join(f"t{i};" for i in range(1000))
    assert accumulator.content_events == 2000
    assert completion.usage.output_tokens == 2000


def test_the_openai_writer_builds_its_rarer_chunks_when_needed() -> None:
    """The writer keeps the text chunk's pieces only; the thinking, other-choice, tool-call and
    usage chunks it builds on first use are byte for byte what they were."""
    from tokenrelay.dialects.openai import OpenAIWriter
    from tokenrelay.model import Finish, TextDelta, ThinkingDelta, ToolCallDelta, Usage

    writer = OpenAIWriter("chatcmpl-1", "gpt-5.5", include_usage=True)
    out = b"".join(
        [
            writer.write(ThinkingDelta("hmm")),
            writer.write(TextDelta("Hi")),
            writer.write(TextDelta(" there", choice=1)),
            writer.write(ToolCallDelta(index=0, id="call_1", name="f", arguments='{"a"')),
            writer.write(ToolCallDelta(index=0, arguments=":1}")),
            writer.write(Usage(input_tokens=5, output_tokens=4)),
            writer.write(Finish("stop")),
            writer.close(),
        ]
    ).decode()
    envelope = '"id":"chatcmpl-1","object":"chat.completion.chunk","created":'
    lines = [line for line in out.split("\n\n") if line]
    assert all(envelope in line for line in lines[:-1]) and lines[-1] == "data: [DONE]"
    assert '"delta":{"reasoning_content":"hmm"}' in out
    assert '{"index":1,"delta":{"content":" there"}' in out
    assert '"tool_calls":[{"index":0,"id":"call_1","type":"function"' in out
    assert '"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4' in out
    assert out.count('"finish_reason":"stop"') == 2  # choice 0, and choice 1 closed at the end


@ASYNC
async def test_full_collections_run_on_a_clock_and_close_restores_cpython_s_own() -> None:
    import gc

    from tokenrelay.gc_schedule import install

    before = gc.get_threshold()
    assert install(0) is None  # 0: CPython's own schedule
    schedule = install(0.02)
    assert schedule is not None
    try:
        young, middle, oldest = gc.get_threshold()
        assert (young, middle) == before[:2] and oldest > 1_000_000  # no automatic full one
        assert gc.get_freeze_count() > 0  # start-up's objects, never scanned again
        await asyncio.sleep(0.15)
        assert schedule.collections >= 2
    finally:
        schedule.close()
        gc.unfreeze()
    assert gc.get_threshold() == before
    collections = schedule.collections
    await asyncio.sleep(0.05)
    assert schedule.collections == collections


@ASYNC
async def test_the_edge_s_lighter_event_wakes_every_waiter_and_can_be_cleared() -> None:
    from tokenrelay.edge.signal import Signal

    signal = Signal()
    assert not signal.is_set()
    first = asyncio.ensure_future(signal.wait())
    second = asyncio.ensure_future(signal.wait())
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    signal.set()
    assert await first and await second
    assert await signal.wait()  # set: returns at once
    signal.clear()
    waiting = asyncio.ensure_future(signal.wait())
    await asyncio.sleep(0)
    waiting.cancel()  # a cancelled waiter leaves nothing behind
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert signal._waiters is None


@ASYNC
async def test_full_collections_that_find_nothing_come_less_often(monkeypatch: Any) -> None:
    import gc

    from tokenrelay import gc_schedule

    found = iter([0, 0, 0, 0, gc_schedule.QUIET, 0])  # the first: start-up's own collection
    monkeypatch.setattr(gc, "collect", lambda *_: next(found, 0))
    schedule = gc_schedule.FullCollections(60.0)
    try:
        waits = []
        for _ in range(5):
            schedule._collect()
            waits.append(schedule.wait)
        # doubled while quiet, never past STRETCH intervals; garbage brings the interval back
        assert waits == [120.0, 240.0, 300.0, 60.0, 120.0]
        assert schedule.found == 0
    finally:
        schedule.close()
        gc.unfreeze()
