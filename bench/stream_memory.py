"""Where a slow stream's memory goes: the gateway in this process under ``tracemalloc``, the
simulator and the clients in others (``bench/slow_streams.py``'s client), a snapshot when idle
and one with ``--streams`` streams open, and the difference by line, in bytes per stream.

    .venv/bin/python bench/stream_memory.py --streams 1000 [--top 30] [--group lineno|filename]

Python allocations only: what C code allocates with malloc (the kernel's socket buffers,
uvloop's libuv handles) is not traced; ``bench/slow_streams.py`` measures the whole (RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).parent


def holders(kind: str, old: set[int], limit: int = 40) -> list[tuple[str, int]]:
    """What holds the new tracked objects of type ``kind``: the holder's type and, for a slot
    or attribute, its name (a list held by a protocol's ``headers`` shows as
    ``EdgeProtocol.headers``); ``old`` are the ids of the objects there before the streams."""
    found: collections.Counter[str] = collections.Counter()
    new = [o for o in gc.get_objects() if type(o).__qualname__ == kind and id(o) not in old]
    for obj in new:
        for holder in gc.get_referrers(obj):
            if holder is new:
                continue
            found[_holder_name(holder, obj)] += 1
    return found.most_common(limit)


def _holder_name(holder: object, obj: object) -> str:
    name = type(holder).__qualname__
    frame = getattr(holder, "cr_frame", None) or getattr(holder, "ag_frame", None)
    if frame is not None:  # a suspended coroutine's local
        for key, value in frame.f_locals.items():
            if value is obj:
                return f"{name} {frame.f_code.co_qualname}:{key}"
        return f"{name} {frame.f_code.co_qualname}"
    if isinstance(holder, dict):
        for key, value in holder.items():
            if value is obj:
                return f"{name}[{key!r}]"
        return name + "(value)"
    for attr in getattr(type(holder), "__slots__", ()) or getattr(holder, "__dict__", ()):
        if getattr(holder, attr, None) is obj:
            return f"{name}.{attr}"
    return name


def tracked_types() -> collections.Counter[str]:
    """The objects the collector tracks, counted by type (frozen ones are not among them)."""
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


async def main(args: argparse.Namespace) -> None:
    import uvicorn

    sys.path.insert(0, str(BENCH))
    from slow_streams import free_port, gateway_env, process, raise_open_files, warm_up
    from tokenrelay.app import create_app
    from tokenrelay.settings import load

    raise_open_files(2 * args.streams + 1024)
    scratch = tempfile.mkdtemp(prefix="tokenrelay-mem-")
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    simulator = [
        *(sys.executable, "-m", "tokenrelay", "simulate", "--port", str(sim_port)),
        *("--ttft-ms", "50", "--tokens", "100000", "--token-delay-ms", "200"),
        *("--token-delay-max-ms", "1000"),
    ]
    # The simulator of this checkout (its slow knobs), whichever tree's gateway is measured.
    sim_env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
    with process(simulator, sim_env, sim_url):
        environ = gateway_env(sim_url, scratch, args.streams + 10)
        settings = load(environ=environ)
        app = create_app(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="on",
            http="tokenrelay.edge.protocol:EdgeProtocol",
            access_log=False,
            log_level="warning",
            proxy_headers=False,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        gateway = app.gateway

        def clients(streams: int, ramp: float) -> subprocess.Popen[bytes]:
            command = [
                *(sys.executable, str(BENCH / "slow_client.py")),
                *("--port", str(port), "--streams", str(streams), "--ramp", str(ramp)),
                *("--deadline", str(time.time() + 600), "--tokens", "0"),
            ]
            return subprocess.Popen(command, stdout=subprocess.DEVNULL)

        # Warm-up: a first wave opened and dropped, so lazy imports, caches and pools are idle.
        warm = clients(50, 0.2)
        while len(gateway.calls) < 50:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        warm.kill()
        while gateway.calls:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        pauses: list[tuple[int, float, int]] = []
        began = [0.0]

        def timed(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                pauses.append(
                    (info["generation"], time.perf_counter() - began[0], info["collected"])
                )

        schedule = None
        if args.serve_gc:  # the collector as `tokenrelay serve` sets it
            from tokenrelay.gc_schedule import install
            from tokenrelay.server import settle_garbage_collector

            settle_garbage_collector()
            schedule = install(3600.0)  # no timed full collection within the bench
            if args.gc_middle is not None:
                young, _, oldest = gc.get_threshold()
                gc.set_threshold(young, args.gc_middle, oldest)
            print("collector thresholds:", gc.get_threshold())
        gc.callbacks.append(timed)
        if args.trace:
            tracemalloc.start(args.depth)
        gc.collect()
        idle_types = tracked_types()
        idle_ids = {id(o) for o in gc.get_objects()} if args.holders else set()
        idle = tracemalloc.take_snapshot() if args.trace else None
        load_ = clients(args.streams, args.ramp)
        while len(gateway.calls) < args.streams:
            await asyncio.sleep(0.1)
        opening = pauses[:]
        await asyncio.sleep(2.0)  # a few tokens through every stream
        busy_types = tracked_types()
        repeats = []
        for _ in range(3):
            started, cpu = time.perf_counter(), time.process_time()
            found = gc.collect()
            repeats.append((time.perf_counter() - started, time.process_time() - cpu, found))
        print(
            "full collections with every stream open (wall s, cpu s, unreachable found):",
            [(round(w, 4), round(c, 4), f) for w, c, f in repeats],
        )
        grown_types = busy_types - idle_types
        n = args.streams
        print(
            f"tracked objects: {sum(idle_types.values())} idle, {sum(busy_types.values())} with "
            f"{n} streams open: {sum(grown_types.values()) / n:.1f} per stream; by type:"
        )
        print(", ".join(f"{name} {count / n:.2f}" for name, count in grown_types.most_common(60)))
        for kind in args.holders:
            print(f"held new {kind} objects:", holders(kind, idle_ids))
        full_pause = repeats[-1][0]
        busy = tracemalloc.take_snapshot() if args.trace else None
        traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        load_.kill()
        load_.wait()
        ending = len(pauses)
        while gateway.calls:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the records written, the connections closed
        young = sum(found for generation, _, found in pauses[ending:] if generation < 2)
        if args.garbage:  # what the cycles are made of
            gc.set_debug(gc.DEBUG_SAVEALL)
        left = gc.collect()
        if args.garbage:
            gc.set_debug(0)
            kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
            print("the full collection's garbage, per stream:")
            print(", ".join(f"{kind} {count / n:.2f}" for kind, count in kinds.most_common(30)))
            for obj in gc.garbage:
                if isinstance(obj, BaseException):
                    frames = []
                    tb = obj.__traceback__
                    while tb is not None:
                        frames.append(tb.tb_frame.f_code.co_qualname)
                        tb = tb.tb_next
                    print("e.g.", type(obj).__qualname__, "through", frames)
                    break
            gc.garbage.clear()
        print(
            f"after the {n} streams ended (their clients gone: the abort path): young "
            f"collections freed {young / n:.1f} cyclic objects per stream, a full collection "
            f"then {left} in all ({left / n:.1f} per stream)"
        )
        # and streams that complete (short ones, one after another): their cycles, if any
        completed = 200
        mark = len(pauses)
        await asyncio.to_thread(warm_up, f"http://127.0.0.1:{port}", completed)
        await asyncio.sleep(1.0)
        young = sum(found for generation, _, found in pauses[mark:] if generation < 2)
        left = gc.collect()
        print(
            f"after {completed} streams completed: young collections freed {young} objects, "
            f"a full collection then {left}"
        )
        server.should_exit = True
        await task
    gc.callbacks.remove(timed)
    for generation in (0, 1):
        times = [pause for g, pause, _ in opening if g == generation]
        print(
            f"generation {generation} collections while the streams opened: {len(times)}, "
            f"longest {max(times, default=0) * 1000:.1f} ms, "
            f"{sum(times) * 1000:.0f} ms in all"
        )
    if args.serve_gc and schedule is not None:
        schedule.close()
    full = [pause for generation, pause, _ in pauses if generation == 2]
    print(
        f"gc while opening: {len(pauses)} collections, {len(full)} full, longest full "
        f"{max(full, default=0) * 1000:.0f} ms; a full collection with every stream open: "
        f"{full_pause * 1000:.0f} ms over {sum(busy_types.values())} tracked objects"
        + (" (tracemalloc on)" if args.trace else "")
    )
    if idle is None or busy is None:
        return
    stats = busy.compare_to(idle, args.group)
    grown = sum(stat.size_diff for stat in stats)
    count = sum(stat.count_diff for stat in stats)
    n = args.streams
    print(f"{n} streams open: +{grown / n:.0f} B and +{count / n:.1f} blocks per stream traced ")
    print(f"(traced now {traced[0] / 2**20:.1f} MiB, peak {traced[1] / 2**20:.1f} MiB)\n")
    print("| B / stream | blocks / stream | where |")
    print("| ---: | ---: | --- |")
    for stat in stats[: args.top]:
        frame = stat.traceback[0]
        where = f"{frame.filename.split('site-packages/')[-1].split('src/')[-1]}:{frame.lineno}"
        print(f"| {stat.size_diff / n:.0f} | {stat.count_diff / n:.2f} | {where} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--group", default="lineno", choices=["lineno", "filename", "traceback"])
    parser.add_argument(
        "--holders", action="append", default=[], help="what holds the new objects of a type"
    )
    parser.add_argument(
        "--garbage", action="store_true", help="what the collection after the streams found"
    )
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds to open them over")
    parser.add_argument(
        "--serve-gc", action="store_true", help="the collector as under `serve` (gc_schedule)"
    )
    parser.add_argument("--gc-middle", type=int, help="with --serve-gc: generation 1's threshold")
    parser.add_argument("--no-trace", dest="trace", action="store_false", help="gc pauses only")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(parser.parse_args()))
