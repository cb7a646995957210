"""tokenrelay against its peers, side by side (issue 7): the same streams sent directly to the
simulator, through tokenrelay (1 worker, and 2 workers as an extra row), through LiteLLM's proxy
and through Portkey's gateway, interleaved round by round in one run, so drift hits all alike.

    make bench-compare              # = .venv/bin/python bench/compare.py
    .venv/bin/python bench/compare.py --quick --no-peers     # a smoke run (tests/test_compare.py)

Every target is its own process on loopback, pointed at one simulator (first token after 20 ms,
64 tokens 5 ms apart, as in bench/run.py); this process is the client (bench/run.py's byte-scanning
``one_stream``, one aiohttp session with no connection limit). Per concurrency level and round,
each target gets the same batch in turn, the order rotated every round. The peers are installed on
demand (bench/peers.py). Writes ``compare.json`` and ``compare.png`` to ``--output`` and prints a
Markdown table for BENCHMARKS.md. Any failed stream is reported and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

import peers
from peers import Launch, Peer, memory_mib
from run import HEADERS, SCRATCH, SIM_KNOBS, Sample, gateway_env, one_stream, pct

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results"
LEVELS = (1, 50, 200, 500)
QUICK_LEVELS = (1, 20)
MEMORY_LEVEL = 200  # memory per concurrent stream is measured while this many streams run
SATURATION = (200, 500)  # the levels whose streams/s the table calls saturation
# LiteLLM serves ~16 streams/s at concurrency 200 on this machine, so its batches are one wave
# (``concurrency`` streams) instead of two, to keep the whole run near 10 minutes.
CAPPED = frozenset({"litellm"})
COLD_RUNS = {"tokenrelay": 5, "peer": 3}
ABORT_TRIES = 3
CLIENT_BUSY = 0.9  # of a core: above it, the client may be what limits a batch
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
LABELS = {
    "direct": "direct",
    "tokenrelay": "tokenrelay",
    "tokenrelay-2w": "tokenrelay, 2 workers",
    "litellm": "LiteLLM",
    "portkey": "Portkey",
}


# --- targets ------------------------------------------------------------------------------------


@dataclass
class Level:
    """One target at one concurrency level: its rounds and what was measured around them."""

    rounds: list[Sample] = field(default_factory=list)
    cpu: float = 0.0  # the target's processes, during its batches
    simulator_cpu: float = 0.0
    client_cpu: float = 0.0
    rss_max_mib: float = float("nan")
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    exceptions: collections.Counter[str] = field(default_factory=collections.Counter)

    def pooled(self) -> Sample:
        out = Sample()
        for sample in self.rounds:
            out.ttft += sample.ttft
            out.total += sample.total
            out.tokens += sample.tokens
            out.wall += sample.wall
            out.streams += sample.streams
            out.failures += sample.failures
        return out


@dataclass
class Target:
    key: str
    kind: str  # "direct", "tokenrelay" or "peer"
    version: str = ""
    peer: Peer | None = None
    pids: list[int] = field(default_factory=list)
    error: str = ""
    warmup_failures: int = 0
    levels: dict[int, Level] = field(default_factory=dict)
    idle_rss_mib: float = float("nan")
    peak_rss_mib: float = float("nan")
    cold_ms: list[float] = field(default_factory=list)
    cold_error: str = ""
    abort_ms: list[float] = field(default_factory=list)
    abort_propagated: bool | None = None
    abort_note: str = ""

    @property
    def label(self) -> str:
        return LABELS.get(self.key, self.key)

    @property
    def failures(self) -> int:
        return sum(level.pooled().failures for level in self.levels.values())


def tokenrelay_launcher(workers: int) -> Callable[[str, int], Launch]:
    """``tokenrelay serve`` configured as bench/run.py's gateway, as a bench/peers.py Launch (so
    it is started, health-checked, stopped and cold-started exactly as the peers are)."""
    key = "tokenrelay" if workers == 1 else f"tokenrelay-{workers}w"

    def launch(sim_url: str, port: int) -> Launch:
        env = gateway_env(sim_url)
        # one database (and so one ledger spool) per variant, shared by its cold starts
        env["TOKENRELAY_DATABASE_URL"] = f"sqlite:///{peers.scratch()}/{key}.db"
        command = [sys.executable, "-m", "tokenrelay", "serve", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        base = f"http://127.0.0.1:{port}"
        return Launch(
            name=key,
            version=tokenrelay_version(),
            command=command,
            env=env,
            base_url=base + "/v1",
            health_url=base + "/healthz",
            headers=dict(HEADERS),
            start_timeout=30,
            forward=dict,  # gateway_env forwards x-sim-* headers to the simulator
        )

    return launch


def tokenrelay_version() -> str:
    version = metadata.version("tokenrelay")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if commit:
            version += f" ({commit}{', with uncommitted changes' if dirty else ''})"
    return version


TOKENRELAY_LAUNCHERS = {
    "tokenrelay": tokenrelay_launcher(1),
    "tokenrelay-2w": tokenrelay_launcher(2),
}
# registered beside the peers', so peers.cold_start_ms times every target by the same loop
peers.LAUNCHERS.update(TOKENRELAY_LAUNCHERS)


# --- load ---------------------------------------------------------------------------------------


def streams_for(key: str, concurrency: int, quick: bool) -> int:
    """Streams per round: bench/run.py's count (two waves, at least 20); one wave for capped
    peers; small counts in a quick run."""
    if quick:
        return max(5, concurrency)
    if key in CAPPED:
        return max(20, concurrency)
    return max(20, concurrency * 2)


def process_cpu() -> float:
    times = os.times()
    return times.user + times.system


class Driver:
    """The client: one aiohttp session without a connection limit (as bench/run.py), a trace that
    counts response statuses for the batch running now, and batches on bench/run.py's schedule."""

    def __init__(self, sim_pid: int) -> None:
        self.sim_pid = sim_pid
        self.current: Level | None = None
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._on_request_end)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=STREAM_TIMEOUT,
            trace_configs=[trace],
        )

    async def _on_request_end(
        self,
        _session: aiohttp.ClientSession,
        _context: types.SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if self.current is not None:
            self.current.statuses[params.response.status] += 1

    async def stream(
        self, url: str, headers: dict[str, str], sample: Sample, level: Level | None
    ) -> None:
        """bench/run.py's ``one_stream``; a connection error or timeout counts as a failure
        (and is named in the report) instead of ending the run."""
        try:
            await one_stream(self.session, url, sample, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            sample.failures += 1
            if level is not None:
                level.exceptions[type(error).__name__] += 1

    async def batch(
        self,
        url: str,
        headers: dict[str, str],
        streams: int,
        concurrency: int,
        sample: Sample,
        level: Level | None = None,
    ) -> None:
        """bench/run.py's ``run_batch`` schedule (the first wave's starts spread over one
        stream's length, seed 7, so every target gets the same schedule), with the target's own
        headers, which ``run_batch`` does not take."""
        gate = asyncio.Semaphore(concurrency)
        ramp = (SIM_KNOBS["ttft_ms"] + SIM_KNOBS["tokens"] * SIM_KNOBS["token_delay_ms"]) / 1000
        rng = random.Random(7)
        spread = concurrency > 1
        delays = [
            rng.uniform(0, ramp) if spread and i < concurrency else 0.0 for i in range(streams)
        ]

        async def guarded(delay: float) -> None:
            async with gate:
                await asyncio.sleep(delay)
                await self.stream(url, headers, sample, level)

        started = time.perf_counter()
        await asyncio.gather(*(guarded(delay) for delay in delays))
        sample.wall += time.perf_counter() - started
        sample.streams += streams

    async def measured(self, target: Target, concurrency: int, streams: int) -> None:
        """One round of one target at one level, with the target's CPU, the simulator's, this
        process's, and the target's RSS sampled every 100 ms while it runs."""
        assert target.peer is not None
        level = target.levels.setdefault(concurrency, Level())
        sample = Sample()
        rss: list[float] = []

        async def sample_rss() -> None:
            while True:
                rss.append(memory_mib(target.pids, "VmRSS"))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample_rss()) if target.kind != "direct" else None
        cpu_before = peers.cpu_seconds(target.pids) if target.kind != "direct" else 0.0
        sim_before = peers.cpu_seconds([self.sim_pid])
        client_before = process_cpu()
        self.current = level
        try:
            headers = target.peer.request_headers()
            await self.batch(target.peer.chat_url, headers, streams, concurrency, sample, level)
        finally:
            self.current = None
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
        level.client_cpu += process_cpu() - client_before
        level.simulator_cpu += peers.cpu_seconds([self.sim_pid]) - sim_before
        if target.kind != "direct":
            level.cpu += peers.cpu_seconds(target.pids) - cpu_before
            rss.append(memory_mib(target.pids, "VmRSS"))
            previous = [] if math.isnan(level.rss_max_mib) else [level.rss_max_mib]
            level.rss_max_mib = max([*rss, *previous])
        level.rounds.append(sample)


async def drive(
    targets: Sequence[Target],
    sim_url: str,
    sim_pid: int,
    levels: Sequence[int],
    rounds: int,
    quick: bool,
) -> None:
    driver = Driver(sim_pid)
    async with driver.session:
        for target in targets:  # connection pools, imports on the first request, JIT (node)
            assert target.peer is not None
            warm = Sample()
            await driver.batch(target.peer.chat_url, target.peer.request_headers(), 20, 10, warm)
            target.warmup_failures = warm.failures
            if warm.failures:
                print(f"  WARM-UP: {target.label}: {warm.failures} of 20 FAILED", file=sys.stderr)
            if target.kind != "direct":
                target.pids = target.peer.pids()
                target.idle_rss_mib = memory_mib(target.pids, "VmRSS")
        for concurrency in levels:
            started = time.perf_counter()
            for round_ in range(rounds):
                shift = round_ % len(targets)
                for target in [*targets[shift:], *targets[:shift]]:
                    streams = streams_for(target.key, concurrency, quick)
                    await driver.measured(target, concurrency, streams)
            line = ", ".join(
                f"{t.label} {t.levels[concurrency].pooled().failures} failed"
                if t.levels[concurrency].pooled().failures
                else t.label
                for t in targets
            )
            print(
                f"  c={concurrency}: {rounds} round(s) in {time.perf_counter() - started:.0f} s"
                f" ({line})",
                file=sys.stderr,
            )
        for target in targets:
            if target.kind != "direct":
                target.peak_rss_mib = memory_mib(target.pids, "VmHWM")
        for target in targets:  # the peers that do not pass the close on go last (see abort)
            await abort(driver.session, target, sim_url)


async def abort(session: aiohttp.ClientSession, target: Target, sim_url: str) -> None:
    """bench/peers.py's abort check (the client closes after 5 tokens of a 500-token stream;
    does the simulator see its upstream close, and how long after), up to ABORT_TRIES times;
    after a try that is not seen, no more (the orphaned upstream stream runs on for 10 s and
    could be taken for the next try's close)."""
    assert target.peer is not None
    for _ in range(ABORT_TRIES):
        try:
            delay, note = await peers._abort(session, target.peer, sim_url)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            target.abort_propagated, target.abort_note = False, f"{type(error).__name__}: {error}"
            return
        target.abort_note = note
        if delay is None:
            target.abort_propagated = False
            return
        target.abort_ms.append(delay)
    target.abort_propagated = True


# --- running it all -----------------------------------------------------------------------------


def install_peers(names: Sequence[str], targets: dict[str, Target]) -> None:
    installers = {"litellm": peers.install_litellm, "portkey": peers.install_portkey}
    for name in names:
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout is for the table
                installers[name]()
        except Exception as error:  # reported, and the other targets still run
            targets[name].error = f"install failed: {type(error).__name__}: {error}"
            print(f"{name}: INSTALL FAILED: {error}", file=sys.stderr)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    levels = [int(level) for level in args.levels.split(",")]
    names = [] if args.no_peers else [name for name in args.peers.split(",") if name]
    keys = ["direct", "tokenrelay", "tokenrelay-2w", *names]
    targets = {
        key: Target(key, "direct" if key == "direct" else "peer" if key in names else "tokenrelay")
        for key in keys
    }
    install_peers(names, targets)
    load_avg_start = os.getloadavg()
    print(
        f"simulator {SIM_KNOBS}; levels {levels}; {args.rounds} rounds; targets {', '.join(keys)}",
        file=sys.stderr,
    )
    with peers.simulator(SIM_KNOBS) as (sim_url, sim_pid):
        with contextlib.ExitStack() as running:
            direct = targets["direct"]
            direct.peer = Peer(
                "direct", "", sim_url + "/v1", dict(HEADERS), sim_pid, peers.scratch(), dict
            )
            for key in keys[1:]:
                target = targets[key]
                if target.error:
                    continue
                try:
                    spawned = time.perf_counter()
                    if target.kind == "tokenrelay":
                        launch = TOKENRELAY_LAUNCHERS[key](sim_url, peers.free_port())
                        target.peer = running.enter_context(peers.run_peer(launch))
                    else:
                        target.peer = running.enter_context(peers.PEERS[key](sim_url))
                    target.version = target.peer.version
                    print(
                        f"  {target.label} {target.version}: up in"
                        f" {time.perf_counter() - spawned:.1f} s",
                        file=sys.stderr,
                    )
                except Exception as error:
                    target.error = f"did not start: {type(error).__name__}: {error}"
                    print(f"{target.label}: FAILED TO START: {error}", file=sys.stderr)
            live = [t for t in targets.values() if t.peer is not None and not t.error]
            asyncio.run(drive(live, sim_url, sim_pid, levels, args.rounds, args.quick))
        # every target is stopped now; cold starts run one at a time beside the simulator alone
        for target in targets.values():
            if target.kind == "direct" or target.error:
                continue
            runs = 1 if args.quick else COLD_RUNS[target.kind]
            try:
                target.cold_ms = peers.cold_start_ms(target.key, sim_url, runs)
            except Exception as error:
                target.cold_error = f"{type(error).__name__}: {error}"
                print(f"{target.label}: COLD START FAILED: {error}", file=sys.stderr)
    return results(args, levels, list(targets.values()), load_avg_start, started)


# --- results ------------------------------------------------------------------------------------


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 4)


