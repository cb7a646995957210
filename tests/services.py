"""What the tests that need a real service share: a spare loopback port, and the rule for a
service this machine lacks (skip with the reason printed; under ``CI=true``, fail)."""

from __future__ import annotations

import os
import socket
import sys
from typing import NoReturn

import pytest


def free_port() -> int:
    """A spare loopback port, never Redis's standard 6379 (the machine's shared server)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose service is missing here, saying why; CI must have every service."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; required when CI=true", pytrace=False)
    print(f"\nskipping: {reason}", file=sys.stderr)
    pytest.skip(reason)
