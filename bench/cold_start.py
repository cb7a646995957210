"""Cold start of ``tokenrelay serve``, split in two: spawn to listening, listening to the first
token of a first request. Several source trees are run alternately, so a noisy machine weighs
on each alike (issue 20; results in BENCHMARKS.md, "Cold start").

    .venv/bin/python bench/cold_start.py                        # this tree, configured + demo
    .venv/bin/python bench/cold_start.py --tree base=../base/src --tree new=src --runs 30
    .venv/bin/python bench/cold_start.py --imports              # what serve imports, by cost

"Listening" is the moment a TCP connect to the port succeeds (uvicorn binds after the app's
lifespan start-up); the request is then sent on that same connection, so no second connect or
poll interval sits between the two phases. Bytecode is compiled first for every tree, as a
wheel install has it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BODY = (
    b'{"model":"gpt-5.5","stream":true,"messages":[{"role":"user",'
    b'"content":"Explain server-sent events in one paragraph."}]}'
)
SIM_KNOBS = ["--ttft-ms=20", "--tokens=64", "--token-delay-ms=5"]
POLL_S = 0.001  # between refused connects while the process starts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_bytes(port: int) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        "content-type: application/json\r\nauthorization: Bearer bench\r\n"
        f"content-length: {len(BODY)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + BODY


def first_token(sock: socket.socket) -> None:
    """Read the response until its first text token (a non-empty ``content`` delta)."""
    seen = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"the stream ended before a token: {seen[:400]!r}")
        seen += chunk
        if re.search(rb'"content":"[^"]', seen):
            return


@dataclass
class Run:
    listening_ms: float
    token_ms: float
    cpu_ms: float  # the gateway process's CPU time at its first token (all its threads)

    @property
    def total_ms(self) -> float:
        return self.listening_ms + self.token_ms


def gateway_env(src: str, sim_url: str | None, scratch: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TOKENRELAY_", "OPENAI_", "ANTHROPIC_", "GEMINI_"))
    }
    env["PYTHONPATH"] = src
    env["TOKENRELAY_LOG_LEVEL"] = "warning"
    env["TOKENRELAY_ANONYMOUS_LIMIT"] = "100000000/minute"
    # one database per tree, kept across its runs: a restart, as a deployment sees most often
    env["TOKENRELAY_DATABASE_URL"] = f"sqlite:///{scratch}/cold.db"
    if sim_url is not None:
        env["TOKENRELAY_PROVIDERS__OPENAI__BASE_URL"] = sim_url + "/v1"
        env["TOKENRELAY_PROVIDERS__OPENAI__API_KEY"] = "bench"
        env["TOKENRELAY_PROVIDERS__ANTHROPIC__BASE_URL"] = sim_url
        env["TOKENRELAY_PROVIDERS__ANTHROPIC__API_KEY"] = "bench"
    return env


def cold_start(env: dict[str, str], extra: Sequence[str] = ()) -> Run:
    """One spawn of ``tokenrelay serve`` to the first token."""
    port = free_port()
    command = [sys.executable, *extra, "-m", "tokenrelay", "serve", "--port", str(port)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            sock = socket.socket()
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                if proc.poll() is not None or time.perf_counter() - started > 20:
                    raise RuntimeError("the gateway did not start") from None
                time.sleep(POLL_S)
                continue
            listening = time.perf_counter()
            with sock:
                sock.sendall(request_bytes(port))
                first_token(sock)
            token = time.perf_counter()
            cpu = cpu_ms(proc.pid)
            return Run((listening - started) * 1000, (token - listening) * 1000, cpu)
    finally:
        proc.terminate()
        proc.wait(10)


def cpu_ms(pid: int) -> float:
    """The process's CPU time so far, summed over its threads from ``schedstat`` (nanoseconds;
    ``stat``'s user + system time counts 10 ms ticks, too coarse for a 100 ms start). A thread
    that has ended is not counted: none has on the bench's plain-HTTP upstreams (the CA
    preload thread runs only for TLS ones)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e6


@contextmanager
def simulator() -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenrelay", "simulate", "--port", str(port), *SIM_KNOBS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Series:
    tree: str
    mode: str
    runs: list[Run] = field(default_factory=list)


def summary(values: list[float]) -> str:
    values = sorted(values)
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return f"{statistics.median(values):6.1f} (IQR {q1:.0f}-{q3:.0f}, min {values[0]:.0f})"


def measure(trees: dict[str, str], modes: Sequence[str], runs: int) -> list[Series]:
    for src in trees.values():
        compileall.compile_dir(os.path.join(src, "tokenrelay"), quiet=1)
    scratch = {name: tempfile.mkdtemp(prefix=f"tokenrelay-cold-{name}-") for name in trees}
    series = {(t, m): Series(t, m) for m in modes for t in trees}
    with simulator() as sim_url:
        for index in range(runs + 1):  # the first round warms the page cache and makes the DBs
            for mode in modes:
                for name, src in trees.items():
                    env = gateway_env(src, sim_url if mode == "configured" else None, scratch[name])
                    run = cold_start(env)
                    if index:
                        series[name, mode].runs.append(run)
    return list(series.values())


