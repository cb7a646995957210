"""Wire formats. Each dialect module reads and writes both requests and stream events, so the same
code serves four roles: front (clients talk to us), provider (we talk to an upstream), simulator (a
wire-exact stand-in for the upstream) and client (``tokenrelay ask``).

Every dialect module provides the names in ``Dialect`` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol

from tokenrelay.dialects.sse import SSEEvent
from tokenrelay.model import Completion, Error, Event, GatewayError, Request


class StreamWriter(Protocol):
    """Normalized events in, this dialect's SSE bytes out (front and simulator)."""

    def write(self, event: Event) -> bytes: ...

    def close(self) -> bytes:
        """The closing bytes (``[DONE]``, ``message_stop``); idempotent."""
        ...


class StreamReader(Protocol):
    """This dialect's SSE events in, normalized events out (provider and client)."""

    done: bool

    def feed(self, sse: SSEEvent) -> list[Event]: ...


class Dialect(Protocol):
    NAME: str
    CONTENT_TYPE: str  # of the streaming response
    ID_PREFIX: str  # of the ids the gateway gives its responses (``msg_``, ``chatcmpl-``)

    def parse_request(self, body: bytes) -> Request:
        """Raise ``GatewayError`` (400 / 422) naming what to change."""
        ...

    def encode_request(self, request: Request, model: str, *, stream: bool) -> bytes:
        """Translate what has an equivalent here; raise ``Untranslatable`` naming a field this
        dialect cannot carry (failover then skips this target)."""
        ...

    def stream_writer(self, request: Request, *, id: str, model: str) -> StreamWriter: ...

    def stream_reader(self) -> StreamReader: ...

    def encode_response(self, completion: Completion, *, id: str, model: str) -> bytes: ...

    def parse_response(self, body: bytes) -> Completion: ...

    def encode_error(self, error: GatewayError) -> bytes: ...

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> Error: ...


_MODULES = {
    "anthropic": "tokenrelay.dialects.anthropic",
    "openai": "tokenrelay.dialects.openai",
    "generate": "tokenrelay.dialects.generate",
    "uichat": "tokenrelay.dialects.uichat",
    "responses": "tokenrelay.dialects.responses",
    "converse": "tokenrelay.dialects.converse",
    "bedrock_invoke": "tokenrelay.dialects.bedrock_invoke",
    "gemini": "tokenrelay.dialects.gemini",
}


def get(name: str) -> Dialect:
    """The dialect module for ``name`` (imported on first use)."""
    module: Dialect = importlib.import_module(_MODULES[name])
    return module


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI's) or ``retry-after`` (delta seconds)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue  # an HTTP date; rare from providers, so treat as absent
    return None
