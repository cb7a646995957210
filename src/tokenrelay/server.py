"""Runs the app under uvicorn with the choices the dependency study measured: uvloop, httptools,
no access log (the gateway logs one line per request itself), no proxy-header trust."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Iterator

import uvicorn

from tokenrelay.settings import Settings


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
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,  # X-Forwarded-For is trusted only from configured proxies
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "log_level": settings.log_level,
    }


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process would end "killed by
    signal"; an orderly, drained stop exits 0 instead, as supervisors expect."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def run(settings: Settings) -> None:
    configure_logging(settings.log_level)
    options = uvicorn_options(settings)
    if settings.workers > 1:
        # Each worker builds its own app from the same environment.
        uvicorn.run("tokenrelay.app:create_app", factory=True, workers=settings.workers, **options)  # type: ignore[arg-type]
        return
    from tokenrelay.app import create_app

    config = uvicorn.Config(create_app(settings), **options)  # type: ignore[arg-type]
    server = _Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # could not bind or start; uvicorn has logged why
