"""What the store and its Redis copy tell a reconnect about a stream before replaying it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tokenrelay.resume.buffer import StreamBuffer

TOMBSTONE_WINDOWS = 10  # an expired stream is told apart from an unknown one this many windows


class StreamUnavailable(Exception):
    """The stream cannot be looked up or read here right now: Redis does not answer, or its
    copy there lost events in an outage (only the instance that runs it has them all)."""


class StreamInfo:
    """Whose a stream is and in which dialect."""

    __slots__ = ("copy_lost", "dialect", "expired", "owner", "stream_id")

    def __init__(
        self, stream_id: str, owner: str, dialect: str, *, expired: bool, copy_lost: bool = False
    ) -> None:
        self.stream_id = stream_id
        self.owner = owner
        self.dialect = dialect
        self.expired = expired  # known, but its events are no longer kept
        self.copy_lost = copy_lost  # its Redis copy has a hole (an outage): not resumable here


class Mirror(Protocol):
    """A copy of the streams other instances can read (``redis_mirror.RedisMirror``). Its
    reads raise ``StreamUnavailable`` when Redis fails."""

    on_cancel: Callable[[str], bool] | None  # a stream of this instance its owner cancelled

    def opened(self, buffer: StreamBuffer) -> None: ...

    def frames(self, stream_id: str, first: int, frames: list[bytes]) -> None: ...

    def ended(self, buffer: StreamBuffer) -> None: ...

    async def info(self, stream_id: str) -> StreamInfo | None: ...

    async def active_for_chat(self, owner: str, chat: str) -> str | None: ...

    async def attached(self, stream_id: str) -> bool: ...

    async def cancel(self, stream_id: str) -> bool: ...

    def replay(self, stream_id: str, after: int) -> AsyncGenerator[list[bytes]]: ...

    async def close(self) -> None: ...
