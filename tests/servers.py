"""Real servers for tests: the gateway in-process under uvicorn on a loopback port, or as a
``tokenrelay serve`` child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import msgspec
import uvicorn

from tests.services import free_port as free_port
from tokenrelay.app import Dispatch, Gateway, create_app
from tokenrelay.records import StreamRecord
from tokenrelay.server import _Server
from tokenrelay.settings import load


class _QuietServer(uvicorn.Server):
    """Leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _QuietDrainingServer(_Server):
    """``tokenrelay serve``'s server (it drains the gateway on shutdown), minus the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


_SCRATCH = tempfile.mkdtemp(prefix="tokenrelay-tests-")  # removed with the OS's temp files


class RunningGateway:
    def __init__(self, app: Dispatch, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.records: list[StreamRecord] = []
        self.gateway: Gateway = app.state.gateway
        self.gateway.listeners.add(self.records.append)
        self.server: uvicorn.Server | None = None

    async def wait_record(self, request_id: str, within: float = 5.0) -> StreamRecord:
        """The record of a request, once the gateway has finished with it."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for record in self.records:
                if record.request_id == request_id:
                    return record
            await asyncio.sleep(0.005)
        raise AssertionError(f"no record for request {request_id}")


@contextlib.asynccontextmanager
async def gateway_server(
    environ: Mapping[str, str], *, drains: bool = False
) -> AsyncIterator[RunningGateway]:
    """A gateway built from ``environ`` exactly as ``tokenrelay serve`` would build it; with
    ``drains``, under the server ``tokenrelay serve`` runs, so ``running.server.should_exit = True``
    starts the shutdown a signal would."""
    settings = load(environ=environ)
    app = create_app(settings)
    # IPPROTO_TCP named, as a listener of uvicorn's own has it: asyncio sets TCP_NODELAY on
    # accepted connections only then (else each small answer waits ~40 ms for delayed ACKs).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        http="tokenrelay.edge.protocol:EdgeProtocol",  # as `tokenrelay serve`: the edge's bounds
        ws="none",  # as `tokenrelay serve`: a WebSocket handshake reaches the app as a GET
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # as `tokenrelay serve`: X-Forwarded-For is the gate's business
    )
    server = (_QuietDrainingServer if drains else _QuietServer)(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    running = RunningGateway(app, port)
    running.server = server
    try:
        yield running
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def clean_environ(**extra: str) -> dict[str, str]:
    """The process environment without provider keys, base URLs or TOKENRELAY_* settings."""
    drop = ("ANTHROPIC_", "OPENAI_", "AZURE_OPENAI_", "TOKENRELAY_", "GEMINI_", "GOOGLE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A bench/ script run to its end in a clean environment (its smoke mode, as a test runs it),
    its output captured."""
    return subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_environ(),
    )


class ServeProcess:
    """``tokenrelay serve`` as a child process, waited on until /healthz answers."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tokenrelay", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.started = time.monotonic()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tokenrelay serve exited: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("tokenrelay serve did not become ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return self.proc.returncode, output


ROUTE_SYSTEM = "You are the support assistant of Acme."


def gateway_environ(sim_url: str) -> dict[str, str]:
    """Test routes over the simulator: one per provider, one that fails over, one rate limited,
    one whose provider is unreachable, one failing mid-stream, one slow enough to abort."""
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    flaky = [
        {"provider": "anthropic", "model": "claude-sonnet-5-5", "headers": {"x-sim-fault": "529"}},
        {"provider": "openai", "model": "gpt-5.5"},
    ]
    limited = [
        {"provider": "anthropic", "model": "claude-sonnet-5-5", "headers": {"x-sim-fault": "429"}},
    ]
    midfail = [
        {"provider": "openai", "model": "gpt-5.5", "headers": {"x-sim-fault": "error_after"}},
    ]
    slow = [
        {
            "provider": "anthropic",
            "model": "claude-sonnet-5-5",
            "headers": {"x-sim-tokens": "500", "x-sim-token-delay-ms": "20"},
        },
    ]
    return {
        "TOKENRELAY_PROVIDERS__ANTHROPIC__BASE_URL": sim_url,
        "TOKENRELAY_PROVIDERS__ANTHROPIC__API_KEY": "test-anthropic-key",
        "TOKENRELAY_PROVIDERS__ANTHROPIC__FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_PROVIDERS__OPENAI__BASE_URL": sim_url + "/v1",
        "TOKENRELAY_PROVIDERS__OPENAI__API": "chat",  # the tests' Chat Completions upstream
        "TOKENRELAY_PROVIDERS__OPENAI__API_KEY": "test-openai-key",
        "TOKENRELAY_PROVIDERS__OPENAI__FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_PROVIDERS__DEAD__KIND": "openai",
        "TOKENRELAY_PROVIDERS__DEAD__BASE_URL": dead,
        "TOKENRELAY_PROVIDERS__DEAD__CONNECT_TIMEOUT": "2",
        "TOKENRELAY_ROUTES__DEFAULT__SYSTEM": ROUTE_SYSTEM,
        "TOKENRELAY_ROUTES__AN__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__OA__TARGETS": "openai:gpt-5.5",
        "TOKENRELAY_ROUTES__OPEN__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__OPEN__ALLOW_CLIENT_SYSTEM": "true",
        "TOKENRELAY_ROUTES__FLAKY__TARGETS": msgspec.json.encode(flaky).decode(),
        "TOKENRELAY_ROUTES__LIMITED__TARGETS": msgspec.json.encode(limited).decode(),
        "TOKENRELAY_ROUTES__DOWN__TARGETS": "dead:some-model",
        "TOKENRELAY_ROUTES__MIDFAIL__TARGETS": msgspec.json.encode(midfail).decode(),
        "TOKENRELAY_ROUTES__SLOW__TARGETS": msgspec.json.encode(slow).decode(),
        "TOKENRELAY_MAX_BODY_BYTES": "4096",
        # Tests send many requests from one address; the limits have their own tests.
        "TOKENRELAY_ANONYMOUS_LIMIT": "100000/minute",
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{_SCRATCH}/keys.db",
        # Faults here are injected per target, so one provider:model fails on one route and
        # works on the next; a shared breaker would trip across tests. test_failover enables it.
        "TOKENRELAY_BREAKER__ENABLED": "false",
    }
