"""A package registered with its submodules importable and its ``__init__`` not run until a name
only ``__init__`` defines is looked up.

For packages whose ``__init__`` imports far more than the gateway's start uses: uvicorn's imports
its command line (click, and ``multiprocessing`` through its supervisors), aiohttp's imports its
client, whose connector loads two SSL contexts at import (BENCHMARKS.md, "Cold start"). The code
that runs is the package's own, unchanged; ``import uvicorn`` or ``aiohttp.ClientSession``
elsewhere in the process still works, running ``__init__`` at that first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path


def register_lazily(name: str, **known: object) -> bool:
    """Register package ``name`` with ``known`` names bound and its ``__init__`` not run yet;
    False if it was already imported (or is not a package), which is as good."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def lookup(attribute: str) -> object:
        # PEP 562: called for a name the package does not have yet
        submodule = attribute.isidentifier() and not attribute.startswith("__")
        if submodule and importlib.util.find_spec(f"{name}.{attribute}") is not None:
            return importlib.import_module(f"{name}.{attribute}")  # ``from aiohttp import web``
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, attribute)

    vars(package).update(known)
    package.__dict__["__getattr__"] = lookup
    sys.modules[name] = package
    return True


def source_version(name: str) -> str | None:
    """``__version__ = "..."`` as package ``name``'s ``__init__`` sets it, read without
    running it; None if it is not set that way."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    found = re.search(r'^__version__ = "([^"]+)"$', Path(spec.origin).read_text(), re.MULTILINE)
    return found[1] if found else None
