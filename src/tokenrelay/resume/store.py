"""Every resumable stream of this instance, found by stream id or by (caller, UI chat id), kept
``window`` seconds after its end within a byte bound; with Redis, copied there too
(``resume.redis_mirror``) so another instance can serve the resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from tokenrelay.resume.buffer import StreamBuffer, StreamGone, Tap
from tokenrelay.resume.info import TOMBSTONE_WINDOWS, Mirror, StreamInfo

if TYPE_CHECKING:
    from tokenrelay.resume.settings import ResumeSettings, ResumeStoreSettings

MAX_TOMBSTONES = 100_000
# What came of a reconnect or a cancel, for tokenrelay_resume_total{result}.
RESULTS = ("resumed", "not_found", "expired", "unavailable", "cancelled")


class ResumeStore:
    """Resumable streams in memory (and their Redis copies when a mirror is given)."""

    def __init__(self, settings: ResumeStoreSettings, mirror: Mirror | None = None) -> None:
        self.settings = settings
        self.mirror = mirror
        self.streams: dict[str, StreamBuffer] = {}
        self._chats: dict[tuple[str, str], str] = {}
        self._tombstones: dict[str, tuple[str, str, float]] = {}  # id -> owner, dialect, until
        self.evicted = 0  # streams dropped before their window was over (the byte bound)
        self.results: dict[str, int] = dict.fromkeys(RESULTS, 0)  # reconnects and cancels
        if mirror is not None:
            mirror.on_cancel = self.cancel_here

    # The producing side (the relay).

    def open(
        self, stream_id: str, owner: str, dialect: str, chat: str | None, settings: ResumeSettings
    ) -> Tap:
        self.sweep()
        buffer = StreamBuffer(stream_id, owner, dialect, chat, settings)
        self.streams[stream_id] = buffer
        if chat is not None:
            self._chats[(owner, chat)] = stream_id
        mirror = self.mirror
        if mirror is not None:
            mirror.opened(buffer)
            buffer.still_wanted = lambda: asyncio.ensure_future(mirror.attached(stream_id))
        return Tap(buffer, mirror.frames if mirror is not None else None)

    def end(self, tap: Tap) -> None:
        """The stream ended (completed, failed or cancelled): resumers get the rest and stop."""
        buffer = tap.buffer
        if buffer.done:
            return
        buffer.end(time.monotonic())
        buffer.expire = None
        if self.mirror is not None:
            self.mirror.ended(buffer)

    def sweep(self, now: float | None = None) -> None:
        """Drop what outlived its window, and ended streams past the byte bound, oldest first."""
        now = time.monotonic() if now is None else now
        total = 0
        ended: list[StreamBuffer] = []
        for buffer in list(self.streams.values()):
            if buffer.ended_at is not None:
                if now - buffer.ended_at >= buffer.settings.window:
                    self._drop(buffer, now)
                    continue
                ended.append(buffer)
            total += buffer.size
        if total > self.settings.max_bytes:
            ended.sort(key=lambda b: b.ended_at or 0.0)
            for buffer in ended:
                if total <= self.settings.max_bytes:
                    break
                total -= buffer.size
                self._drop(buffer, now)
                self.evicted += 1
        if self._tombstones:
            for stream_id, (_, _, until) in list(self._tombstones.items()):
                if until > now and len(self._tombstones) <= MAX_TOMBSTONES:
                    break  # in insertion order, so roughly by expiry
                del self._tombstones[stream_id]

    def _drop(self, buffer: StreamBuffer, now: float) -> None:
        del self.streams[buffer.stream_id]
        if buffer.chat is not None and self._chats.get((buffer.owner, buffer.chat)) == (
            buffer.stream_id
        ):
            del self._chats[(buffer.owner, buffer.chat)]
        until = now + TOMBSTONE_WINDOWS * buffer.settings.window
        self._tombstones[buffer.stream_id] = (buffer.owner, buffer.dialect, until)

    @property
    def size(self) -> int:
        return sum(buffer.size for buffer in self.streams.values())

    @property
    def detached(self) -> int:
        """Streams generating with nobody reading them (their grace runs)."""
        return sum(1 for buffer in self.streams.values() if buffer.detached)

    def count(self, result: str) -> None:
        self.results[result] += 1

    # Cancelling (the owner's DELETE).

    def cancel_here(self, stream_id: str) -> bool:
        """Stop a stream this instance runs; False when it is not here or already ended."""
        buffer = self.streams.get(stream_id)
        return buffer is not None and buffer.cancel()

    async def cancel(self, stream_id: str) -> None:
        """Stop the stream wherever it runs: here at once, else (with Redis) its instance is
        told and stops it within a Redis round trip. ``StreamUnavailable`` when Redis fails."""
        if stream_id in self.streams:
            self.cancel_here(stream_id)
        elif self.mirror is not None:
            await self.mirror.cancel(stream_id)

    # The resuming side (resume_http).

    async def info(self, stream_id: str) -> StreamInfo | None:
        """The stream, here or (with Redis) on any instance; None when unknown;
        ``StreamUnavailable`` when it is not here and Redis fails."""
        self.sweep()
        buffer = self.streams.get(stream_id)
        if buffer is not None:
            return StreamInfo(stream_id, buffer.owner, buffer.dialect, expired=False)
        tomb = self._tombstones.get(stream_id)
        if tomb is not None:
            return StreamInfo(stream_id, tomb[0], tomb[1], expired=True)
        if self.mirror is not None:
            return await self.mirror.info(stream_id)
        return None

    async def active_for_chat(self, owner: str, chat: str) -> str | None:
        """The stream of a UI chat (its ``id``) still generating, or ended while nobody read it
        (a page reloaded just before the end), for ``useChat``'s resume."""
        stream_id = self._chats.get((owner, chat))
        if stream_id is not None:
            buffer = self.streams.get(stream_id)
            if buffer is None or (buffer.done and not buffer.unread_end):
                return None
            return stream_id
        if self.mirror is not None:
            return await self.mirror.active_for_chat(owner, chat)
        return None

    async def replay(self, stream_id: str, after: int) -> AsyncGenerator[list[bytes]]:
        """The frames after ``after``, then each new one as it comes, until the stream ends;
        ``StreamGone`` when those events are no longer kept."""
        buffer = self.streams.get(stream_id)
        if buffer is None:
            if self.mirror is None:
                raise StreamGone(f"stream {stream_id} is no longer kept")
            async for frames in self.mirror.replay(stream_id, after):
                yield frames
            return
        buffer.attach()
        try:
            seq = after
            while True:
                frames = buffer.after(seq)
                if frames:
                    seq += len(frames)
                    yield frames
                elif buffer.done:
                    buffer.unread_end = False  # this reader got the end
                    return
                else:
                    await buffer.changed()
        finally:
            buffer.leave()

    async def close(self) -> None:
        if self.mirror is not None:
            await self.mirror.close()
