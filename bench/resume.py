"""What resumable streams cost per event and per buffered stream, in one process.

    PYTHONPATH=src .venv/bin/python bench/resume.py

Per event: the relay's send of one Anthropic text delta as it is with resume off (the bytes go
out as written) and with it on (``Tap.add``: the ``id:`` line, the copy kept, the Redis copy
queued when a mirror is given), the median of several repetitions in microseconds. Memory: the
bytes ``tracemalloc`` sees held by a store after one 500-event answer is buffered.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc
from collections.abc import Callable

from tokenrelay.resume.settings import ResumeSettings, ResumeStoreSettings
from tokenrelay.resume.store import ResumeStore

CHUNK = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":" streaming"}}\n\n'
)
EVENTS = 500
ON = ResumeSettings(grace=15.0, max_stream_bytes=64 * 1_048_576)


def per_event_us(step: Callable[[], object], n: int = 200_000, repeat: int = 7) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for _ in range(n):
            step()
        runs.append((time.perf_counter_ns() - started) / n / 1000)
    return statistics.median(runs)


async def main() -> None:
    off_out: list[bytes] = [CHUNK]

    def resume_off() -> object:  # what the relay does with resume off: join, no tap
        return b"".join(off_out)

    store = ResumeStore(ResumeStoreSettings(max_bytes=1 << 40))
    tap = store.open("0" * 24, "ip:127.0.0.1", "anthropic", None, ON)

    def resume_on() -> object:
        return tap.add(b"".join(off_out))

    mirrored: list[tuple[str, int, list[bytes]]] = []
    store_r = ResumeStore(ResumeStoreSettings(max_bytes=1 << 40))
    tap_r = store_r.open("1" * 24, "ip:127.0.0.1", "anthropic", None, ON)
    tap_r._mirror = lambda sid, first, frames: mirrored.append((sid, first, frames))

    def resume_on_queued() -> object:
        if len(mirrored) > 10_000:
            mirrored.clear()
        return tap_r.add(b"".join(off_out))

    off = per_event_us(resume_off)
    on = per_event_us(resume_on, n=100_000)
    queued = per_event_us(resume_on_queued, n=100_000)
    print(f"per event, resume off: {off:.3f} us")
    print(f"per event, resume on (id + kept): {on:.3f} us (+{on - off:.3f})")
    print(f"per event, resume on + Redis copy queued: {queued:.3f} us (+{queued - off:.3f})")

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    memory = ResumeStore(ResumeStoreSettings())
    one = memory.open("2" * 24, "ip:127.0.0.1", "anthropic", None, ResumeSettings(grace=15.0))
    for _ in range(EVENTS):
        one.add(CHUNK)
    after = tracemalloc.take_snapshot()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    wire = one.buffer.size
    print(
        f"memory per buffered stream of {EVENTS} events: {held / 1024:.1f} KiB held "
        f"({wire / 1024:.1f} KiB of it the events' bytes; {held / EVENTS:.0f} B per event)"
    )


if __name__ == "__main__":
    asyncio.run(main())