def level_figures(target: Target, concurrency: int, direct: Target) -> dict[str, Any]:
    level = target.levels[concurrency]
    sample = level.pooled()
    base = direct.levels.get(concurrency)
    base_sample = base.pooled() if base else Sample()
    completed = len(sample.ttft)
    non_200 = {str(status): n for status, n in sorted(level.statuses.items()) if status != 200}
    wrong = sample.failures - sum(non_200.values()) - sum(level.exceptions.values())
    p50, p99 = pct(sample.ttft, 50), pct(sample.ttft, 99)
    d50, d99 = pct(base_sample.ttft, 50), pct(base_sample.ttft, 99)
    per_round = [
        pct(mine.ttft, 50) - pct(theirs.ttft, 50)
        for mine, theirs in zip(level.rounds, base.rounds if base else [], strict=False)
    ]
    rate = completed / sample.wall if sample.wall else float("nan")
    direct_rate = len(base_sample.ttft) / base_sample.wall if base_sample.wall else float("nan")
    is_direct = target.kind == "direct"
    return {
        "rounds": len(level.rounds),
        "streams": sample.streams,
        "streams_per_round": sample.streams // max(1, len(level.rounds)),
        "completed": completed,
        "failures": sample.failures,
        "failure_detail": {
            "non_200": non_200,
            "exceptions": dict(level.exceptions),
            "wrong_token_count": max(0, wrong),
        },
        "ttft_ms": {"p50": _num(p50), "p99": _num(p99)},
        "added_ttft_ms": {
            "p50": _num(p50 - d50),
            "p99": _num(p99 - d99),
            "p50_by_round": [_num(value) for value in per_round],
        },
        "total_ms_p50": _num(pct(sample.total, 50)),
        "total_p50_vs_direct": _ratio(
            _num(pct(sample.total, 50)), _num(pct(base_sample.total, 50))
        ),
        "wall_s": _num(sample.wall),
        "streams_per_s": _num(rate),
        "streams_per_s_vs_direct": _ratio(_num(rate), _num(direct_rate)),
        "tokens": sample.tokens,
        "cpu_s": None if is_direct else _num(level.cpu),
        "cpu_s_per_1k_tokens": None
        if is_direct
        else _num(level.cpu / sample.tokens * 1000 if sample.tokens else float("nan")),
        "client_cpu_share": _num(level.client_cpu / sample.wall if sample.wall else float("nan")),
        "simulator_cpu_share": _num(
            level.simulator_cpu / sample.wall if sample.wall else float("nan")
        ),
        "rss_max_mib": None if is_direct else _num(level.rss_max_mib),
    }


