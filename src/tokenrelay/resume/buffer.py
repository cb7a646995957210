"""One resumable stream's events as sent (each SSE frame with its ``id:`` line), who is reading
them, and the grace timer that cancels the upstream once nobody has been for ``grace`` seconds."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenrelay.resume.settings import ResumeSettings


class StreamGone(Exception):
    """The events asked for are no longer kept (the window passed, or the stream's byte bound
    pushed them out)."""


class StreamBuffer:
    """The frames of one stream, numbered from 1; the oldest go past ``max_bytes``."""

    def __init__(
        self,
        stream_id: str,
        owner: str,
        dialect: str,
        chat: str | None,
        settings: ResumeSettings,
    ) -> None:
        self.stream_id = stream_id
        self.owner = owner
        self.dialect = dialect
        self.chat = chat
        self.settings = settings
        self.frames: deque[bytes] = deque()
        self.first_seq = 1  # the seq of frames[0]
        self.size = 0
        self.done = False
        self.ended_at: float | None = None
        self.unread_end = False  # it ended while nobody was reading: someone missed the end
        self.readers = 1  # the client that started it
        self.cancelled = False  # its owner stopped it (DELETE): nobody missed its end
        self.abort_type = "client_disconnected"  # the record's error type when it is cut short
        self.expire: Callable[[], None] | None = None  # cancels the upstream (set by the relay)
        self.still_wanted: Callable[[], asyncio.Future[bool]] | None = None  # another instance?
        self._changed: asyncio.Event | None = None  # made when a reader waits
        self._timer: asyncio.TimerHandle | None = None

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.frames) - 1

    def append(self, frames: list[bytes], size: int) -> int:
        """Keep ``frames`` (``size`` bytes); returns the bytes dropped to stay in bound."""
        self.frames.extend(frames)
        self.size += size
        dropped = 0
        limit = self.settings.max_stream_bytes
        while self.size > limit and len(self.frames) > 1:
            old = len(self.frames.popleft())
            self.first_seq += 1
            self.size -= old
            dropped += old
        self._wake()
        return dropped

    def end(self, now: float) -> None:
        if not self.done:
            self.done = True
            self.ended_at = now
            self.unread_end = self.readers <= 0 and not self.cancelled
            self._cancel_timer()
            self._wake()

    def after(self, seq: int) -> list[bytes]:
        """The frames after ``seq``; ``StreamGone`` when some of them were already dropped."""
        if seq + 1 < self.first_seq:
            raise StreamGone(f"events after {seq} are no longer kept (oldest: {self.first_seq})")
        start = seq + 1 - self.first_seq
        if start >= len(self.frames):
            return []
        return [self.frames[i] for i in range(start, len(self.frames))]

    async def changed(self) -> None:
        """Wait for a new frame or the end."""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def cancel(self) -> bool:
        """Its owner's deliberate Stop: the upstream stops now, whoever is reading. False when
        it already ended (or is not the relay's to stop)."""
        if self.done or self.expire is None:
            return False
        self.cancelled = True
        self.abort_type = "client_cancelled"
        self._cancel_timer()
        self.expire()
        return True

    @property
    def detached(self) -> bool:
        """Still generating with nobody reading: the grace runs."""
        return not self.done and self.readers <= 0

    # Who is reading: the upstream goes on while anyone is, or for ``grace`` seconds after.

    def attach(self) -> None:
        self.readers += 1
        self._cancel_timer()

    def leave(self) -> None:
        """A reader (the first client, or a resumer) went away."""
        self.readers -= 1
        if self.readers <= 0 and not self.done and self.expire is not None:
            self._arm(self.settings.grace)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._grace_over)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _grace_over(self) -> None:
        self._timer = None
        if self.done or self.readers > 0 or self.expire is None:
            return
        if self.still_wanted is None:
            self.expire()
            return
        self.still_wanted().add_done_callback(self._decide)

    def _decide(self, wanted: asyncio.Future[bool]) -> None:
        if self.done or self.readers > 0 or self.expire is None:
            return
        if not wanted.cancelled() and wanted.exception() is None and wanted.result():
            self._arm(self.settings.grace)  # a reader on another instance: look again later
        else:
            self.expire()


class Tap:
    """The relay's side of a resumable stream: each frame it sends gets its ``id:`` line and
    is kept. Frames are split on their blank line, so a writer's output is taken as is."""

    __slots__ = ("_buffer", "_mirror", "_partial", "_prefix", "_seq", "buffer")

    def __init__(
        self, buffer: StreamBuffer, mirror: Callable[[str, int, list[bytes]], None] | None
    ):
        self.buffer = buffer
        self._buffer = buffer
        self._mirror = mirror
        self._prefix = b"id: " + buffer.stream_id.encode() + b":"
        self._seq = 0
        self._partial = b""

    def add(self, body: bytes) -> bytes:
        """``body`` (whole SSE frames) with an id on each frame, as it goes to the client."""
        if self._partial:
            body = self._partial + body
        parts = body.split(b"\n\n")
        self._partial = parts.pop()
        if not parts:
            return b""
        prefix = self._prefix
        seq = self._seq
        first = seq + 1
        framed = []
        for part in parts:
            seq += 1
            framed.append(b"%b%d\n%b\n\n" % (prefix, seq, part))
        self._seq = seq
        out = b"".join(framed)
        self._buffer.append(framed, len(out))
        if self._mirror is not None:
            self._mirror(self._buffer.stream_id, first, framed)
        return out
