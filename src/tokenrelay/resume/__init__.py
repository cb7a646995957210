"""Resumable streams (docs/resume.md): each SSE event of a resumable route carries
``id: <stream id>:<seq>``, the events are kept a short window (memory, and Redis when shared),
and a reconnect continues from the event after the one it names, with no second upstream
request and no second charge. The HTTP side is ``tokenrelay.resume_http``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenrelay.resume.buffer import StreamBuffer, StreamGone, Tap
from tokenrelay.resume.ids import owner_of, parse_event_id
from tokenrelay.resume.info import StreamInfo, StreamUnavailable
from tokenrelay.resume.store import ResumeStore

if TYPE_CHECKING:
    from tokenrelay.settings import Settings

__all__ = [
    "ResumeStore",
    "StreamBuffer",
    "StreamGone",
    "StreamInfo",
    "StreamUnavailable",
    "Tap",
    "build_store",
    "owner_of",
    "parse_event_id",
]


def build_store(settings: Settings) -> ResumeStore:
    """The store; with ``redis_url`` (and ``resume.redis``), copied to Redis for every
    instance (redis is imported only then)."""
    mirror = None
    if settings.redis_url and settings.resume.redis:
        from tokenrelay.resume.redis_mirror import RedisMirror

        mirror = RedisMirror(
            settings.redis_url,
            settings.limits.key_prefix,
            timeout=settings.limits.redis_timeout,
            max_events=settings.resume.redis_max_events,
        )
    return ResumeStore(settings.resume, mirror)
