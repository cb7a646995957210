"""Several worker processes sharing the port (``workers > 1``): what ``uvicorn.run(...,
workers=N)`` does, with workers that drain as a single process does (``server._Server``) and
share their metrics. Apart from ``server`` so a single process never imports uvicorn's
supervisors (``multiprocessing``) on its way to the first token.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator

from uvicorn.supervisors import multiprocess

from tokenrelay.server import (
    _Server,
    configure_logging,
    find_gateway,
    log,
    raise_open_files_limit,
    uvicorn_options,
)
from tokenrelay.settings import Settings
from tokenrelay.uvicorn_parts import STARTUP_FAILURE, Config, Server


def run(settings: Settings) -> None:
    """Supervise ``settings.workers`` processes; each builds its own app from the same
    environment."""
    configure_logging(settings.log_level)
    raise_open_files_limit()
    factory = "tokenrelay.app:create_app"
    options = uvicorn_options(settings)
    _run_workers(Config(factory, factory=True, workers=settings.workers, **options))  # type: ignore[arg-type]


class _WorkerProcess(multiprocess.Process):
    """A worker when ``workers > 1``: it runs ``_Server``, so it drains as a single process does,
    and sets up the gateway's logging, which a spawned process starts without."""

    @property
    def server(self) -> Server:
        if self._server is None:
            server = _Server(config=self.config)
            server.owns_process = True
            self._server = server
        return self._server

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        configure_logging(str(self.config.log_level or "info"))
        try:
            super().target(sockets)
        finally:
            # The last counts, so the merged /metrics keeps them after this worker is gone.
            gateway = find_gateway(self.config.loaded_app) if self.config.loaded else None
            if gateway is not None and gateway.metrics is not None:
                try:
                    gateway.metrics.close()
                except Exception:  # the exit goes on; the last periodic snapshot stands
                    log.exception("metrics: cannot write this worker's last snapshot")


def _run_workers(config: Config) -> None:
    """What ``uvicorn.run(..., workers=N)`` does, with ``_WorkerProcess`` as the worker. The
    supervisor SIGTERMs every worker on SIGTERM or SIGINT and waits for them to drain.

    The workers share their metrics through a directory made here (``metrics.shared_dir``,
    passed in the environment each spawned worker reads its settings from)."""
    with _metrics_dir() as shared_dir:
        os.environ[METRICS_DIR_ENV] = shared_dir
        try:
            _supervise(config)
        finally:
            os.environ.pop(METRICS_DIR_ENV, None)


METRICS_DIR_ENV = "TOKENRELAY_METRICS__SHARED_DIR"


@contextlib.contextmanager
def _metrics_dir() -> Iterator[str]:
    """A private directory for the workers' metric snapshots, on a memory file system when
    there is one (``/dev/shm``), removed when the supervisor ends. One set by the operator
    (``TOKENRELAY_METRICS__SHARED_DIR``) is emptied of old snapshots and left in place."""
    given = os.environ.get(METRICS_DIR_ENV)
    if given:
        from tokenrelay.observe.snapshots import clear

        clear(given)  # a previous run's workers: this supervisor's counts start at zero
        yield given
        return
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
    path = tempfile.mkdtemp(prefix="tokenrelay-metrics-", dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _supervise(config: Config) -> None:
    sock = config.bind_socket()
    # The supervisor builds each worker (at start, on a restart, on SIGTTIN) from its module's
    # `Process`, with no hook to give it another class; the swap lasts while it runs.
    original = multiprocess.Process
    multiprocess.Process = _WorkerProcess  # type: ignore[misc]
    try:
        supervisor = multiprocess.Multiprocess(config, sockets=[sock])
        supervisor.run()
    finally:
        multiprocess.Process = original  # type: ignore[misc]
        sock.close()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.exit(3)  # a worker could not start; it has logged why
