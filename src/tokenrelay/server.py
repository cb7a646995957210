"""Runs the app under uvicorn with the choices the dependency study measured: uvloop, httptools,
no access log (the gateway logs one line per request itself), no proxy-header trust.

Shutdown (SIGTERM or SIGINT, in every worker): stop accepting, give the streams in flight
``shutdown_grace`` seconds to end, then end the rest with an explicit error in their client's
dialect, close their upstreams, and exit 0. uvicorn on its own would cancel them after the grace,
cutting each stream short with no error event.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from tokenrelay.settings import Settings

if TYPE_CHECKING:
    from tokenrelay.gateway import Gateway
    from tokenrelay.gc_schedule import FullCollections

log = logging.getLogger("tokenrelay.server")
# After the drain, what uvicorn still waits for anything else open (a page download, a stream
# writing its final error to a slow reader) before it cancels it as a last resort.
_LAST_RESORT_WAIT = 2
# How long the interrupted streams get to write their error event.
_FINISH_WAIT = 2.0
# Allocations between two young-generation collections (CPython's default: 700). A stream
# allocates a few hundred objects that die young; at the default, hundreds of streams in
# flight had their live objects scanned and promoted over and over (see BENCHMARKS.md,
# "Speed, round two").
_GC_YOUNG_THRESHOLD = 7_000


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def uvicorn_options(settings: Settings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        # httptools, bounded: header size and count, header/body read timeouts, a cap on
        # open connections (see tokenrelay.edge.protocol); a string, so spawned workers import it.
        "http": "tokenrelay.edge.protocol:EdgeProtocol",
        # No WebSocket protocol: the gateway serves none (a handshake on a relay path is
        # answered 426 as a plain GET, see tokenrelay.upgrades), and uvicorn's "auto" would
        # import the websockets library at start-up whenever some other package installed it.
        "ws": "none",
        "timeout_keep_alive": settings.http.keep_alive_timeout,
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,  # X-Forwarded-For is trusted only from configured proxies
        "server_header": False,
        # For an app without a gateway; _Server drains the gateway with the same grace itself.
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "log_level": settings.log_level,
    }


def find_gateway(app: object) -> Gateway | None:
    """The gateway behind an ASGI app, through any wrappers that keep the wrapped app in
    ``.app`` (uvicorn's own middlewares, ours, most third-party ones)."""
    from tokenrelay.gateway import Gateway

    for _ in range(32):
        gateway = getattr(getattr(app, "state", None), "gateway", None)
        if isinstance(gateway, Gateway):
            return gateway
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class _Server(uvicorn.Server):
    """Drains the gateway before uvicorn's own shutdown (see the module's docstring).

    uvicorn also re-raises SIGTERM after its graceful shutdown, so the process would end "killed
    by signal"; an orderly, drained stop exits 0 instead, as supervisors expect."""

    # Set where this server owns its process (``run``, a worker): not for one started inside
    # another program (the tests), whose objects must stay collectable.
    owns_process = False
    _collections: FullCollections | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not (self.owns_process and self.started):
            return
        settle_garbage_collector()
        gateway = find_gateway(self.config.loaded_app)
        if gateway is not None:  # and the oldest generation on a clock (gc_schedule)
            from tokenrelay.gc_schedule import install

            self._collections = install(gateway.settings.gc_full_interval)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._collections is not None:
            self._collections.close()
        gateway = find_gateway(self.config.loaded_app)
        if gateway is not None and not self.force_exit:
            log.info("shutting down: no new connections; draining the streams in flight")
            gateway.draining = True  # before anything can yield: no new stream starts from here
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            # As uvicorn does: idle keep-alive connections close now, busy ones after their
            # response, so a client's next request goes to a fresh connection (another instance).
            for connection in list(self.server_state.connections):
                connection.shutdown()
            await gateway.drain(
                gateway.settings.shutdown_grace,
                finish=_FINISH_WAIT,
                cut_short=lambda: self.force_exit,  # a second Ctrl-C
            )
            self.config.timeout_graceful_shutdown = _LAST_RESORT_WAIT
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def settle_garbage_collector() -> None:
    """Once the server is up: what start-up built (modules, settings, the app) moves out of the
    collector's sight for good (``gc.freeze``), so a full collection under load no longer walks
    it (one took 38 ms at c=200, a stall every stream in flight felt), and the young generation
    is collected ten times less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)


class _WorkerProcess(multiprocess.Process):
    """A worker when ``workers > 1``: it runs ``_Server``, so it drains as a single process does,
    and sets up the gateway's logging, which a spawned process starts without."""

    @property
    def server(self) -> uvicorn.Server:
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


def _run_workers(config: uvicorn.Config) -> None:
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


def _supervise(config: uvicorn.Config) -> None:
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


def raise_open_files_limit() -> tuple[int, int] | None:
    """Soft RLIMIT_NOFILE up to the hard one: each stream holds two sockets (client and
    upstream), and the usual soft 1024 caps a process near 500 streams. Returns (old, new)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.info("open files limit %d (the hard limit; raise it to serve more streams)", soft)
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. macOS refuses RLIM_INFINITY
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
        return None
    log.info("open files limit raised from %d to %d (about %d streams)", soft, hard, hard // 2)
    return soft, hard


def run(settings: Settings) -> None:
    configure_logging(settings.log_level)
    raise_open_files_limit()
    options = uvicorn_options(settings)
    if settings.workers > 1:
        # Each worker builds its own app from the same environment.
        factory = "tokenrelay.app:create_app"
        _run_workers(uvicorn.Config(factory, factory=True, workers=settings.workers, **options))  # type: ignore[arg-type]
        return
    from tokenrelay.app import create_app

    config = uvicorn.Config(create_app(settings), **options)  # type: ignore[arg-type]
    server = _Server(config)
    server.owns_process = True
    server.run()
    if not server.started:
        sys.exit(3)  # could not bind or start; uvicorn has logged why