def target_figures(
    target: Target, direct: Target, levels: Sequence[int], memory_level: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": target.label,
        "kind": target.kind,
        "version": target.version,
        "error": target.error,
        "pids": target.pids,
        "streams_capped": target.key in CAPPED,
        "warmup_failures": target.warmup_failures,
        "levels": {str(c): level_figures(target, c, direct) for c in levels if c in target.levels},
    }
    if target.kind != "direct":
        mem_level = target.levels.get(memory_level)
        per_stream = float("nan")
        if mem_level is not None:
            per_stream = (mem_level.rss_max_mib - target.idle_rss_mib) * 1024 / memory_level
        cold = target.cold_ms
        out |= {
            "idle_rss_mib": _num(target.idle_rss_mib),
            "peak_rss_mib": _num(target.peak_rss_mib),
            "memory_per_stream_kib": _num(per_stream),
            "cold_start_ms": {
                "runs": [_num(ms) for ms in cold],
                "median": _num(statistics.median(cold)) if cold else None,
                "error": target.cold_error,
            },
        }
    out["abort"] = {
        "propagated": target.abort_propagated,
        "ms": [_num(ms) for ms in target.abort_ms],
        "median_ms": _num(statistics.median(target.abort_ms)) if target.abort_ms else None,
        "note": target.abort_note,
    }
    out["failures"] = target.failures
    return out


