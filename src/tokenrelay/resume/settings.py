"""What a route keeps of its streams for a reconnecting client (docs/resume.md), and the bounds
on what every stream together may hold."""

from __future__ import annotations

from typing import Annotated

import msgspec


class ResumeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A route's resumable streams. Off by default (``grace = 0``): a client that leaves stops
    the upstream at once, the gateway's promise."""

    # Seconds the upstream keeps generating after the client left, waiting for a reconnect
    # (then it is cancelled and metered as aborted); 0: off, no ids, nothing kept
    grace: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # Seconds a stream's events stay resumable after it ended
    window: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Bytes of events kept per stream; past it the oldest go (a resume before them gets 410)
    max_stream_bytes: Annotated[int, msgspec.Meta(gt=0)] = 1_048_576

    @property
    def enabled(self) -> bool:
        return self.grace > 0


class ResumeStoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every resumable stream of this instance together (memory), and their Redis copies."""

    # Bytes of events this instance keeps in memory over all streams; past it the ended
    # streams go first, oldest first
    max_bytes: Annotated[int, msgspec.Meta(gt=0)] = 64 * 1_048_576
    # With redis_url: events kept per stream in its Redis stream (XADD MAXLEN ~)
    redis_max_events: Annotated[int, msgspec.Meta(gt=0)] = 10_000
    # With redis_url: copy every resumable stream to Redis so another instance can resume it
    redis: bool = True
