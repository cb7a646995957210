"""Ten thousand slow streams on one gateway process (issue 20): long generations, one token
every 200-1000 ms, as reasoning models stream. Every stream must complete; the figures are the
gateway's memory per stream over idle, its event-loop lag (its own monitor, from /metrics), its
CPU, and whether the ledger, the metrics and a concurrency limit keep up.

    .venv/bin/python bench/slow_streams.py                  # 10,000 streams (about 3.5 minutes)
    .venv/bin/python bench/slow_streams.py --streams 1000   # the quick check
    .venv/bin/python bench/slow_streams.py --timeline       # and the lag per 5 s of the run
    .venv/bin/python bench/slow_streams.py --quick          # the smoke test's few hundred

Three kinds of process, as in production: the simulator (``tokenrelay simulate``), the gateway
(``tokenrelay serve``, one worker, its ledger in a scratch SQLite file) and ``--clients`` client
processes (``bench/slow_client.py``), each driving its share of the streams on raw asyncio
connections, with the starts spread over ``--ramp`` seconds. The gateway's cap on concurrent
streams per caller is set to exactly ``--streams``; once they are all open, ``--extra`` more
requests are sent and each must be refused (429, concurrency) while none of the others is.

Memory: VmRSS of the gateway after a warm-up (idle), and VmHWM (the peak) at the end; per
stream = (peak - idle) / streams. The open files limit of this process is raised (the hard one
too, where CAP_SYS_RESOURCE allows) so the children inherit room for two sockets per stream.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from run import free_port, process
from run import gateway_env as run_gateway_env
from slow_client import BODY

CLIENT = Path(__file__).parent / "slow_client.py"
WINDOW = 30.0  # seconds of loop lag reported from the moment every stream is open


def raise_open_files(needed: int) -> tuple[int, int]:
    """Soft (and, when permitted, hard) RLIMIT_NOFILE to at least ``needed``."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed, needed
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- the run -----------------------------------------------------------------------------------


def gateway_env(sim_url: str, scratch: str, cap: int) -> dict[str, str]:
    """bench/run.py's gateway (the same providers and gate), with a cap on concurrent streams,
    its own ledger and room for every stream's connection."""
    env = run_gateway_env(sim_url)
    env.update(
        {
            "TOKENRELAY_MAX_CONCURRENT_STREAMS": str(cap),
            "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/bench.db",
            # the edge's cap on open client connections (1000 by default) must fit them all
            "TOKENRELAY_HTTP__MAX_CONNECTIONS": str(cap + 256),
        }
    )
    return env


def vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> dict[str, float]:
    """The /metrics page as {series line without value: value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        page = response.read().decode()
    values: dict[str, float] = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def scrape_into(url: str, into: list[dict[str, float]]) -> None:
    """A scrape appended to ``into``; nothing when the gateway is gone (a short run)."""
    with contextlib.suppress(OSError):
        into.append(scrape(url))


def total(values: dict[str, float], prefix: str, contains: str = "") -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix) and contains in k)


def lag_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """p50 and p99 of the run's lag samples: the upper bound of the bucket that holds them."""
    name = "tokenrelay_event_loop_lag_seconds_bucket"
    bounds = []
    for key, value in after.items():
        if key.startswith(name):
            le = re.search(r'le="([^"]+)"', key)
            assert le is not None
            bounds.append((float(le.group(1)), value - before.get(key, 0.0)))
    bounds.sort()
    count = bounds[-1][1] if bounds else 0
    out = {"samples": count}
    out["max"] = next(
        (bounds[i][0] for i in range(len(bounds)) if bounds[i][1] >= count), float("nan")
    )
    for q in (0.5, 0.99):
        out[f"p{round(q * 100)}"] = next(
            (bound for bound, cumulative in bounds if cumulative >= q * count), float("nan")
        )
    return out


def ledger_rows(scratch: str) -> int:
    with sqlite3.connect(f"{scratch}/bench.db") as db:
        return int(db.execute("SELECT count(*) FROM ledger").fetchone()[0])