def scalars(figures: dict[str, Any]) -> dict[str, float | None]:
    """The figures that have a ratio: per level TTFT, added TTFT, streams/s, CPU; then memory,
    cold start and abort."""
    out: dict[str, float | None] = {}
    for c, level in figures["levels"].items():
        out[f"ttft_p50_ms@{c}"] = level["ttft_ms"]["p50"]
        out[f"ttft_p99_ms@{c}"] = level["ttft_ms"]["p99"]
        if figures["kind"] != "direct":
            out[f"added_ttft_p50_ms@{c}"] = level["added_ttft_ms"]["p50"]
            out[f"added_ttft_p99_ms@{c}"] = level["added_ttft_ms"]["p99"]
        out[f"streams_per_s@{c}"] = level["streams_per_s"]
        out[f"cpu_s_per_1k_tokens@{c}"] = level["cpu_s_per_1k_tokens"]
    for name in ("peak_rss_mib", "memory_per_stream_kib"):
        out[name] = figures.get(name)
    out["cold_start_ms"] = (figures.get("cold_start_ms") or {}).get("median")
    out["abort_ms"] = figures["abort"]["median_ms"]
    return out


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), ""
        )
    node = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        memory = f"{int(meminfo.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "aiohttp": aiohttp.__version__,
    }


