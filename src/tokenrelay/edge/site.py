"""What every connection of one uvicorn config shares, found once per config: each connection
holds one reference to it instead of a dozen of its own."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from tokenrelay.http_limits import HttpSettings

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

log = logging.getLogger("uvicorn.error")


class Site:
    """The app, the loop, uvicorn's shared state and the edge's bounds."""

    __slots__ = (
        "app",
        "app_state",
        "asgi",
        "connections",
        "keep_alive_timeout",
        "limit_concurrency",
        "limits",
        "loop",
        "max_head",
        "max_headers",
        "raw_root_path",
        "root_path",
        "server_state",
        "tasks",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = loop
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.app_state = app_state
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.root_path = config.root_path
        self.raw_root_path = config.root_path.encode("ascii")
        self.limit_concurrency = config.limit_concurrency
        self.keep_alive_timeout = config.timeout_keep_alive
        self.limits = _settings_of(config)
        self.max_head = self.limits.max_header_bytes
        self.max_headers = self.limits.max_headers

    @classmethod
    def of(
        cls,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None,
    ) -> Site:
        """The one for this config, server and loop (made on the first connection)."""
        loop = loop or asyncio.get_event_loop()
        site: Site | None = getattr(config, "_tokenrelay_site", None)
        if (
            site is None
            or site.server_state is not server_state
            or site.app_state is not app_state
            or site.loop is not loop
        ):
            site = cls(config, server_state, app_state, loop)
            config._tokenrelay_site = site  # type: ignore[attr-defined]
        return site

    def app_for(self, connection: object) -> Any:
        """The app, or a 503 beyond uvicorn's ``limit_concurrency`` (when one is set)."""
        cap = self.limit_concurrency
        if cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap):
            from uvicorn.protocols.http.flow_control import service_unavailable

            log.warning("Exceeded concurrency limit.")
            return service_unavailable
        return self.app


def _settings_of(config: Config) -> HttpSettings:
    """The gateway's ``http`` settings; defaults for an app that is not a gateway."""
    from tokenrelay.server import find_gateway

    gateway = find_gateway(config.loaded_app)
    return gateway.settings.http if gateway is not None else HttpSettings()
