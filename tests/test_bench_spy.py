"""bench/spy_breakdown.py sorts a py-spy profile's loop-thread stacks into the stages
BENCHMARKS.md names, and keeps other threads (and their waits) out of the shares."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# bench/ is not a package: the script loaded from its file, as tests/test_docs.py loads gen_config
_spec = importlib.util.spec_from_file_location(
    "spy_breakdown", Path(__file__).parent.parent / "bench" / "spy_breakdown.py"
)
assert _spec and _spec.loader
spy_breakdown = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(spy_breakdown)
breakdown = spy_breakdown.breakdown

LOOP = "_run_module_as_main (<frozen runpy>:198);Runner.run (asyncio/runners.py:118)"


def test_loop_stacks_go_to_their_stage_and_other_threads_apart() -> None:
    lines = [
        f"{LOOP};Cycle.run_asgi (tokenrelay/edge/cycle.py:138);"
        "Cycle.send (tokenrelay/edge/cycle.py:200) 6",
        f"{LOOP};Provider.stream (tokenrelay/providers.py:310);"
        "SSEParser.feed (tokenrelay/dialects/sse.py:56) 3",
        f"{LOOP};Meter.__call__ (tokenrelay/metering/meter.py:90) 2",
        f"{LOOP} 4",  # uvloop's own time: no frame of ours
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81) 50",
        "Thread._bootstrap (threading.py:1002);"
        "SQLiteDatabase._execute (tokenrelay/store/database.py:207) 5",
        "",
    ]
    loop, others = breakdown(lines)
    assert loop == {
        "writing to the client (the edge's send and the write syscall)": 6,
        "SSE parse": 3,
        "the record's listeners (meter, ledger spool, audit, metrics), settling limits": 2,
        "the event loop (uvloop, callbacks, no frame of ours)": 4,
    }
    assert others == {"SQLiteDatabase._execute": 5}  # the idle worker's wait is not counted
