"""``aiohttp.web``, the simulator's server, without aiohttp's package ``__init__``, which imports
the client too: its connector loads two SSL contexts at import, a third of what ``aiohttp.web``
cost the demo mode's start (BENCHMARKS.md, "Cold start"). The server's code is aiohttp's own,
unchanged, so the simulator's bytes on the wire are too (``Server: ... aiohttp/<version>``
included: the version is read from ``__init__``'s source).
"""

from __future__ import annotations

from tokenrelay.lean_imports import register_lazily, source_version

version = source_version("aiohttp")
if version is not None:  # else aiohttp is imported as usual
    register_lazily("aiohttp", __version__=version)

from aiohttp import web  # noqa: E402  (after the registration)

__all__ = ["web"]
