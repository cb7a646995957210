"""The settings of the HTTP edge (``tokenrelay.edge.protocol``), apart from the protocol so that
reading settings does not import uvicorn."""

from __future__ import annotations

from typing import Annotated

import msgspec


class HttpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Bounds on what a client controls at the HTTP edge (``[http]``, ``TOKENRELAY_HTTP__*``);
    every one applies before the caller is identified, so each has a safe default."""

    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 65_536  # request line + headers
    max_headers: Annotated[int, msgspec.Meta(ge=8)] = 100
    header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # seconds for a whole head
    body_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # seconds for a whole body
    keep_alive_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0  # idle between requests
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1000  # open at once, per process