def report(results: list[Series]) -> str:
    lines = [
        f"load average at the end: {os.getloadavg()[0]:.2f}",
        "| tree | mode | runs | spawn to listening, ms | listening to first token, ms "
        "| spawn to first token, ms | gateway CPU to first token, ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in results:
        lines.append(
            f"| {s.tree} | {s.mode} | {len(s.runs)} "
            f"| {summary([r.listening_ms for r in s.runs])} "
            f"| {summary([r.token_ms for r in s.runs])} "
            f"| {summary([r.total_ms for r in s.runs])} "
            f"| {summary([r.cpu_ms for r in s.runs])} |"
        )
    return "\n".join(lines)


def imports(src: str, mode: str, top: int, repeat: int = 1) -> str:
    """``-X importtime`` of cold starts up to their first token: the heaviest imports, by
    cumulative time, of the whole process (the main thread and the preloading one). Only what
    the log holds when the first token arrives counts (what loads later, such as the price
    table a second after start, is cut off); with ``repeat``, each module's median."""
    scratch = tempfile.mkdtemp(prefix="tokenrelay-cold-imports-")
    compileall.compile_dir(os.path.join(src, "tokenrelay"), quiet=1)
    runs: list[dict[str, tuple[int, int, int]]] = []
    with simulator() as sim_url:
        env = gateway_env(src, sim_url if mode == "configured" else None, scratch)
        cold_start(env)  # make the database, warm the page cache
        for index in range(repeat):
            log = Path(scratch) / f"importtime-{index}.log"
            runs.append(parse_importtime(importtime_run(env, log)))
    print(f"(raw logs: {scratch})", file=sys.stderr)
    names = {name for run in runs for name in run}
    rows = []
    for name in names:
        seen = [run[name] for run in runs if name in run]
        depth = seen[0][2]
        cumulative = statistics.median([r[0] for r in seen])
        own = statistics.median([r[1] for r in seen])
        rows.append((cumulative, own, depth, name))
    total = sum(own for _, own, _, _ in rows)
    header = f"{len(rows)} modules, {total / 1000:.0f} ms of import time in all"
    out = [header + (f" (medians of {repeat} starts)" if repeat > 1 else "")]
    for cumulative, own, depth, name in sorted(rows, reverse=True)[:top]:
        out.append(f"{cumulative / 1000:8.1f} ms cumulative {own / 1000:6.1f} own  {depth} {name}")
    packages: dict[str, float] = {}
    for _, own, _, name in rows:
        packages[name.split(".")[0]] = packages.get(name.split(".")[0], 0) + own
    out.append("own time by top-level package:")
    for name, own in sorted(packages.items(), key=lambda item: -item[1])[:top]:
        out.append(f"{own / 1000:8.1f} ms  {name}")
    return "\n".join(out)


def importtime_run(env: dict[str, str], log: Path) -> str:
    """One ``-X importtime`` start of ``serve``; its log as it stood at the first token."""
    port = free_port()
    command = [sys.executable, "-X", "importtime", "-m", "tokenrelay", "serve", "--port", str(port)]
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError("the gateway did not start") from None
                    time.sleep(POLL_S)
            with sock:
                sock.sendall(request_bytes(port))
                first_token(sock)
            at_first_token = log.stat().st_size  # stderr is unbuffered
        finally:
            proc.terminate()
            proc.wait(10)
    with open(log, "rb") as read:
        return read.read(at_first_token).decode(errors="replace")


def parse_importtime(text: str) -> dict[str, tuple[int, int, int]]:
    """Module -> (cumulative µs, own µs, depth) from an ``-X importtime`` log."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if match:
            rows[match[4]] = (int(match[2]), int(match[1]), len(match[3]) // 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=SRC_DIR, a tree to time (repeat; default: this tree's src)",
    )
    parser.add_argument("--runs", type=int, default=15, help="cold starts per tree and mode")
    parser.add_argument("--mode", choices=["configured", "demo"], action="append")
    parser.add_argument("--imports", action="store_true", help="list serve's heaviest imports")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--repeat", type=int, default=1, help="--imports: starts to take medians of"
    )
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(HERE.parent / "src")}
    trees = {name: os.path.abspath(src) for name, src in trees.items()}
    modes = args.mode or ["configured", "demo"]
    if args.imports:
        for name, src in trees.items():
            for mode in modes:
                print(f"## {name}, {mode}\n{imports(src, mode, args.top, args.repeat)}\n")
        return
    print(report(measure(trees, modes, args.runs)))


if __name__ == "__main__":
    main()
