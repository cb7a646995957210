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


async def main(args: argparse.Namespace) -> None:
    import uvicorn

    sys.path.insert(0, str(BENCH))
    from slow_streams import free_port, gateway_env, process, raise_open_files
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

        gc.callbacks.append(timed)
        if args.trace:
            tracemalloc.start(args.depth)
        gc.collect()
        idle = tracemalloc.take_snapshot() if args.trace else None
        load_ = clients(args.streams, 3.0)
        while len(gateway.calls) < args.streams:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # a few tokens through every stream
        repeats = []
        for _ in range(3):
            started, cpu = time.perf_counter(), time.process_time()
            gc.collect()
            repeats.append((time.perf_counter() - started, time.process_time() - cpu))
        print("full collections (wall, cpu) s:", repeats, gc.get_stats())
        if os.environ.get("GC_TYPES"):
            import collections as _c

            objs = gc.get_objects()
            print(_c.Counter(type(o).__qualname__ for o in objs).most_common(25))
            sized = sorted(
                (
                    (len(o), type(o).__name__, repr(o)[:120])
                    for o in objs
                    if isinstance(o, (dict, list, set, tuple))
                ),
                reverse=True,
            )[:10]
            for item in sized:
                print(item)
        full_pause = repeats[-1][0]
        busy = tracemalloc.take_snapshot() if args.trace else None
        traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        load_.kill()
        load_.wait()
        while gateway.calls:
            await asyncio.sleep(0.05)
        server.should_exit = True
        await task
    gc.callbacks.remove(timed)
    full = [pause for generation, pause, _ in pauses if generation == 2]
    print(
        f"gc while opening: {len(pauses)} collections, {len(full)} full, longest full "
        f"{max(full, default=0) * 1000:.0f} ms; a full collection with every stream open: "
        f"{full_pause * 1000:.0f} ms over {len(gc.get_objects())} tracked objects"
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
    parser.add_argument("--no-trace", dest="trace", action="store_false", help="gc pauses only")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(parser.parse_args()))