def results(
    args: argparse.Namespace,
    levels: Sequence[int],
    targets: Sequence[Target],
    load_avg_start: tuple[float, float, float],
    started: float,
) -> dict[str, Any]:
    direct = targets[0]
    memory_level = MEMORY_LEVEL if MEMORY_LEVEL in levels else max(levels)
    figures = {t.key: target_figures(t, direct, levels, memory_level) for t in targets}
    values = {key: scalars(f) for key, f in figures.items()}
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for mine in ("tokenrelay", "tokenrelay-2w"):
        if mine not in values:
            continue
        ratios[mine] = {
            other: {
                name: _ratio(value, values[other].get(name))
                for name, value in values[mine].items()
                if values[other].get(name) is not None
            }
            for other in values
            if not other.startswith("tokenrelay")  # the two variants are rows side by side
        }
    failures = {t.key: t.failures for t in targets}
    errors = {t.key: t.error or t.cold_error for t in targets if t.error or t.cold_error}
    notes = []
    for key in (t.key for t in targets if t.key in CAPPED and figures[t.key]["levels"]):
        top = max(figures[key]["levels"], key=int)
        rate = figures[key]["levels"][top]["streams_per_s"]
        notes.append(
            f"{LABELS.get(key, key)}: one wave per round (as many streams as the concurrency, at"
            " least 20) instead of two as for the others, to bound its run time: it served"
            f" {_f(rate, '.0f')} streams/s at c={top} in this run"
        )
    notes.append(
        "added TTFT = target p50/p99 minus direct p50/p99 over the same rounds;"
        " memory per concurrent stream = (max VmRSS during the"
        f" c={memory_level} batches - idle VmRSS after warm-up) / {memory_level};"
        " multi-process targets are summed over all their processes"
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "runtime_s": round(time.perf_counter() - started, 1),
        "machine": machine_info()
        | {"load_average_start": load_avg_start, "load_average_end": os.getloadavg()},
        "versions": {
            "tokenrelay": tokenrelay_version(),
            **{t.key: t.version for t in targets if t.kind == "peer"},
        },
        "config": {
            "simulator": SIM_KNOBS,
            "levels": list(levels),
            "rounds": args.rounds,
            "quick": args.quick,
            "memory_level": memory_level,
            "saturation_levels": [c for c in SATURATION if c in levels],
            "streams_per_round": {
                t.key: {str(c): streams_for(t.key, c, args.quick) for c in levels} for t in targets
            },
            "notes": notes,
        },
        "targets": figures,
        "ratios": ratios,
        "failures": failures,
        "errors": errors,
        "ok": not any(failures.values())
        and not errors
        and not any(t.warmup_failures for t in targets),
    }


