"""The parts of uvicorn the server runs (``Config``, ``Server``) without uvicorn's package
``__init__``, which imports uvicorn's own command line: click and, through its reloaders and
supervisors, ``multiprocessing`` (about 15 ms of a 150 ms cold start; BENCHMARKS.md).

Imported first, this module registers the ``uvicorn`` package with its submodules importable
and nothing run but ``Config`` and ``Server`` bound (``lean_imports``); the first use of a name
only ``__init__`` defines (``uvicorn.run``, ``uvicorn.main``, ``__version__``) runs it then.
"""

from __future__ import annotations

import sys

from tokenrelay.lean_imports import register_lazily

register_lazily("uvicorn")

from uvicorn.config import STARTUP_FAILURE, Config  # noqa: E402  (after the registration)
from uvicorn.server import Server  # noqa: E402

# What uvicorn's own modules take from the package (``from uvicorn import Config`` in its
# lifespan), the same objects ``__init__`` would bind.
vars(sys.modules["uvicorn"]).setdefault("Config", Config)
vars(sys.modules["uvicorn"]).setdefault("Server", Server)

__all__ = ["STARTUP_FAILURE", "Config", "Server"]
