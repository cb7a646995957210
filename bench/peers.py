"""Peer gateways for the side-by-side benchmark (issue 7): LiteLLM's proxy and Portkey's gateway,
each started as its own process on loopback and pointed at the same simulator as tokenrelay.

    .venv/bin/python bench/peers.py --install   # set both up (idempotent; not run by make test)
    .venv/bin/python bench/peers.py --smoke     # + simulator, each peer: text, TTFT, abort, cold

A harness uses ``litellm_proxy(sim_url)`` and ``portkey_gateway(sim_url)``: context managers that
yield a running ``Peer`` (POST ``peer.chat_url`` with ``peer.headers``) and always stop it.

- LiteLLM proxy: ``litellm[proxy]``, pinned with every dependency
  (``peers/litellm-constraints.txt``), in its own virtual environment ``peers/.venv-litellm``;
  config ``peers/litellm.yaml``; one uvicorn worker, which serves in the process that was spawned
  (``Peer.pid``).
- Portkey gateway: ``@portkey-ai/gateway`` from ``peers/portkey/package-lock.json`` (``npm ci``),
  run by node with two preloads: ``fix-immutable-headers.cjs`` (without it, 1.15.2 cannot answer a
  chat completion on Node 20: Portkey issues 1389 / 1550) and ``listen-loopback.cjs`` (it would
  otherwise listen on every interface). Portkey routes per request, from ``Peer.headers``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tokenrelay.dialects.sse import SSEParser

HERE = Path(__file__).resolve().parent / "peers"
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = HERE / ".venv-litellm"
LITELLM_CONFIG = HERE / "litellm.yaml"
LITELLM_CONSTRAINTS = HERE / "litellm-constraints.txt"
PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = HERE / "portkey"
PORTKEY_SCRIPT = PORTKEY_DIR / "node_modules/@portkey-ai/gateway/build/start-server.js"
PORTKEY_PRELOADS = ("listen-loopback.cjs", "fix-immutable-headers.cjs")

MODEL = "gpt-5.5"
BODY = json.dumps(
    {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "Explain server-sent events in one paragraph."}],
    }
).encode()
# What each peer's process must not inherit: keys and endpoints of real providers, databases,
# proxies (all traffic is loopback), and anything that would change how the interpreters start.
_DROP_PREFIXES = ("OPENAI_", "ANTHROPIC_", "LITELLM_", "PORTKEY_", "TOKENRELAY_", "REDIS_", "AWS_")
_DROP = frozenset(
    {
        "DATABASE_URL",
        "DIRECT_URL",
        "NODE_OPTIONS",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "VIRTUAL_ENV",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    }
)


# --- processes ----------------------------------------------------------------------------------


@functools.cache
def scratch() -> Path:
    """A temporary folder, made on first use: the peers' working directory and their logs."""
    return Path(tempfile.mkdtemp(prefix="tokenrelay-peers-"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc (children are found by their parent id)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(parents.get(current, ()))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of these processes (threads included), summed."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def memory_mib(pids: Sequence[int], field_name: str = "VmHWM") -> float:
    """Summed ``VmHWM`` (peak RSS) or ``VmRSS`` of these processes, in MiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1])
    return total / 1024


@dataclass
class Peer:
    """A running peer gateway. ``base_url`` is OpenAI-compatible (POST ``chat_url``); every
    request must carry ``headers``; ``pid`` is the serving process (``pids()`` adds any children,
    so a harness can sum CPU and memory over all of them)."""

    name: str
    version: str
    base_url: str
    headers: dict[str, str]
    pid: int
    log: Path
    forward: Callable[[Mapping[str, str]], dict[str, str]] = field(repr=False)

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"

    def pids(self) -> list[int]:
        return descendants(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def peak_rss_mib(self) -> float:
        return memory_mib(self.pids(), "VmHWM")

    def request_headers(self, upstream: Mapping[str, str] | None = None) -> dict[str, str]:
        """``headers``, plus ``upstream`` (e.g. the simulator's ``x-sim-*`` knobs) set so that
        this peer passes them on to the provider."""
        return {**self.headers, **self.forward(upstream or {})}


@dataclass(frozen=True)
class Launch:
    """How to start one peer on one port."""

    name: str
    version: str
    command: list[str]
    env: dict[str, str]
    base_url: str
    health_url: str
    headers: dict[str, str]
    start_timeout: float
    forward: Callable[[Mapping[str, str]], dict[str, str]]


def _environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROP and not key.startswith(_DROP_PREFIXES)
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def _spawn(launch: Launch, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as sink:
        return subprocess.Popen(
            launch.command,
            env=launch.env,
            cwd=scratch(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its children too
        )


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the process group this module started (its id is the child's pid, which cannot
    be reused before the child is reaped), then SIGKILL if it has not exited within ``grace``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_healthy(launch: Launch, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + launch.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{launch.name} exited with {proc.returncode} while starting:\n{_tail(log)}"
            )
        try:
            with urllib.request.urlopen(launch.health_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"{launch.name} not healthy after {launch.start_timeout:.0f} s:\n{_tail(log)}"
    )


@contextmanager
def run_peer(launch: Launch) -> Iterator[Peer]:
    """Start ``launch``, wait until it answers its health check, yield it, always stop it."""
    log = scratch() / f"{launch.name}-{launch.base_url.rsplit(':', 1)[1].split('/')[0]}.log"
    proc = _spawn(launch, log)
    try:
        _wait_healthy(launch, proc, log)
        yield Peer(
            launch.name,
            launch.version,
            launch.base_url,
            dict(launch.headers),
            proc.pid,
            log,
            launch.forward,
        )
    finally:
        _stop(proc)


# --- LiteLLM ------------------------------------------------------------------------------------


def litellm_launch(sim_url: str, port: int) -> Launch:
    """``litellm --config peers/litellm.yaml`` on 127.0.0.1:``port``, one uvicorn worker (which
    runs in the spawned process), relaying model ``gpt-5.5`` to ``<sim_url>/v1``."""
    master_key = "sk-bench-" + secrets.token_hex(16)  # it refuses to start without one
    env = _environment(
        {
            "SIM_BASE": sim_url + "/v1",
            "LITELLM_MASTER_KEY": master_key,
            "LITELLM_MODE": "PRODUCTION",  # no .env loading
            "LITELLM_TELEMETRY_DISABLED": "true",
            # the files it would otherwise fetch from the internet at start-up: use its copies
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOCAL_BLOG_POSTS": "True",
            "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
            "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
            "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
            "LITELLM_LOG": "ERROR",  # also uvicorn's level: no access log line per request
        }
    )
    command = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(LITELLM_CONFIG),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    base = f"http://127.0.0.1:{port}"
    return Launch(
        name="litellm",
        version=LITELLM_VERSION,
        command=command,
        env=env,
        base_url=base + "/v1",
        health_url=base + "/health/liveliness",
        headers={"content-type": "application/json", "authorization": f"Bearer {master_key}"},
        start_timeout=120,
        # litellm.yaml sets forward_client_headers_to_llm_api: every x-* header is passed on
        forward=dict,
    )


@contextmanager
def litellm_proxy(sim_url: str) -> Iterator[Peer]:
    with run_peer(litellm_launch(sim_url, free_port())) as peer:
        yield peer


def _litellm_installed() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists() or not (LITELLM_VENV / "bin" / "litellm").exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or None


def install_litellm() -> float:
    """Create ``peers/.venv-litellm`` and install ``litellm[proxy]`` at the pinned version with
    its dependencies held by ``peers/litellm-constraints.txt``; nothing if it is there already.
    Returns the seconds spent."""
    started = time.perf_counter()
    have = _litellm_installed()
    if have == LITELLM_VERSION:
        print(f"litellm {have}: already installed in {LITELLM_VENV}")
        return 0.0
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(LITELLM_VENV)])
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"litellm[proxy]=={LITELLM_VERSION}",
            "-c",
            str(LITELLM_CONSTRAINTS),
        ]
    )
    if _litellm_installed() != LITELLM_VERSION:
        raise RuntimeError(f"litellm {LITELLM_VERSION} is not importable in {LITELLM_VENV}")
    elapsed = time.perf_counter() - started
    print(f"litellm {LITELLM_VERSION}: installed in {elapsed:.0f} s")
    return elapsed


# --- Portkey ------------------------------------------------------------------------------------


def portkey_launch(sim_url: str, port: int) -> Launch:
    """``node --require <preloads> start-server.js --port=<port> --headless``; each request names
    its provider and upstream in ``x-portkey-*`` headers (the Authorization header is the
    provider's API key, passed on)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH (Portkey's gateway needs Node 18+)")
    preloads = [arg for name in PORTKEY_PRELOADS for arg in ("--require", str(PORTKEY_DIR / name))]
    command = [node, *preloads, str(PORTKEY_SCRIPT), f"--port={port}", "--headless"]
    base = f"http://127.0.0.1:{port}"

    def forward(upstream: Mapping[str, str]) -> dict[str, str]:
        if not upstream:
            return {}
        return {**upstream, "x-portkey-forward-headers": ",".join(upstream)}

    return Launch(
        name="portkey",
        version=PORTKEY_VERSION,
        command=command,
        env=_environment({}),
        base_url=base + "/v1",
        health_url=base + "/",  # "AI Gateway says hey!"
        headers={
            "content-type": "application/json",
            "authorization": "Bearer bench",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": sim_url + "/v1",
        },
        start_timeout=30,
        forward=forward,
    )


@contextmanager
def portkey_gateway(sim_url: str) -> Iterator[Peer]:
    with run_peer(portkey_launch(sim_url, free_port())) as peer:
        yield peer


def _portkey_installed() -> bool:
    """node_modules matches package-lock.json exactly (npm's hidden lockfile records what it
    installed), and holds the pinned gateway."""
    try:
        wanted = json.loads((PORTKEY_DIR / "package-lock.json").read_text())["packages"]
        have = json.loads((PORTKEY_DIR / "node_modules/.package-lock.json").read_text())["packages"]
        gateway = PORTKEY_DIR / "node_modules/@portkey-ai/gateway/package.json"
        version = json.loads(gateway.read_text())["version"]
    except (OSError, KeyError, ValueError):
        return False

    def versions(packages: dict[str, dict[str, str]]) -> dict[str, str | None]:
        return {name: meta.get("version") for name, meta in packages.items() if name}

    return version == PORTKEY_VERSION and versions(wanted) == versions(have)


def install_portkey() -> float:
    """``npm ci`` in ``peers/portkey`` (exact versions from package-lock.json; install scripts
    off: the gateway's own is a patch-package call with nothing to patch); nothing if
    node_modules already matches. Returns the seconds spent."""
    started = time.perf_counter()
    if _portkey_installed():
        print(f"@portkey-ai/gateway {PORTKEY_VERSION}: already installed in {PORTKEY_DIR}")
        return 0.0
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH")
    _run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=PORTKEY_DIR)
    if not _portkey_installed():
        raise RuntimeError(f"npm ci did not install @portkey-ai/gateway {PORTKEY_VERSION}")
    elapsed = time.perf_counter() - started
    print(f"@portkey-ai/gateway {PORTKEY_VERSION}: installed in {elapsed:.0f} s")
    return elapsed


def _run(command: Sequence[str], cwd: Path | None = None) -> None:
    print("$", " ".join(command), f"(in {cwd})" if cwd else "", flush=True)
    subprocess.run(command, cwd=cwd, check=True, timeout=900)


def install() -> dict[str, float]:
    return {"litellm": install_litellm(), "portkey": install_portkey()}


LAUNCHERS: dict[str, Callable[[str, int], Launch]] = {
    "litellm": litellm_launch,
    "portkey": portkey_launch,
}
PEERS: dict[str, Callable[[str], contextlib.AbstractContextManager[Peer]]] = {
    "litellm": litellm_proxy,
    "portkey": portkey_gateway,
}


# --- cold start ---------------------------------------------------------------------------------


def _first_token(url: str, headers: Mapping[str, str]) -> None:
    request = urllib.request.Request(url, BODY, dict(headers))
    with urllib.request.urlopen(request, timeout=10) as response:
        for line in response:
            if b'"content":"' in line and b'"content":""' not in line:
                return
    raise RuntimeError(f"no text token from {url}")


def cold_start_ms(name: str, sim_url: str, runs: int = 1) -> list[float]:
    """Spawn the peer ``name`` and time, per run, from spawn to the first streamed text token of
    a request sent (and re-sent while refused) through it."""
    times = []
    for _ in range(runs):
        launch = LAUNCHERS[name](sim_url, free_port())
        log = scratch() / f"{name}-cold.log"
        started = time.perf_counter()
        proc = _spawn(launch, log)
        try:
            while True:
                try:
                    _first_token(launch.base_url + "/chat/completions", launch.headers)
                    times.append((time.perf_counter() - started) * 1000)
                    break
                except (OSError, http.client.HTTPException):
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited while starting:\n{_tail(log)}") from None
                    if time.perf_counter() - started > launch.start_timeout:
                        raise RuntimeError(f"{name} gave no token in time:\n{_tail(log)}") from None
                    time.sleep(0.01)
        finally:
            _stop(proc)
    return times


# --- smoke test ---------------------------------------------------------------------------------

SIM_KNOBS = {"ttft_ms": 20, "tokens": 64, "token_delay_ms": 5}


@contextmanager
def simulator(knobs: Mapping[str, float] = SIM_KNOBS) -> Iterator[tuple[str, int]]:
    """``python -m tokenrelay simulate`` on a free loopback port; yields (url, pid)."""
    port = free_port()
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in knobs.items()]
    command = [sys.executable, "-m", "tokenrelay", "simulate", "--port", str(port), *flags]
    url = f"http://127.0.0.1:{port}"
    launch = Launch("simulator", "", command, dict(os.environ), url, url + "/healthz", {}, 20, dict)
    log = scratch() / "simulator.log"
    proc = _spawn(launch, log)
    try:
        _wait_healthy(launch, proc, log)
        yield url, proc.pid
    finally:
        _stop(proc)


@dataclass
class Stream:
    ttft_ms: float
    total_ms: float
    text: str
    data: list[str]
    status: int


async def _stream(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str]) -> Stream:
    started = time.perf_counter()
    first: float | None = None
    parser, pieces, data = SSEParser(), [], []
    async with session.post(url, data=BODY, headers=dict(headers)) as response:
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                data.append(event.data)
                if event.data.startswith("{"):
                    for choice in json.loads(event.data).get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            pieces.append(content)
                            if first is None:
                                first = time.perf_counter()
        status = response.status
    end = time.perf_counter()
    ttft = float("nan") if first is None else (first - started) * 1000
    return Stream(ttft, (end - started) * 1000, "".join(pieces), data, status)


