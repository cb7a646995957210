"""The benchmark of BENCHMARKS.md: the same streams sent straight to the simulator and through
tokenrelay, interleaved round by round in one run, so machine drift hits both sides alike.

    make bench                      # or: .venv/bin/python bench/run.py [--quick]
    .venv/bin/python bench/run.py --front responses   # also the /v1/responses front, same rounds

The simulator and the gateway run as separate processes (as in production); this process is the
client. Figures are quoted as the gateway's added time and as a ratio to the direct connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
import msgspec

from tokenrelay.dialects.sse import SSEParser

SCRATCH = tempfile.mkdtemp(prefix="tokenrelay-bench-")
SIM_KNOBS = {"ttft_ms": 20, "tokens": 64, "token_delay_ms": 5}
BODY = msgspec.json.encode(
    {
        "model": "gpt-5.5",
        "stream": True,
        "messages": [{"role": "user", "content": "Explain server-sent events in one paragraph."}],
    }
)
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}


@dataclass(frozen=True)
class Front:
    """One API a client streams from: where, what it posts, and the bytes that mark one text
    token in the stream (``empty``: a marker that is not one, counted off)."""

    path: str
    body: bytes
    marker: bytes
    empty: bytes | None = None


CHAT = Front("/v1/chat/completions", BODY, b'"content":"', b'"content":""')
# The same question on the Responses API: the gateway serves it from the same Chat Completions
# upstream (the simulator), so its added time is the front's own cost next to CHAT's.
RESPONSES = Front(
    "/v1/responses",
    msgspec.json.encode(
        {"model": "gpt-5.5", "stream": True, "input": msgspec.json.decode(BODY)["messages"]}
    ),
    b'"type":"response.output_text.delta"',
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"{url} did not come up")


@contextmanager
def process(
    command: Sequence[str], env: dict[str, str], url: str, log: str | None = None
) -> Iterator[int]:
    """A server child, its output to ``log`` (a pipe nobody reads would block it); on a failure
    the log's last lines are printed."""
    out = open(log or os.devnull, "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc)
        yield proc.pid
    except BaseException:
        if log is not None:
            with open(log, errors="replace") as text:
                print(
                    f"--- {command[3]} log (last lines) ---",
                    *text.readlines()[-30:],
                    sep="",
                    file=sys.stderr,
                )
        raise
    finally:
        out.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def simulator_command(port: int) -> list[str]:
    knobs = [f"--{name.replace('_', '-')}={value}" for name, value in SIM_KNOBS.items()]
    return [sys.executable, "-m", "tokenrelay", "simulate", "--port", str(port), *knobs]


def gateway_env(sim_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENRELAY_", "OPENAI_"))}
    env.pop("ANTHROPIC_API_KEY", None)
    env.update(
        {
            "TOKENRELAY_PROVIDERS__OPENAI__BASE_URL": sim_url + "/v1",
            "TOKENRELAY_PROVIDERS__OPENAI__API_KEY": "bench",
            "TOKENRELAY_PROVIDERS__OPENAI__FORWARD_HEADERS": '["x-sim-"]',
            "TOKENRELAY_PROVIDERS__ANTHROPIC__BASE_URL": sim_url,
            "TOKENRELAY_PROVIDERS__ANTHROPIC__API_KEY": "bench",
            "TOKENRELAY_LOG_LEVEL": "warning",
            # The gate runs as in production (identity, the in-process limiter, the screen);
            # only the anonymous limit is raised, as the load comes from one address.
            "TOKENRELAY_ANONYMOUS_LIMIT": "100000000/minute",
            "TOKENRELAY_DATABASE_URL": f"sqlite:///{SCRATCH}/bench.db",
        }
    )
    return env


def gateway_command(port: int) -> list[str]:
    return [sys.executable, "-m", "tokenrelay", "serve", "--port", str(port)]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- load -------------------------------------------------------------------------------------


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    streams: int = 0
    cpu: float = 0.0
    failures: int = 0


async def one_stream(
    session: aiohttp.ClientSession,
    url: str,
    sample: Sample,
    headers: dict[str, str],
    front: Front = CHAT,
) -> None:
    """Counts text chunks by scanning bytes rather than parsing JSON, so the client costs the
    2-core machine as little CPU as possible (it is the same code for both paths)."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    tail = b""
    marker, empty = front.marker, front.empty
    keep = len(empty or marker) - 1
    async with session.post(url, data=front.body, headers=headers) as response:
        if response.status != 200:
            sample.failures += 1
            await response.read()
            return
        async for chunk in response.content.iter_any():
            data = tail + chunk
            found = data.count(marker) - (data.count(empty) if empty else 0)
            if found:
                tokens += found
                if first is None:
                    first = time.perf_counter()
            tail = data[-keep:]
            if tail.count(marker):  # counted already; keep only what cannot complete one
                tail = b""
    end = time.perf_counter()
    if first is None or tokens != SIM_KNOBS["tokens"]:
        sample.failures += 1
        return
    sample.ttft.append((first - started) * 1000)
    sample.total.append((end - started) * 1000)
    sample.tokens += tokens


async def run_batch(
    session: aiohttp.ClientSession,
    url: str,
    streams: int,
    concurrency: int,
    sample: Sample,
    front: Front = CHAT,
    headers: dict[str, str] = HEADERS,
) -> None:
    """``streams`` streams, ``concurrency`` at a time. The first wave's starts are spread over
    one stream's length (a ramp-up, as load tools do), so equal-length streams do not stay
    synchronised in waves that all start on the same millisecond, which no real traffic does."""
    gate = asyncio.Semaphore(concurrency)
    ramp = (SIM_KNOBS["ttft_ms"] + SIM_KNOBS["tokens"] * SIM_KNOBS["token_delay_ms"]) / 1000
    rng = random.Random(7)  # the same schedule for both paths
    spread = concurrency > 1
    delays = [rng.uniform(0, ramp) if spread and i < concurrency else 0.0 for i in range(streams)]

    async def guarded(delay: float) -> None:
        async with gate:
            await asyncio.sleep(delay)
            await one_stream(session, url, sample, headers, front)

    started = time.perf_counter()
    await asyncio.gather(*(guarded(delay) for delay in delays))
    sample.wall += time.perf_counter() - started
    sample.streams += streams


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def compare(
    direct_url: str,
    gateway_url: str,
    gateway_pid: int,
    levels: Sequence[int],
    rounds: int,
    *,
    also: Front | None = None,
    headers: dict[str, str] = HEADERS,
) -> list[tuple[int, Sample, Sample, Sample | None]]:
    """Per level: direct, through the gateway's Chat Completions front, and (``also``) through
    another front of the gateway, interleaved round by round."""
    results = []
    # keep-alive below the gateway's 5 s, so the client never reuses a connection it just closed
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    fronts: list[tuple[str, Front]] = [(direct_url, CHAT), (gateway_url + CHAT.path, CHAT)]
    if also is not None:
        fronts.append((gateway_url + also.path, also))
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm every path (connection pools, imports on the gateway's first request)
        for url, front in fronts:
            await run_batch(session, url, 20, 10, Sample(), front, headers)
        for concurrency in levels:
            streams = max(20, concurrency * 2)
            direct, gateway = Sample(), Sample()
            other = Sample() if also is not None else None
            for _ in range(rounds):
                await run_batch(session, direct_url, streams, concurrency, direct)
                cpu_before = cpu_seconds(gateway_pid)
                await run_batch(session, fronts[1][0], streams, concurrency, gateway, CHAT, headers)
                gateway.cpu += cpu_seconds(gateway_pid) - cpu_before
                if other is not None and also is not None:
                    cpu_before = cpu_seconds(gateway_pid)
                    url = fronts[2][0]
                    await run_batch(session, url, streams, concurrency, other, also, headers)
                    other.cpu += cpu_seconds(gateway_pid) - cpu_before
            results.append((concurrency, direct, gateway, other))
            print(f"  c={concurrency}: done", file=sys.stderr)
    return results


async def abort_delay_ms(gateway_url: str, sim_url: str) -> float:
    """Client closes after 5 tokens; how long until the simulator sees its upstream close."""
    async with aiohttp.ClientSession() as session:
        await session.post(sim_url + "/stats/reset")
        headers = {**HEADERS, "x-sim-tokens": "500", "x-sim-token-delay-ms": "20"}
        response = await session.post(gateway_url, data=BODY, headers=headers)
        parser, seen = SSEParser(), 0
        async for chunk in response.content.iter_any():
            seen += sum(1 for sse in parser.feed(chunk) if '"content"' in sse.data)
            if seen >= 5:
                break
        closed = time.monotonic()
        response.close()
        for _ in range(200):
            async with session.get(sim_url + "/stats") as stats_response:
                stats = await stats_response.json()
            if stats["disconnects"]:
                return (stats["disconnects"][-1]["at_monotonic"] - closed) * 1000
            await asyncio.sleep(0.01)
    return float("nan")


def compile_bytecode() -> None:
    """Compile tokenrelay's modules as a wheel install does, so cold start is measured as a
    deployment sees it even where PYTHONDONTWRITEBYTECODE=1 keeps Python from caching them."""
    import compileall

    import tokenrelay

    compileall.compile_dir(os.path.dirname(tokenrelay.__file__), quiet=1)


def cold_start_ms(sim_url: str, runs: int) -> list[float]:
    """Spawn ``tokenrelay serve`` to the first streamed token of a request through it."""
    compile_bytecode()
    times = []
    for _ in range(runs):
        port = free_port()
        started = time.perf_counter()
        proc = subprocess.Popen(
            gateway_command(port),
            env=gateway_env(sim_url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    request = urllib.request.Request(
                        f"http://127.0.0.1:{port}/v1/chat/completions", BODY, HEADERS
                    )
                    with urllib.request.urlopen(request, timeout=5) as response:
                        for line in response:
                            if b'"content":"' in line and b'"content":""' not in line:
                                break
                        times.append((time.perf_counter() - started) * 1000)
                        break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - started > 20:
                        raise SystemExit("the gateway did not start") from None
                    time.sleep(0.005)
        finally:
            proc.terminate()
            proc.wait(10)
    return times


# --- report -----------------------------------------------------------------------------------


def report(
    results: list[tuple[int, Sample, Sample, Sample | None]],
    peak_mib: float,
    abort_ms: float,
    cold: list[float],
) -> str:
    lines = [
        "| concurrency | streams | TTFT p50 direct / gateway (ms) | added p50 | TTFT p99 direct /"
        " gateway (ms) | added p99 | total p50 ratio | streams/s direct / gateway |"
        " gateway CPU s per 1k tokens | failures |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency, direct, gateway, _ in results:
        d50, g50 = pct(direct.ttft, 50), pct(gateway.ttft, 50)
        d99, g99 = pct(direct.ttft, 99), pct(gateway.ttft, 99)
        ratio = pct(gateway.total, 50) / pct(direct.total, 50)
        cpu_per_k = gateway.cpu / max(1, gateway.tokens) * 1000
        lines.append(
            f"| {concurrency} | {gateway.streams} | {d50:.1f} / {g50:.1f} | {g50 - d50:+.2f} ms"
            f" | {d99:.1f} / {g99:.1f} | {g99 - d99:+.2f} ms | {ratio:.3f}"
            f" | {direct.streams / direct.wall:.0f} / {gateway.streams / gateway.wall:.0f}"
            f" | {cpu_per_k:.3f} | {direct.failures} / {gateway.failures} |"
        )
    if any(other is not None for *_, other in results):
        lines += ["", *fronts_table(results)]
    lines += [
        "",
        f"- gateway peak RSS: {peak_mib:.1f} MiB",
        f"- abort: the simulator saw the upstream close {abort_ms:.1f} ms after the client closed",
        f"- cold start (spawn to first token), median of {len(cold)}: "
        f"{statistics.median(cold):.0f} ms (min {min(cold):.0f}, max {max(cold):.0f})",
    ]
    return "\n".join(lines)


def fronts_table(results: list[tuple[int, Sample, Sample, Sample | None]]) -> list[str]:
    """The two fronts of the gateway side by side: time to first token added to the direct
    connection by /v1/chat/completions and by /v1/responses (same upstream, same rounds)."""
    lines = [
        "| concurrency | streams per front | TTFT p50 direct / chat / responses (ms)"
        " | added p50 chat / responses | TTFT p99 direct / chat / responses (ms)"
        " | added p99 chat / responses | gateway CPU s per 1k tokens chat / responses"
        " | failures chat / responses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency, direct, chat, other in results:
        if other is None:
            continue
        d50, c50, r50 = (pct(s.ttft, 50) for s in (direct, chat, other))
        d99, c99, r99 = (pct(s.ttft, 99) for s in (direct, chat, other))
        cpu = [s.cpu / max(1, s.tokens) * 1000 for s in (chat, other)]
        lines.append(
            f"| {concurrency} | {other.streams} | {d50:.1f} / {c50:.1f} / {r50:.1f}"
            f" | {c50 - d50:+.2f} / {r50 - d50:+.2f} ms | {d99:.1f} / {c99:.1f} / {r99:.1f}"
            f" | {c99 - d99:+.2f} / {r99 - d99:+.2f} ms | {cpu[0]:.3f} / {cpu[1]:.3f}"
            f" | {chat.failures} / {other.failures} |"
        )
    return lines


def bench_key(env: dict[str, str]) -> str:
    """A tokenrelay API key in the gateway's database: stored responses need an identified
    caller, so with one the Responses front does all its work (the row written after the
    stream). Both fronts send it."""
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenrelay",
            "keys",
            "create",
            "--user",
            "bench",
            "--format",
            "json",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    secret: str = msgspec.json.decode(output)["secret"]
    return secret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--levels", default="1,50,200", help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a TOKENRELAY_* setting for the gateway, e.g. TOKENRELAY_METRICS__ENABLED=false",
    )
    parser.add_argument(
        "--front",
        choices=["responses"],
        help="also measure this front of the gateway in the same rounds, against the same"
        " simulator (with an API key, so responses are stored)",
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    rounds = 1 if args.quick else args.rounds
    sim_port, gateway_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    env = gateway_env(sim_url)
    env.update(setting.split("=", 1) for setting in args.set)
    headers = HEADERS
    if args.front == "responses":
        headers = {**HEADERS, "authorization": "Bearer " + bench_key(env)}
    print(f"simulator: {SIM_KNOBS}; levels {levels}; {rounds} rounds", file=sys.stderr)
    with (
        process(simulator_command(sim_port), env, sim_url),
        process(gateway_command(gateway_port), env, gateway_url) as gateway_pid,
    ):
        results = asyncio.run(
            compare(
                sim_url + "/v1/chat/completions",
                gateway_url,
                gateway_pid,
                levels,
                rounds,
                also=RESPONSES if args.front == "responses" else None,
                headers=headers,
            )
        )
        peak = peak_rss_mib(gateway_pid)
        abort = asyncio.run(abort_delay_ms(gateway_url + "/v1/chat/completions", sim_url))
        cold = cold_start_ms(sim_url, 2 if args.quick else 7)
    print(report(results, peak, abort, cold))
    if any(
        direct.failures or gateway.failures or (other is not None and other.failures)
        for _, direct, gateway, other in results
    ):
        raise SystemExit("some streams failed; the figures above are not comparable")


if __name__ == "__main__":
    main()
