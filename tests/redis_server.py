"""A throwaway ``redis-server`` for tests: its own loopback port and temporary directory, no
persistence, and a ``stop()`` / ``start()`` pair that brings it back on the same port so a test
can take Redis away mid-test and watch the limiter recover. It is never the machine's shared
server on 6379.

Without a ``redis-server`` binary the tests that need one are skipped with the reason printed;
under ``CI=true`` they fail instead, so CI cannot go green by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest

from tests.services import free_port, unavailable

DEFAULT_BINARY = "/usr/bin/redis-server"


def redis_server_binary() -> str:
    """The binary, or skip (fail under ``CI=true``) with the reason."""
    path = DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else shutil.which("redis-server")
    if path:
        return path
    reason = f"redis-server not found at {DEFAULT_BINARY} or on PATH (apt-get install redis-server)"
    unavailable(reason)


class RedisServer:
    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tokenrelay-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (again) on ``self.port`` and return once it answers PING. The first start of a
        server that picked its own port moves to another port if that one was taken since."""
        if self.running:
            return
        for _ in range(3):
            if self._spawn(timeout):
                self._fixed_port = True  # from now on: this port, so restarts are comparable
                return
            if self._fixed_port:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}: {self._log_tail()}")

    def _spawn(self, timeout: float) -> bool:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return True
            if self.process.poll() is not None:  # e.g. the port was taken
                self.process = None
                return False
            time.sleep(0.01)
        self.stop()
        return False

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (its data is gone: nothing is persisted)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # in case it was paused
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers, the way a
        partitioned or overloaded Redis looks to a client."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-1000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def redis_server_fixture(scope: Literal["function", "module", "session"] = "function") -> Any:
    """A fixture giving a started ``RedisServer``, e.g. ``redis_server = redis_server_fixture()``
    in a test module; a test that stops it should start it again or use a function scope."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[RedisServer]:
        with RedisServer(redis_server_binary()) as server:
            yield server

    return fixture