async def _abort(
    session: aiohttp.ClientSession, peer: Peer, sim_url: str
) -> tuple[float | None, str]:
    """Read 5 text tokens of a long stream (500 tokens 20 ms apart), close the connection, and
    wait up to 3 s for the simulator to see its client go. Returns (ms from the client's close to
    the upstream's, or None) and what the simulator reported."""
    async with session.post(sim_url + "/stats/reset") as reset:
        await reset.read()
    headers = peer.request_headers({"x-sim-tokens": "500", "x-sim-token-delay-ms": "20"})
    response = await session.post(peer.chat_url, data=BODY, headers=headers)
    parser, seen = SSEParser(), 0
    async for chunk in response.content.iter_any():
        seen += sum(1 for sse in parser.feed(chunk) if '"content":"' in sse.data)
        if seen >= 5:
            break
    closed = time.monotonic()
    response.close()
    stats: dict[str, object] = {}
    while time.monotonic() - closed < 3:
        async with session.get(sim_url + "/stats") as stats_response:
            stats = await stats_response.json()
        disconnects = stats.get("disconnects")
        if isinstance(disconnects, list) and disconnects:
            last = disconnects[-1]
            note = f"simulator saw the close after {last['tokens_sent']} tokens"
            return (float(last["at_monotonic"]) - closed) * 1000, note
        await asyncio.sleep(0.01)
    return None, (
        f"no disconnect within 3 s of the client's close; the upstream stream was still running"
        f" (simulator: {stats.get('completed')} completed, 0 disconnects)"
    )


