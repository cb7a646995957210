"""The parts of uvicorn the server runs (``Config``, ``Server``) without uvicorn's package
``__init__``, which imports uvicorn's own command line: click and, through its reloaders and
supervisors, ``multiprocessing`` (about 15 ms of a 150 ms cold start; BENCHMARKS.md).

Imported first, this module registers the ``uvicorn`` package with its submodules importable
and nothing run but ``Config`` and ``Server`` bound; the first use of a name only ``__init__``
defines (``uvicorn.run``, ``uvicorn.main``, ``__version__``) runs it then, so ``import uvicorn``
keeps working everywhere.
"""

from __future__ import annotations

import importlib.util
import sys


def _register_lazily(name: str) -> None:
    """``name``'s package in ``sys.modules`` with its ``__init__`` run at the first lookup of
    an attribute it does not have yet (a submodule, once imported, is already one)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not a package we can defer: it is imported as usual
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(attribute: str) -> object:
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__dict__["__getattr__"] = complete  # PEP 562: called for a missing attribute
    sys.modules[name] = package


_register_lazily("uvicorn")

from uvicorn.config import STARTUP_FAILURE, Config  # noqa: E402  (after the registration)
from uvicorn.server import Server  # noqa: E402

# What uvicorn's own modules take from the package (``from uvicorn import Config`` in its
# lifespan), the same objects ``__init__`` would bind.
vars(sys.modules["uvicorn"]).setdefault("Config", Config)
vars(sys.modules["uvicorn"]).setdefault("Server", Server)

__all__ = ["STARTUP_FAILURE", "Config", "Server"]
