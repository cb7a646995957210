"""Runs the app under uvicorn with the choices the dependency study measured: uvloop, httptools,
no access log (the gateway logs one line per request itself), no proxy-header trust.

Shutdown (SIGTERM or SIGINT, in every worker): stop accepting, give the streams in flight
``shutdown_grace`` seconds to end, then end the rest with an explicit error in their client's
dialect, close their upstreams, and exit 0. uvicorn on its own would cancel them after the grace,
cutting each stream short with no error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tokenrelay.settings import Settings
from tokenrelay.uvicorn_parts import Config, Server

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
# Seconds after the server is up when the collector is settled (and, under ``tokenrelay serve``,
# enabled again: ``serve_command`` turns it off for the start, whose objects all live on).
_SETTLE_AFTER = 1.0


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


class _Server(Server):
    """Drains the gateway before uvicorn's own shutdown (see the module's docstring).

    uvicorn also re-raises SIGTERM after its graceful shutdown, so the process would end "killed
    by signal"; an orderly, drained stop exits 0 instead, as supervisors expect."""

    # Set where this server owns its process (``run``, a worker): not for one started inside
    # another program (the tests), whose objects must stay collectable.
    owns_process = False
    _collections: FullCollections | None = None
    _settling: asyncio.TimerHandle | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not (self.owns_process and self.started):
            return
        # A full collection of what start-up built takes 5-10 ms: not between the first
        # request and its answer (BENCHMARKS.md, "Cold start").
        self._settling = asyncio.get_running_loop().call_later(_SETTLE_AFTER, self._settle)

    def _settle(self) -> None:
        self._settling = None
        settle_garbage_collector()
        log.debug(
            "garbage collector settled: %d start-up objects frozen, collecting: %s",
            gc.get_freeze_count(),
            gc.isenabled(),
        )
        gateway = find_gateway(self.config.loaded_app)
        if gateway is not None:  # and the oldest generation on a clock (gc_schedule)
            from tokenrelay.gc_schedule import install

            self._collections = install(gateway.settings.gc_full_interval)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._settling is not None:
            self._settling.cancel()
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
    is collected ten times less often. The collector runs again from here if the start had it
    off (``tokenrelay serve``)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)
    gc.enable()


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
    """Serve in this process (``workers = 1``; several: ``tokenrelay.workers.run``)."""
    configure_logging(settings.log_level)
    raise_open_files_limit()
    from tokenrelay.app import create_app

    config = Config(create_app(settings), **uvicorn_options(settings))  # type: ignore[arg-type]
    server = _Server(config)
    server.owns_process = True
    server.run()
    if not server.started:
        sys.exit(3)  # could not bind or start; uvicorn has logged why