# --- report -------------------------------------------------------------------------------------


def _f(value: float | None, spec: str = ".1f", signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+{spec}}" if signed else f"{value:{spec}}"


def table(result: dict[str, Any]) -> str:
    figures = result["targets"]
    keys = list(figures)
    levels = result["config"]["levels"]
    header = "| measure | " + " | ".join(
        f"{figures[k]['label']} {figures[k]['version'].split(' ')[0]}".strip()
        if figures[k]["kind"] == "peer"
        else figures[k]["label"]
        for k in keys
    )
    lines = [header + " |", "| --- |" + " --- |" * len(keys)]

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(figures[k]) for k in keys) + " |")

    def at(f: dict[str, Any], c: int) -> dict[str, Any] | None:
        level: dict[str, Any] | None = f["levels"].get(str(c))
        return level

    for c in levels:

        def ttft(f: dict[str, Any], c: int = c) -> str:
            level = at(f, c)
            if level is None:
                return "-"
            if f["kind"] == "direct":
                return f"{_f(level['ttft_ms']['p50'])} / {_f(level['ttft_ms']['p99'])} ms"
            added = level["added_ttft_ms"]
            return f"{_f(added['p50'], '.1f', True)} / {_f(added['p99'], '.1f', True)} ms"

        row(f"TTFT p50 / p99, c={c} (direct; others: added)", ttft)
    for c in levels:

        def rate(f: dict[str, Any], c: int = c) -> str:
            level = at(f, c)
            if level is None:
                return "-"
            if f["kind"] == "direct":
                return _f(level["streams_per_s"], ".0f")
            ratio = _f(level["streams_per_s_vs_direct"], ".2f")
            return f"{_f(level['streams_per_s'], '.0f')} ({ratio} x)"

        name = "streams/s" + (" (saturation)" if c in result["config"]["saturation_levels"] else "")
        row(f"{name}, c={c} (x direct)", rate)
    for c in levels:

        def cpu(f: dict[str, Any], c: int = c) -> str:
            level = at(f, c)
            return "-" if level is None else _f(level["cpu_s_per_1k_tokens"], ".3f")

        row(f"gateway CPU s per 1k tokens, c={c}", cpu)

    def memory(f: dict[str, Any]) -> str:
        if f["kind"] == "direct":
            return "-"
        return f"{_f(f.get('idle_rss_mib'), '.0f')} / {_f(f.get('peak_rss_mib'), '.0f')}"

    row("idle / peak RSS (MiB)", memory)
    memory_level = result["config"]["memory_level"]
    row(
        f"memory per concurrent stream, c={memory_level} (KiB)",
        lambda f: _f(f.get("memory_per_stream_kib"), ".0f"),
    )

    def cold(f: dict[str, Any]) -> str:
        if f["kind"] == "direct":
            return "-"
        runs = [ms for ms in f["cold_start_ms"]["runs"] if ms is not None]
        if not runs:
            return "**FAILED**" if f["cold_start_ms"]["error"] else "-"
        return f"{statistics.median(runs):.0f} ms (n={len(runs)}, {min(runs):.0f}-{max(runs):.0f})"

    row("cold start, spawn to first token (median)", cold)

    def aborted(f: dict[str, Any]) -> str:
        abort = f["abort"]
        if abort["propagated"] is None:
            return "-"
        if not abort["propagated"]:
            return "**no**: upstream runs on"
        return f"yes, {_f(abort['median_ms'], '.1f')} ms"

    row("abort reaches the simulator (median delay)", aborted)

    def failed(f: dict[str, Any]) -> str:
        total = sum(level["streams"] for level in f["levels"].values())
        if f["error"]:
            return "**FAILED: see below**"
        if not f["failures"]:
            return f"0 of {total}"
        return f"**{f['failures']} of {total}**"

    row("failed streams", failed)
    lines += ["", ratio_table(result), "", *notes(result)]
    return "\n".join(lines)