def warm_up(url: str, count: int = 20) -> None:
    """Short streams first, so lazy imports and the pools are in the idle figure."""
    for _ in range(count):
        request = urllib.request.Request(
            url + "/v1/chat/completions",
            data=BODY,
            headers={
                "content-type": "application/json",
                "authorization": "Bearer bench",
                "x-sim-tokens": "3",
                "x-sim-token-delay-ms": "1",
                "x-sim-token-delay-max-ms": "0",
                "x-sim-ttft-ms": "1",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def probe_the_cap(url: str, streams: int, extra: int, until: float) -> dict[str, Any]:
    """Once all ``streams`` are open, ``extra`` more requests: each must get 429."""
    while time.monotonic() < until:
        try:
            if total(scrape(url), "tokenrelay_active_streams") >= streams:
                break
        except OSError as exc:  # reported, and the run goes on
            print(f"probe: /metrics failed: {exc!r}", file=sys.stderr)
        time.sleep(0.5)
    else:
        return {"checked": False}
    statuses: collections.Counter[int] = collections.Counter()
    for _ in range(extra):
        request = urllib.request.Request(
            url + "/v1/chat/completions",
            data=BODY,
            headers={"content-type": "application/json", "authorization": "Bearer bench"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses[response.status] += 1
                response.read()
        except urllib.error.HTTPError as exc:
            statuses[exc.code] += 1
    return {"checked": True, "statuses": dict(statuses)}


class Timeline(threading.Thread):
    """/metrics every ``every`` seconds: streams open, the loop's lag and the full collections
    of each interval (where in the run a lag came from)."""

    def __init__(self, url: str, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.rows: list[tuple[float, float, dict[str, float], float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        try:
            last = scrape(self.url)
        except OSError:
            return
        while not self.stop.wait(self.every):
            try:
                now = scrape(self.url)
            except OSError:
                continue
            gc_count = "tokenrelay_gc_full_pause_seconds_count"
            gc_sum = "tokenrelay_gc_full_pause_seconds_sum"
            self.rows.append(
                (
                    time.monotonic() - started,
                    total(now, "tokenrelay_active_streams"),
                    lag_quantiles(last, now),
                    now.get(gc_count, 0.0) - last.get(gc_count, 0.0),
                    now.get(gc_sum, 0.0) - last.get(gc_sum, 0.0),
                )
            )
            last = now

    def show(self) -> None:
        print(
            "| s | streams open | lag p50 / p99 / max (ms, bucket bounds) | full collections (s) |"
        )
        print("| --- | --- | --- | --- |")
        for at, open_, lag, full, paused in self.rows:
            print(
                f"| {at:.0f} | {open_:.0f} | {lag['p50'] * 1000:g} / {lag['p99'] * 1000:g} / "
                f"{lag['max'] * 1000:g} | {full:g} ({paused:.2f}) |"
            )


class Sampler(threading.Thread):
    """The gateway's VmRSS every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self.files = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.peak = max(self.peak, vm(self.pid, "VmRSS"))
                self.files = max(self.files, len(os.listdir(f"/proc/{self.pid}/fd")))
            except (OSError, KeyError):  # the gateway is gone: the run reports why
                return


def run(args: argparse.Namespace) -> int:
    scratch = tempfile.mkdtemp(prefix="tokenrelay-slow-")
    limits = raise_open_files(2 * args.streams + 1024)
    if limits[0] < 2 * args.streams + 64:
        raise SystemExit(
            f"{args.streams} streams need about {2 * args.streams + 64} open files in the gateway "
            f"(a client and an upstream socket each) and the hard limit here is {limits[0]}, "
            f"which only root with CAP_SYS_RESOURCE may raise: run at most "
            f"--streams {(limits[0] - 64) // 2} here, or raise it (ulimit -Hn, LimitNOFILE)"
        )
    sim_port, gw_port = free_port(), free_port()
    sim_url, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    sim = [
        *(sys.executable, "-m", "tokenrelay", "simulate", "--port", str(sim_port)),
        *("--ttft-ms", str(args.ttft_ms), "--tokens", str(args.tokens)),
        *("--token-delay-ms", str(args.delay_ms[0]), "--token-delay-max-ms", str(args.delay_ms[1])),
    ]
    gateway = [sys.executable, "-m", "tokenrelay", "serve", "--port", str(gw_port)]
    env = dict(os.environ)
    gw_env = gateway_env(sim_url, scratch, args.streams)
    if args.gateway_src:  # another tree's gateway (the baseline), the same simulator and clients
        gw_env["PYTHONPATH"] = args.gateway_src
    for setting in args.gateway_env:  # e.g. TOKENRELAY_GC_FULL_INTERVAL=0
        name, _, value = setting.partition("=")
        gw_env[name] = value
    gap = sum(args.delay_ms) / 2 / 1000
    lifetime = args.ttft_ms / 1000 + args.tokens * gap  # a stream's, on average
    steady = args.ramp is None
    if args.ramp is None:  # steady state: streams arrive as fast as they end, no faster
        args.ramp = lifetime
        args.extra = 0  # never all open at once: the cap cannot be probed
    expected = args.ramp + lifetime
    deadline = time.time() + expected * 2 + 30  # every stream ends by then, or counts as failed
    with (
        process(sim, env, sim_url, f"{scratch}/simulator.log") as sim_pid,
        process(gateway, gw_env, url, f"{scratch}/gateway.log") as pid,
    ):
        warm_up(url)
        scrape(url)  # the pages' imports, the first render
        time.sleep(3.0)  # the price table loads a second after start-up, in a thread
        idle = vm(pid, "VmRSS")
        before = scrape(url)
        cpu_before, sim_cpu_before = cpu_seconds(pid), cpu_seconds(sim_pid)
        sampler = Sampler(pid)
        sampler.start()
        timeline = Timeline(url)
        if args.timeline:
            timeline.start()
        started = time.monotonic()
        shares = [
            args.streams // args.clients + (i < args.streams % args.clients)
            for i in range(args.clients)
        ]
        clients = [
            subprocess.Popen(
                [
                    *(sys.executable, str(CLIENT), "--port", str(gw_port)),
                    *("--streams", str(share), "--ramp", str(args.ramp)),
                    *("--deadline", str(deadline), "--tokens", str(args.tokens)),
                ],
                stdout=subprocess.PIPE,
                env=env,
            )
            for share in shares
        ]
        window: list[dict[str, float]] = []  # /metrics at the peak and WINDOW seconds later
        if steady:  # the first streams end as the last start: the peak is the ramp's end
            cap: dict[str, Any] = {}
            time.sleep(max(0.0, started + args.ramp - time.monotonic()))
            window.append(scrape(url))
            peak_open = total(window[0], "tokenrelay_active_streams")
            all_open = vm(pid, "VmRSS")
        else:
            cap = (
                probe_the_cap(url, args.streams, args.extra, started + expected)
                if args.extra
                else {}
            )
            all_open = vm(pid, "VmRSS") if cap.get("checked") else 0  # all open, none ended
            peak_open = float(args.streams)
            if all_open:
                window.append(scrape(url))
        if window:
            later = threading.Timer(WINDOW, scrape_into, (url, window))
            later.daemon = True
            later.start()
        results = [
            json.loads(client.communicate(timeout=deadline - time.time() + 30)[0])
            for client in clients
        ]
        ended = time.monotonic()
        cpu = cpu_seconds(pid) - cpu_before
        sim_cpu = cpu_seconds(sim_pid) - sim_cpu_before
        after_run = scrape(url)  # the lag of the run, before the ledger's wait
        sampler.stop.set()
        timeline.stop.set()
        peak = vm(pid, "VmHWM")
        outcomes: collections.Counter[str] = collections.Counter()
        first_bytes: list[float] = []
        for result in results:
            outcomes.update(result["outcomes"])
            first_bytes += result["first_bytes"]
        completed = outcomes.get("completed", 0)
        # The ledger: every finished request's row, within a bounded delay after the run.
        warm = total(before, "tokenrelay_requests_total")
        # a request refused with a status (a 503 when the breaker opens) has its row too
        answered = sum(n for outcome, n in outcomes.items() if outcome.startswith("status "))
        want = warm + completed + answered + (args.extra if cap.get("checked") else 0)
        ledger_delay = float("nan")
        while time.monotonic() < ended + 60:
            after = scrape(url)
            if total(after, "tokenrelay_ledger_written_rows_total") >= want:
                ledger_delay = time.monotonic() - ended
                break
            time.sleep(0.2)
        rows = ledger_rows(scratch)
    lag = lag_quantiles(before, after_run)
    peak_lag = lag_quantiles(window[0], window[1]) if len(window) == 2 else None
    requests_completed = total(after, "tokenrelay_requests_total", 'outcome="completed"') - total(
        before, "tokenrelay_requests_total", 'outcome="completed"'
    )
    refused = total(after, "tokenrelay_rejections_total", 'reason="concurrency"')
    # a steady ramp never has them all open: its peak is over the most open at once
    per_stream = (peak - idle) * 1024 / (peak_open if steady and peak_open else args.streams)
    failed = args.streams - completed
    print(
        f"streams {args.streams}, {args.tokens} tokens each, one every "
        f"{args.delay_ms[0]:g}-{args.delay_ms[1]:g} ms, starts spread over {args.ramp:g} s "
        f"({args.streams / args.ramp:.0f} new streams/s; a stream lasts {lifetime:.0f} s, so "
        f"{args.streams / lifetime:.0f}/s is the steady state for {args.streams} open); "
        f"{args.clients} client process(es); open files {limits[0]}"
    )
    print(
        f"load average {os.getloadavg()[0]:.2f}; run {ended - started:.1f} s; "
        f"gateway open files at most {sampler.files}"
    )
    client_cpu = sum(result["cpu"] for result in results)
    print(
        f"CPU seconds over the run: gateway {cpu:.1f}, simulator {sim_cpu:.1f}, "
        f"clients {client_cpu:.1f} (2 cores: {2 * (ended - started):.0f})"
    )
    if all_open:
        print(
            f"RSS with {peak_open:.0f} streams open ("
            + ("the ramp's end" if steady else "every stream")
            + f"): {all_open / 1024:.1f} MiB, "
            f"{(all_open - idle) / peak_open:.1f} KiB per stream over idle"
        )
    print()
    print(
        "| streams | completed | failed | first byte p50 / p99 (ms) | idle RSS (MiB) "
        "| peak RSS (MiB) | per stream (KiB) | loop lag p50 / p99 / max (ms) | gateway CPU (s) "
        "| CPU per token (µs) | ledger rows (delay) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    fb = sorted(first_bytes) or [float("nan")]
    p99 = fb[min(len(fb) - 1, int(len(fb) * 0.99))]
    lag_max = total(after_run, "tokenrelay_event_loop_lag_max_seconds")
    per_token = cpu / max(1, completed * args.tokens)
    print(
        f"| {args.streams} | {completed} | {failed} "
        f"| {statistics.median(fb) * 1000:.1f} / {p99 * 1000:.1f} "
        f"| {idle / 1024:.1f} | {peak / 1024:.1f} | {per_stream / 1024:.1f} "
        f"| {lag['p50'] * 1000:g} / {lag['p99'] * 1000:g} / {lag_max * 1000:.1f} "
        f"| {cpu:.1f} | {per_token * 1e6:.0f} | {rows} ({ledger_delay:.1f} s) |"
    )
    print()
    problems = []
    if failed:
        problems.append(f"failed streams: {dict(outcomes)}")
    if requests_completed != completed:
        problems.append(
            f"/metrics counts {requests_completed:g} completed, the clients {completed}"
        )
    if rows != want:
        problems.append(f"ledger rows {rows}, expected {want:g}")
    if args.extra:
        if not cap.get("checked"):
            problems.append("the concurrency cap was not probed: the streams never were all open")
        elif cap["statuses"] != {429: args.extra} or refused != args.extra:
            problems.append(
                f"cap {args.streams}: extra requests got {cap['statuses']}, "
                f"/metrics refused {refused:g}"
            )
        else:
            print(
                f"concurrency cap {args.streams}: all {args.extra} extra requests refused (429), "
                "no admitted stream refused"
            )
    print(
        f"ledger: {rows} rows ({want:g} expected) {ledger_delay:.1f} s after the last stream; "
        f"/metrics completed {requests_completed:g}; loop lag samples {lag['samples']:g}"
    )
    gc_count = total(after_run, "tokenrelay_gc_full_pause_seconds_count") - total(
        before, "tokenrelay_gc_full_pause_seconds_count"
    )
    gc_sum = total(after_run, "tokenrelay_gc_full_pause_seconds_sum") - total(
        before, "tokenrelay_gc_full_pause_seconds_sum"
    )
    if gc_count:
        print(f"full garbage collections in the run: {gc_count:g}, {gc_sum:.2f} s in all")
    if peak_lag is not None:
        print(
            f"loop lag in the {WINDOW:g} s from the moment {peak_open:.0f} were open: "
            f"p50 / p99 / max {peak_lag['p50'] * 1000:g} / {peak_lag['p99'] * 1000:g} / "
            f"{peak_lag['max'] * 1000:g} ms (bucket bounds; {peak_lag['samples']:g} samples)"
        )
    if args.timeline:
        print()
        timeline.show()
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per stream")
    parser.add_argument(
        "--delay-ms",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(200.0, 1000.0),
        help="min,max gap between tokens",
    )
    parser.add_argument("--ttft-ms", type=float, default=500)
    parser.add_argument(
        "--ramp",
        type=lambda s: None if s == "steady" else float(s),
        default=60.0,
        help="seconds over which the starts are spread; 'steady': a stream's lifetime, so new "
        "streams arrive at the rate they end in the steady state (the 60 s default is twice it)",
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument(
        "--extra",
        type=int,
        default=20,
        help="requests over the cap, sent once all streams are open (0: no probe)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="300 streams of 12 tokens (smoke test)"
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="/metrics every 5 s: lag and collections per interval",
    )
    parser.add_argument(
        "--gateway-env", action="append", default=[], help="NAME=value for the gateway (repeat)"
    )
    parser.add_argument("--gateway-src", help="PYTHONPATH of the gateway (a baseline tree's src)")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.tokens, args.ramp, args.ttft_ms = 300, 12, 1.0, 200
    sys.exit(run(args))


if __name__ == "__main__":
    main()