@dataclass
class Smoke:
    name: str
    version: str = ""
    start_s: float = float("nan")
    streams_ok: int = 0
    streams: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    same_text: bool = False
    same_data: bool = False
    abort_ms: float | None = None
    abort_note: str = ""
    cold_ms: list[float] = field(default_factory=list)
    peak_rss_mib: float = float("nan")
    error: str = ""


async def _exercise(
    peer: Peer, sim_url: str, reference: Stream | None, n: int, out: Smoke
) -> Stream:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        first = await _stream(session, peer.chat_url, peer.headers)
        if reference is not None:
            out.same_text = first.text == reference.text and bool(first.text)
            out.same_data = _normalised(first.data) == _normalised(reference.data)
        for _ in range(n):
            result = await _stream(session, peer.chat_url, peer.headers)
            out.streams += 1
            if result.status == 200 and result.text == first.text and result.text:
                out.streams_ok += 1
                out.ttft_ms.append(result.ttft_ms)
                out.total_ms.append(result.total_ms)
        out.abort_ms, out.abort_note = await _abort(session, peer, sim_url)
    return first


def _normalised(data: list[str]) -> list[str]:
    """Event payloads without the per-request id and timestamp, to compare two streams' wire
    JSON: equal means the peer passed the simulator's chunks on unchanged."""
    out = []
    for item in data:
        if item.startswith("{"):
            decoded = json.loads(item)
            decoded.pop("id", None)
            decoded.pop("created", None)
            item = json.dumps(decoded, sort_keys=True)
        out.append(item)
    return out


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def smoke(names: Sequence[str], requests: int, cold_runs: int) -> list[Smoke]:
    results = []
    with simulator() as (sim_url, sim_pid):
        print(f"simulator {sim_url} (pid {sim_pid}), knobs {SIM_KNOBS}", flush=True)
        direct = Peer(
            "direct",
            "",
            sim_url + "/v1",
            {"content-type": "application/json", "authorization": "Bearer bench"},
            sim_pid,
            scratch() / "simulator.log",
            dict,
        )
        row = Smoke("direct")
        reference = asyncio.run(_exercise(direct, sim_url, None, requests, row))
        row.same_text = row.same_data = True
        results.append(row)
        for name in names:
            row = Smoke(name)
            results.append(row)
            try:
                started = time.perf_counter()
                with PEERS[name](sim_url) as peer:
                    row.version, row.start_s = peer.version, time.perf_counter() - started
                    print(f"{name} {peer.version}: up in {row.start_s:.1f} s, pids {peer.pids()}")
                    asyncio.run(_exercise(peer, sim_url, reference, requests, row))
                    row.peak_rss_mib = peer.peak_rss_mib()
                row.cold_ms = cold_start_ms(name, sim_url, cold_runs)
            except Exception as error:  # a peer that fails is reported, the others still run
                row.error = f"{type(error).__name__}: {error}"
                print(f"{name}: FAILED: {row.error}", file=sys.stderr)
    return results


