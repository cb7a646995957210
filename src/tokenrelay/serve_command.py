"""``tokenrelay serve`` without click: its options (one table, from which ``commands`` builds the
click command too), a reader for their well-formed uses, and what the command does.

A gateway's start should not pay for the command line of the other commands (click is
10-15 ms of imports, a tenth of the cold start; BENCHMARKS.md, "Cold start"). Anything this
reader does not take as given (help, an unknown option, a value click would refuse) goes to
click, so help texts and errors stay click's own.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from tokenrelay.settings import Settings

Kind = Literal["text", "int", "file", "choice"]


class Option(NamedTuple):
    """One option of ``serve``: ``--flag VALUE``; ``kind`` is how click checks the value
    (``file``: a path that may not be a directory). A named tuple: ``dataclasses`` would
    import ``inspect`` for every command."""

    flag: str
    dest: str
    kind: Kind
    help: str | None = None
    choices: tuple[str, ...] = ()


OPTIONS = (
    Option("--host", "host", "text", "Address to listen on (default 127.0.0.1)."),
    Option("--port", "port", "int", "Port to listen on (default 8787)."),
    Option("--config", "config", "file", "TOML config file."),
    Option("--workers", "workers", "int", "Worker processes sharing the port (default 1)."),
    Option("--log-level", "log_level", "choice", choices=("debug", "info", "warning", "error")),
)
_BY_FLAG = {option.flag: option for option in OPTIONS}


def parse(argv: list[str]) -> dict[str, Any] | None:
    """``serve``'s options from the command line's arguments when it is ``serve`` with only
    ``--flag value`` or ``--flag=value`` of the options above, each value one click accepts
    and converts the same way; else None, and click handles the command line."""
    if not argv or argv[0] != "serve" or sys.platform == "win32" or _completing():
        return None
    given: dict[str, Any] = {option.dest: None for option in OPTIONS}
    rest = argv[1:]
    while rest:
        flag, has_value, value = rest.pop(0).partition("=")
        option = _BY_FLAG.get(flag)
        if option is None:
            return None
        if not has_value:
            if not rest:
                return None
            value = rest.pop(0)
        if value.startswith("-"):  # click may take it as the value or refuse it: its call
            return None
        converted = _convert(option, value)
        if converted is None:
            return None
        given[option.dest] = converted  # repeated: the last one counts, as in click
    return given


def _convert(option: Option, value: str) -> str | int | None:
    """The value as click's type gives it, or None where click would refuse it."""
    if option.kind == "int":
        try:
            return int(value)  # what click.INT does
        except ValueError:
            return None
    if option.kind == "choice":
        return value if value in option.choices else None
    exists = option.kind == "file" and os.path.exists(value)
    if exists and (os.path.isdir(value) or not os.access(value, os.R_OK)):
        return None  # click.Path(dir_okay=False) refuses a directory or an unreadable file
    return value


def _completing() -> bool:
    """A shell asking click for completions (``_TOKENRELAY_COMPLETE=...``)."""
    return any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ)


def settings_for(
    host: str | None = None,
    port: int | None = None,
    config: str | None = None,
    workers: int | None = None,
    log_level: str | None = None,
) -> Settings:
    """The settings ``serve`` runs with: the options over the environment and the config file.
    Raises ``settings.ConfigError`` for settings it cannot use (the command reports it).

    The collector goes off here, for the whole start: it allocates some 100,000 objects that
    all live as long as the process, and its 70-odd passes over them while modules import
    cost 10-20 ms of the cold start. The server collects once and freezes them, a second
    after it is up (``server._Server``)."""
    gc.disable()
    # Options travel as environment variables so every worker process reads the same settings.
    for name, value in (
        ("HOST", host),
        ("PORT", port),
        ("WORKERS", workers),
        ("LOG_LEVEL", log_level),
    ):
        if value is not None:
            os.environ[f"TOKENRELAY_{name}"] = str(value)
    if config:
        os.environ["TOKENRELAY_CONFIG"] = os.path.abspath(config)
    from tokenrelay.settings import load

    return load()


def serve(settings: Settings) -> None:
    """Run the gateway. With no provider keys set it runs in demo mode on built-in simulators."""
    if calls_tls_upstreams(settings):
        _load_ca_store_in_background()
    if settings.workers > 1:
        gc.enable()  # a supervisor: each worker starts afresh
        from tokenrelay.workers import run as supervise

        supervise(settings)
    else:
        from tokenrelay.server import run

        run(settings)


def calls_tls_upstreams(settings: Settings) -> bool:
    """Whether this process will call a provider over HTTPS (a default base URL is); with
    several workers it only supervises them (each spawned worker starts afresh)."""
    if settings.demo_mode or settings.workers > 1:
        return False
    providers = settings.providers
    return any(
        not (providers[name].base_url or "https:").startswith("http:")
        for name in settings.configured_providers()
    )


def _load_ca_store_in_background() -> None:
    """Load the CA store while the main thread imports and starts the server: loading
    certificates runs mostly without the GIL, so on a second core it is off the path to the
    first token, which would otherwise pay for it at its first TLS connect.

    Only that, and only when an upstream uses TLS: a thread that imported modules too (the
    dialects, as it once did) or loaded certificates nobody uses made the start slower, as
    the two threads contend for the GIL and the import lock (BENCHMARKS.md, "Cold start")."""
    import threading

    def preload() -> None:
        from tokenrelay.http_client import default_ssl_context

        default_ssl_context()

    threading.Thread(target=preload, name="preload", daemon=True).start()