def ratio_table(result: dict[str, Any]) -> str:
    """tokenrelay's figures divided by each other target's (< 1 is better, except streams/s)."""
    ratios = result["ratios"]
    figures = result["targets"]
    columns = [(mine, other) for mine in ratios for other in ratios[mine]]
    if not columns:
        return ""
    names = [
        name
        for name in (
            *(f"ttft_p50_ms@{c}" for c in result["config"]["levels"]),
            *(f"ttft_p99_ms@{c}" for c in result["config"]["levels"]),
            *(f"streams_per_s@{c}" for c in result["config"]["levels"]),
            *(f"cpu_s_per_1k_tokens@{c}" for c in result["config"]["levels"]),
            "peak_rss_mib",
            "memory_per_stream_kib",
            "cold_start_ms",
        )
    ]
    pretty = {
        "ttft_p50_ms": "TTFT p50",
        "ttft_p99_ms": "TTFT p99",
        "streams_per_s": "streams/s",
        "cpu_s_per_1k_tokens": "CPU per 1k tokens",
        "peak_rss_mib": "peak RSS",
        "memory_per_stream_kib": "memory per concurrent stream",
        "cold_start_ms": "cold start",
    }
    lines = [
        "| ratio | "
        + " | ".join(f"{figures[m]['label']} ÷ {figures[o]['label']}" for m, o in columns)
        + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for name in names:
        cells = [ratios[m][o].get(name) for m, o in columns]
        if all(cell is None for cell in cells):
            continue
        base, _, c = name.partition("@")
        label = pretty[base] + (f", c={c}" if c else "")
        lines.append(f"| {label} | " + " | ".join(_f(cell, ".2f") for cell in cells) + " |")
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    machine = result["machine"]
    out = [
        f"- {result['date']}, {machine['cpu']}, {machine['cores']} cores, Python"
        f" {machine['python']}, Node {machine['node'] or '-'}; load average"
        f" {machine['load_average_start'][0]:.2f} at the start,"
        f" {machine['load_average_end'][0]:.2f} at the end; run time {result['runtime_s']:.0f} s",
        "- versions: "
        + ", ".join(f"{key} {version}" for key, version in result["versions"].items()),
        f"- simulator {result['config']['simulator']}; {result['config']['rounds']} interleaved"
        " round(s) per level, order rotated per round; streams per round: "
        + "; ".join(
            f"{key} " + "/".join(str(n) for n in per.values())
            for key, per in result["config"]["streams_per_round"].items()
        )
        + f" (c={'/'.join(str(c) for c in result['config']['levels'])})",
    ]
    out += [f"- {note}" for note in result["config"]["notes"]]
    direct = result["targets"]["direct"]["levels"]
    top = str(max(result["config"]["levels"]))
    if top in direct:
        share = direct[top]["client_cpu_share"]
        sim = direct[top]["simulator_cpu_share"]
        rate = _f(direct[top]["streams_per_s"], ".0f")
        out.append(
            f"- direct at c={top}: {rate} streams/s, the most this client ({_f(share, '.2f')} of a"
            f" core) and the simulator ({_f(sim, '.2f')} of a core) deliver here; behind a gateway"
            " all three share the machine's cores"
        )
    busy = [
        f"{figures['label']} c={c}: {level['client_cpu_share']:.2f}"
        for figures in result["targets"].values()
        for c, level in figures["levels"].items()
        if (level["client_cpu_share"] or 0) > CLIENT_BUSY
    ]
    if busy:
        out.append(
            f"- **the client used more than {CLIENT_BUSY:.0%} of a core** (it may have limited"
            f" these): {', '.join(busy)}"
        )
    return out


def failure_report(result: dict[str, Any]) -> list[str]:
    lines = []
    for figures in result["targets"].values():
        if figures["error"]:
            lines.append(f"{figures['label']}: {figures['error']}")
        if figures["warmup_failures"]:
            lines.append(f"{figures['label']}: {figures['warmup_failures']} of 20 warm-up streams")
        for c, level in figures["levels"].items():
            if level["failures"]:
                detail = level["failure_detail"]
                lines.append(
                    f"{figures['label']}, c={c}: {level['failures']} of {level['streams']} streams"
                    f" failed: HTTP statuses {detail['non_200'] or '-'}, exceptions"
                    f" {detail['exceptions'] or '-'}, wrong token count"
                    f" {detail['wrong_token_count']}"
                )
        cold = figures.get("cold_start_ms") or {}
        if cold.get("error"):
            lines.append(f"{figures['label']}: cold start failed: {cold['error']}")
    return lines


# --- main ---------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers, which stop every process


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    default_levels = ",".join(map(str, LEVELS))
    parser.add_argument("--levels", help=f"concurrency levels (default {default_levels})")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per level (default 3)")
    parser.add_argument("--no-peers", action="store_true", help="tokenrelay and direct only")
    parser.add_argument("--peers", default="litellm,portkey", help="which peers (comma-separated)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where results go")
    parser.add_argument("--no-plot", action="store_true", help="no PNG (no matplotlib needed)")
    args = parser.parse_args(argv)
    args.levels = args.levels or ",".join(map(str, QUICK_LEVELS if args.quick else LEVELS))
    args.rounds = args.rounds or (1 if args.quick else 3)
    for name in args.peers.split(","):
        if name and name not in peers.PEERS:
            parser.error(f"unknown peer {name!r}; known: {', '.join(peers.PEERS)}")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    if not args.no_plot:
        from plot import ensure_matplotlib

        ensure_matplotlib()  # before the run, so a failed install costs nothing
    try:
        result = run(args)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(SCRATCH, ignore_errors=True)
    args.output.mkdir(parents=True, exist_ok=True)
    json_path = args.output / "compare.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nresults: {json_path}", file=sys.stderr)
    if not args.no_plot:
        from plot import plot

        png = args.output / "compare.png"
        plot(result, png)
        print(f"plot: {png}", file=sys.stderr)
    problems = failure_report(result)
    if problems:
        logs = peers.scratch()
        print("\n" + "!" * 78, file=sys.stderr)
        print("FAILURES: the figures above are not all comparable", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print(f"  logs of every target: {logs}", file=sys.stderr)
        print("!" * 78, file=sys.stderr)
        raise SystemExit(1)
    shutil.rmtree(peers.scratch(), ignore_errors=True)


if __name__ == "__main__":
    main()