def report(results: Sequence[Smoke]) -> str:
    lines = [
        "| path | version | streams OK | TTFT p50 (ms) | total p50 (ms) | same text / same chunks"
        " as direct | abort reaches the simulator | cold start (ms) | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        abort = "no" if row.abort_ms is None else f"yes, {row.abort_ms:.1f} ms after the close"
        cold = ", ".join(f"{ms:.0f}" for ms in row.cold_ms) or "-"
        lines.append(
            f"| {row.name} | {row.version or '-'} | {row.streams_ok}/{row.streams}"
            f" | {_p50(row.ttft_ms):.1f} | {_p50(row.total_ms):.1f}"
            f" | {'yes' if row.same_text else 'NO'} / {'yes' if row.same_data else 'no'}"
            f" | {abort} | {cold} | {_number(row.peak_rss_mib)} |"
        )
    for row in results:
        if row.abort_note:
            lines.append(f"- {row.name} abort: {row.abort_note}")
        if row.error:
            lines.append(f"- {row.name} FAILED: {row.error}")
    return "\n".join(lines)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers, which stop every process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="set up both peers, then exit")
    parser.add_argument("--smoke", action="store_true", help="install, then smoke-test each peer")
    parser.add_argument("--peers", default="litellm,portkey", help="which peers (comma-separated)")
    parser.add_argument("--requests", type=int, default=5, help="streams per path in --smoke")
    parser.add_argument("--cold-runs", type=int, default=1, help="cold starts per peer in --smoke")
    args = parser.parse_args()
    if not (args.install or args.smoke):
        parser.error("give --install or --smoke")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    names = [name for name in args.peers.split(",") if name]
    for name in names:
        if name not in PEERS:
            parser.error(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    installers = {"litellm": install_litellm, "portkey": install_portkey}
    for name in names:
        installers[name]()
    if args.smoke:
        results = smoke(names, args.requests, args.cold_runs)
        print(report(results))
        shutil.rmtree(scratch(), ignore_errors=True)
        if any(row.error or row.streams_ok != row.streams or not row.same_text for row in results):
            raise SystemExit("smoke test: some peer failed (see above)")


if __name__ == "__main__":
    main()
