"""Stream ids and event ids: ``<stream id>:<seq>`` in each SSE ``id:`` line, the stream id being
the request id (96 random bits, so unguessable), and who may resume a stream."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenrelay.gate.identity import Identity

_STREAM_ID = re.compile(r"[0-9a-f]{24}")


def is_stream_id(value: str) -> bool:
    return _STREAM_ID.fullmatch(value) is not None


def parse_event_id(value: str) -> tuple[str, int] | None:
    """``(stream id, seq)`` from a ``Last-Event-ID``; None when it is not one of ours."""
    stream_id, sep, seq = value.strip().partition(":")
    if not sep or not is_stream_id(stream_id) or not seq.isdigit() or len(seq) > 12:
        return None
    return stream_id, int(seq)


def owner_of(identity: Identity) -> str:
    """Who may resume: the same API key or JWT subject; an anonymous caller by its exact
    address (not its IPv6 network, which a neighbour shares)."""
    if identity.kind == "anonymous":
        return f"ip:{identity.ip}"
    return identity.subject
