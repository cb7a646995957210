"""The server's own cost under a streaming relay, with the gateway's logic taken out: one minimal
relay app (read the request, open one upstream stream through ``tokenrelay.http_client``'s pool,
write each upstream chunk to the client as it arrives), written once for ASGI and once for RSGI,
served by four servers against the same simulator, in rounds whose order rotates.

    .venv/bin/python bench/server_ceiling.py [--levels 50,200] [--rounds 5] [--quick]

Servers: ``edge`` (uvicorn's Server and ``tokenrelay.edge.protocol:EdgeProtocol``, as
``tokenrelay serve``), ``httptools`` (uvicorn's own httptools protocol), ``granian-rsgi`` and
``granian-asgi`` (Granian, one worker, uvloop; skipped with a message when granian is not
installed: it is not a dependency, ``pip install granian==2.8.9`` to measure it). Figures per
round, then the median and range over rounds: added TTFT p50 / p99 against direct, streams/s as
a ratio to direct, the server's CPU (its threads and child processes) per stream and per token;
then each server's CPU per stream over the edge's in the same round, the steadiest comparison on
a shared machine. Results and conclusion: BENCHMARKS.md, "The server under the stream path".

The relay apps are in ``ceiling_app.py`` (kept apart so the servers import nothing of the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))

from run import CHAT, Sample, free_port, gateway_env, pct, process, run_batch, simulator_command

SERVERS = ("edge", "httptools", "granian-rsgi", "granian-asgi")
# Not measured unless named in --servers: Granian's RSGI with its Rust task implementation
# (``--task-impl rust``) in place of asyncio's tasks.
VARIANTS = {"granian-rsgi-rust": ["--task-impl", "rust"]}

# --- the measurement -----------------------------------------------------------------------------


def server_command(kind: str, port: int) -> list[str]:
    """uvicorn through ``ceiling_app.py``; Granian through its CLI (its worker is a child)."""
    if not kind.startswith("granian"):
        return [sys.executable, str(Path(__file__).with_name("ceiling_app.py")), kind, str(port)]
    interface = "rsgi" if kind.startswith("granian-rsgi") else "asgi"
    command = [str(Path(sys.executable).with_name("granian")), *VARIANTS.get(kind, [])]
    command += ["--interface", interface, "--loop", "uvloop", "--workers", "1", "--no-ws"]
    command += ["--http", "1", "--host", "127.0.0.1", "--port", str(port)]
    return [*command, "--log-level", "warning", "--no-access-log", f"ceiling_app:{interface}_app"]


Rounds = dict[int, dict[str, list[Sample]]]


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``'s threads (Granian's Rust I/O threads too) and of every process below
    it, whichever thread started it (Granian serves from a worker process). Read per thread from
    ``schedstat``, in nanoseconds: ``stat``'s 10 ms ticks are 5 % of a round's CPU at c=50."""
    total = 0.0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0]) / 1e9
            with open(f"/proc/{pid}/task/{task}/children") as children:
                total += sum(cpu_seconds(int(child)) for child in children.read().split())
    except FileNotFoundError:  # a thread or process that ended between two reads
        pass
    return total


async def measure(
    direct_url: str, servers: dict[str, tuple[str, int]], levels: list[int], rounds: int
) -> Rounds:
    """Per level and path ("direct" and each server), one sample per round, order rotated."""
    results: Rounds = {}
    paths = ["direct", *servers]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    ) as session:
        for url, _ in servers.values():  # warm: connections, the upstream pool
            await run_batch(session, url + CHAT.path, 20, 10, Sample())
        await run_batch(session, direct_url, 20, 10, Sample())
        for concurrency in levels:
            streams = max(20, concurrency * 2)
            results[concurrency] = {path: [] for path in paths}
            for round_ in range(rounds):
                shift = round_ % len(paths)
                for path in paths[shift:] + paths[:shift]:
                    sample = Sample()
                    if path == "direct":
                        await run_batch(session, direct_url, streams, concurrency, sample)
                    else:
                        url, pid = servers[path]
                        before = cpu_seconds(pid)
                        await run_batch(session, url + CHAT.path, streams, concurrency, sample)
                        sample.cpu = cpu_seconds(pid) - before
                    results[concurrency][path].append(sample)
            print(f"  c={concurrency}: done", file=sys.stderr)
    return results


