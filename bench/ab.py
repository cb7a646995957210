"""Two trees of tokenrelay side by side in one run: the same streams sent straight to the
simulator, through a gateway started from this tree and through one started from another
(``--base``, a checkout's ``src``), in rounds whose order rotates, so a busy shared machine
drifts on all three alike.

    .venv/bin/python bench/ab.py --base ../wt-base/src [--levels 1,50,200] [--rounds 4]
    .venv/bin/python bench/ab.py --base ../wt-base/src --profile new   # cProfile the gateway
    .venv/bin/python bench/ab.py --base ../wt-base/src --spy new       # py-spy, if installed
    .venv/bin/python bench/ab.py --base ../wt-base/src --tokens 1      # per-request work alone
    .venv/bin/python bench/ab.py --base src --new src --new-server granian
        # the server measured: the same tree under Granian's ASGI server (pip install granian;
        # not a dependency)

Prints the figures of issue 20's table for each tree: added time to first token (p50 / p99)
per level, streams/s against direct, and the gateway's CPU per stream and per streamed token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))

from run import (  # bench/ is not a package
    CHAT,
    SCRATCH,
    SIM_KNOBS,
    Sample,
    free_port,
    gateway_env,
    pct,
    process,
    run_batch,
    simulator_command,
)

HERE = str(Path(__file__).parent.parent / "src")


def gateway(
    name: str, src: str, sim_url: str, profile: str | None, server: str = "uvicorn"
) -> tuple[list[str], dict[str, str], str]:
    """The command, environment and URL of a gateway whose code comes from ``src``, served by
    ``tokenrelay serve`` (uvicorn and our edge) or, to measure the server, by Granian's ASGI
    interface (one worker, uvloop; none of the edge's bounds)."""
    port = free_port()
    env = gateway_env(sim_url)
    env["PYTHONPATH"] = src
    env["TOKENRELAY_DATABASE_URL"] = f"sqlite:///{SCRATCH}/{name}.db"
    env["TOKENRELAY_PORT"] = str(port)
    run = [sys.executable]
    if profile:
        run += ["-m", "cProfile", "-o", profile]
    command = [*run, "-m", "tokenrelay", "serve", "--port", str(port)]
    if server == "granian":
        granian = str(Path(sys.executable).with_name("granian"))
        command = [granian, "--interface", "asgi", "--factory", "--loop", "uvloop"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws"]
        command += ["--log-level", "warning", "tokenrelay.app:create_app"]
    return command, env, f"http://127.0.0.1:{port}"


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants (Granian serves from a worker process)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            for child in children.read().split():
                total += cpu_seconds(int(child))
    except FileNotFoundError:
        pass
    return total


async def measure(
    direct_url: str,
    gateways: dict[str, tuple[str, int]],
    levels: list[int],
    rounds: int,
) -> dict[int, dict[str, Sample]]:
    """Per level, a sample per path ("direct" and each gateway), rounds rotated."""
    results: dict[int, dict[str, Sample]] = {}
    paths = ["direct", *gateways]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    ) as session:
        for url, _ in gateways.values():
            await run_batch(session, url + CHAT.path, 20, 10, Sample())
        await run_batch(session, direct_url, 20, 10, Sample())
        for concurrency in levels:
            streams = max(20, concurrency * 2)
            samples = {path: Sample() for path in paths}
            for round_ in range(rounds):
                shift = round_ % len(paths)
                for path in paths[shift:] + paths[:shift]:
                    if path == "direct":
                        await run_batch(session, direct_url, streams, concurrency, samples[path])
                        continue
                    url, pid = gateways[path]
                    before = cpu_seconds(pid)
                    await run_batch(session, url + CHAT.path, streams, concurrency, samples[path])
                    samples[path].cpu += cpu_seconds(pid) - before
            results[concurrency] = samples
            print(f"  c={concurrency}: done", file=sys.stderr)
    return results


def report(results: dict[int, dict[str, Sample]], names: list[str]) -> str:
    lines = [
        "| tree | c | added TTFT p50 / p99 (ms) | streams/s (x direct) | CPU per stream (ms)"
        " | CPU per token (µs) | failures |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency, samples in results.items():
        direct = samples["direct"]
        d50, d99 = pct(direct.ttft, 50), pct(direct.ttft, 99)
        rate_direct = direct.streams / direct.wall
        lines.append(
            f"| direct | {concurrency} | {d50:.2f} / {d99:.2f} (absolute) | {rate_direct:.0f} | - |"
            f" - | {direct.failures} |"
        )
        for name in names:
            s = samples[name]
            rate = s.streams / s.wall
            added = f"{pct(s.ttft, 50) - d50:+.2f} / {pct(s.ttft, 99) - d99:+.2f}"
            per_stream_ms = s.cpu / max(1, s.streams) * 1000
            lines.append(
                f"| {name} | {concurrency} | {added} | {rate:.0f} ({rate / rate_direct:.2f} x)"
                f" | {per_stream_ms:.3f} | {s.cpu / max(1, s.tokens) * 1e6:.1f} | {s.failures} |"
            )
    return "\n".join(lines)


@contextmanager
def spying(command: list[str]) -> Iterator[None]:
    """py-spy attached for as long as the block runs; it writes its file on SIGINT."""
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the src directory of the other tree")
    parser.add_argument("--new", default=HERE, help="the src directory of this tree (default)")
    parser.add_argument("--new-server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument(
        "--tokens", type=int, help="tokens per stream (default 64); 1 isolates per-request work"
    )
    parser.add_argument("--levels", default="1,50,200")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--profile", choices=["base", "new"], help="run that gateway in cProfile")
    parser.add_argument("--profile-out", default="/tmp/tokenrelay-gateway.prof")
    parser.add_argument(
        "--spy",
        choices=["base", "new"],
        help="sample that gateway with py-spy (if installed) while it is measured; collapsed"
        " stacks to --spy-out",
    )
    parser.add_argument("--spy-out", default="/tmp/tokenrelay-gateway.spy")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    if args.tokens:
        SIM_KNOBS["tokens"] = args.tokens  # the simulator's and the client's count
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    trees = {"base": os.path.abspath(args.base), "new": os.path.abspath(args.new)}
    print(f"simulator: {SIM_KNOBS}; levels {levels}; {args.rounds} rounds", file=sys.stderr)
    with ExitStack() as stack:
        stack.enter_context(process(simulator_command(sim_port), gateway_env(sim_url), sim_url))
        running: dict[str, tuple[str, int]] = {}
        for name, src in trees.items():
            profile = args.profile_out if args.profile == name else None
            server = args.new_server if name == "new" else "uvicorn"
            command, env, url = gateway(name, src, sim_url, profile, server)
            pid = stack.enter_context(process(command, env, url))
            running[name] = (url, pid)
        if args.spy:
            spy = [shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))]
            spy += ["record", "--format", "raw", "-r", "250", "-o", args.spy_out]
            spy += ["-p", str(running[args.spy][1])]
            stack.enter_context(spying(spy))
        load = os.getloadavg()
        results = asyncio.run(measure(sim_url + CHAT.path, running, levels, args.rounds))
    print(report(results, list(trees)))
    print(f"\nload average at start: {load[0]:.2f}; at end: {os.getloadavg()[0]:.2f}")
    counts = ", ".join(str(max(20, c * 2) * args.rounds) for c in levels)
    print(f"streams per path per level: {counts}")


if __name__ == "__main__":
    main()
