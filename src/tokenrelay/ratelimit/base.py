"""The small storage interface the limiter needs, so the in-process and Redis stores are
interchangeable and tested by the same tests.

Each method is one atomic step as far as the store can make it: the in-process store never
awaits inside a method (the event loop is its lock); the Redis store runs Lua scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class Window(NamedTuple):
    """One counter: ``limit`` units per ``seconds`` under ``key``; ``policy`` names it in
    headers."""

    key: str
    limit: int
    seconds: int
    policy: str


class Usage(NamedTuple):
    """A request window after a take: units used (this request included when it was taken)
    and seconds until the oldest leaves the window."""

    used: int
    reset_after: float


class TokenUsage(NamedTuple):
    """A sliding-window counter: the previous and current fixed windows' totals and the seconds
    until the current one closes. Its estimate of the last ``w`` seconds is
    ``previous * closes_in / w + current``: the previous window counts for the part of it that
    the sliding window still overlaps."""

    previous: int
    current: int
    closes_in: float


class Store(Protocol):
    shared: bool  # True: across instances (Redis), so calls can fail and are guarded
    errors: tuple[type[BaseException], ...]  # what a failing call raises

    async def take(self, windows: Sequence[Window]) -> tuple[bool, list[Usage]]:
        """One unit from every window if each has room, else from none (see ``RateLimiter``
        for how far the Redis store can promise "none")."""
        ...

    async def peek(self, windows: Sequence[Window]) -> list[Usage]:
        """Request windows as they stand, counting nothing (for reports, never the hot path);
        an empty window's ``reset_after`` is 0."""
        ...

    async def tokens(self, windows: Sequence[Window]) -> list[TokenUsage]: ...

    async def charge(self, windows: Sequence[Window], tokens: int) -> None:
        """Add ``tokens`` to every window, whatever the limit: they have been spent."""
        ...

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> tuple[bool, int]:
        """A concurrency slot under ``key`` if fewer than ``limit`` are held; returns whether
        it was granted and how many are held now."""
        ...

    async def refresh(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        """Extend the given (key, lease) slots to ``ttl`` from now, putting back any that had
        expired (their streams still run); returns how many were put back."""
        ...

    async def release(self, key: str, lease: str) -> None: ...

    async def held(self, key: str) -> int:
        """Concurrency slots held under ``key`` now, taking none."""
        ...

    async def close(self) -> None: ...