def spread(values: list[float], form: str) -> str:
    """Median and range over rounds."""
    if len(values) == 1:
        return format(values[0], form)
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{form}} [{low:{form}}, {high:{form}}]"


def report(results: Rounds, names: list[str]) -> str:
    lines = [
        "| server | c | added TTFT p50 (ms) | added TTFT p99 (ms) | streams/s (x direct)"
        " | CPU per stream (ms) | CPU per token (µs) | failures |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency, paths in results.items():
        direct = paths["direct"]
        rates = [d.streams / d.wall for d in direct]
        p50s = [pct(d.ttft, 50) for d in direct]
        p99s = [pct(d.ttft, 99) for d in direct]
        failures = sum(d.failures for d in direct)
        lines.append(
            f"| direct | {concurrency} | {spread(p50s, '.2f')} (absolute)"
            f" | {spread(p99s, '.2f')} (absolute) | {spread(rates, '.0f')} | - | - | {failures} |"
        )
        for name in names:
            rounds = paths[name]
            added50 = [pct(s.ttft, 50) - d for s, d in zip(rounds, p50s, strict=True)]
            added99 = [pct(s.ttft, 99) - d for s, d in zip(rounds, p99s, strict=True)]
            ratio = [s.streams / s.wall / r for s, r in zip(rounds, rates, strict=True)]
            per_stream = [s.cpu / max(1, s.streams) * 1000 for s in rounds]
            per_token = [s.cpu / max(1, s.tokens) * 1e6 for s in rounds]
            failures = sum(s.failures for s in rounds)
            lines.append(
                f"| {name} | {concurrency} | {spread(added50, '+.2f')} | {spread(added99, '+.2f')}"
                f" | {spread(ratio, '.2f')} | {spread(per_stream, '.3f')}"
                f" | {spread(per_token, '.1f')} | {failures} |"
            )
    return "\n".join(lines)


def against(results: Rounds, names: list[str]) -> str:
    """Each server's CPU per stream over the first one's (``edge``) round by round: rounds are
    run back to back, so this ratio drifts less with the machine than either figure alone."""
    first, others = names[0], names[1:]
    lines = [
        f"| server | c | CPU per stream / {first}'s, same round | lower than {first}'s in"
        f" | added TTFT p50 minus {first}'s (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for concurrency, paths in results.items():
        for name in others:
            pairs = list(zip(paths[name], paths[first], strict=True))
            ratios = [s.cpu / s.streams / (b.cpu / b.streams) for s, b in pairs]
            lower = sum(ratio < 1 for ratio in ratios)
            ttft = [pct(s.ttft, 50) - pct(b.ttft, 50) for s, b in pairs]
            lines.append(
                f"| {name} | {concurrency} | {spread(ratios, '.2f')} | {lower} of {len(pairs)}"
                f" | {spread(ttft, '+.2f')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="50,200")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="c=10, one round (a smoke run)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    levels = [10] if args.quick else [int(level) for level in args.levels.split(",")]
    rounds = 1 if args.quick else args.rounds
    names = [name for name in args.servers.split(",") if name]
    if importlib.util.find_spec("granian") is None:
        skipped = [name for name in names if name.startswith("granian")]
        names = [name for name in names if name not in skipped]
        if skipped:
            print(f"granian is not installed: {', '.join(skipped)} skipped")
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = gateway_env(sim_url)
    env["CEILING_UPSTREAM"] = sim_url
    here = Path(__file__).parent
    env["PYTHONPATH"] = os.pathsep.join([str(here.parent / "src"), str(here)])
    print(f"levels {levels}; {rounds} rounds; servers {names}", file=sys.stderr)
    with ExitStack() as stack:
        stack.enter_context(process(simulator_command(sim_port), env, sim_url))
        running: dict[str, tuple[str, int]] = {}
        for name in names:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            pid = stack.enter_context(process(server_command(name, port), env, url))
            running[name] = (url, pid)
        load = os.getloadavg()
        results = asyncio.run(measure(sim_url + CHAT.path, running, levels, rounds))
    print(report(results, names))
    if len(names) > 1:
        print()
        print(against(results, names))
    print(f"\nload average at start: {load[0]:.2f}; at end: {os.getloadavg()[0]:.2f}")
    counts = ", ".join(f"c={c}: {max(20, c * 2)} x {rounds}" for c in levels)
    print(f"streams per server per level (per round x rounds): {counts}")


if __name__ == "__main__":
    main()
