"""Where the gateway's loop thread spends its time, from a py-spy raw profile: each sampled stack
sorted into one of the stages BENCHMARKS.md names (the client write, the listeners, the route walk,
the SSE parse, ...), by what its frames show.

    PYTHONPATH=src .venv/bin/python bench/ab.py --base ../wt-base/src --levels 200 --rounds 2 \\
        --spy new --spy-out /tmp/gateway.spy      # py-spy installed: pip install py-spy
    .venv/bin/python bench/spy_breakdown.py /tmp/gateway.spy

Stacks of other threads are left out of the shares (py-spy counts some of their waits as active);
their active samples are printed apart. A sample whose deepest frame is not ours is the event loop
itself (uvloop's C: epoll, socket reads, callbacks).
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable

_WAITS = ("thread.py:81", "Condition.wait", "Event.wait")


def stage(stack: list[str]) -> str:
    """The stage one loop-thread stack is spending its time in."""
    text = ";".join(stack)
    ours = [frame for frame in stack if "tokenrelay/" in frame]
    if "Cycle.send" in text or "edge/head.py" in text:
        return "writing to the client (the edge's send and the write syscall)"
    if any(part in text for part in ("metering/", "observe/", "_emit", "records.py", "_settle")):
        return "the record's listeners (meter, ledger spool, audit, metrics), settling limits"
    if "dialects/sse.py" in text:
        return "SSE parse"
    if "OpenAIReader" in text or "openai_chunk" in text:
        return "OpenAI chunk to events"
    if "Writer.write" in text or "Writer.close" in text:
        return "events to the client's bytes"
    if "Accumulator" in text:
        return "accumulate"
    if "http_client.py" in text and any(p in text for p in ("data_received", "next_chunk")):
        return "upstream read (http_client callbacks, next_chunk)"
    if any(part in text for part in ("gate/", "ratelimit/", "screening/", "guard/")):
        return "the gate (identity, limits, screen)"
    if any(part in text for part in ("failover.py", "router.py", "http_client.py", "deadline.py")):
        return "route walk and upstream request (failover, pool, deadlines)"
    if ours and ("edge/protocol.py" in ours[-1] or "edge/cycle.py" in ours[-1]):
        return "the edge's request parse and cycle set-up"
    if ours and any(p in text for p in ("relay_call.py", "relay.py", "app.py", "providers.py")):
        return "the relay loop (coroutine resumption, the provider's generator)"
    return "the event loop (uvloop, callbacks, no frame of ours)"


def breakdown(lines: Iterable[str]) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Samples per stage of the loop thread, and the other threads' active samples by leaf."""
    loop: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    for line in lines:
        text, _, count = line.rstrip().rpartition(" ")
        if not text:
            continue
        stack = text.split(";")
        if stack[0].startswith("_run_module_as_main"):
            loop[stage(stack)] += int(count)
        elif not any(wait in stack[-1] for wait in _WAITS):
            others[stack[-1].split(" ")[0]] += int(count)
    return loop, others


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("profile", help="py-spy record --format raw output")
    args = parser.parse_args()
    with open(args.profile, encoding="utf-8") as lines:
        loop, others = breakdown(lines)
    total = sum(loop.values()) or 1
    print(f"loop thread: {total} samples")
    print("| share of the loop thread | what |\n| --- | --- |")
    for what, count in loop.most_common():
        print(f"| {100 * count / total:.1f} % | {what} |")
    print(f"other threads, active: {sum(others.values())} samples {dict(others.most_common(5))}")


if __name__ == "__main__":
    main()
