"""Resumable streams copied to Redis, so that any instance sharing it can serve a resume.

The instance that owns the upstream writes; the others read until the end marker. Keys, under
``limits.key_prefix`` (``tokenrelay``):

- ``{p}:resume:{id}``, a Redis stream: entry ``<seq>-0`` holds frame ``seq`` (field ``f``), the
  entry after the last frame is the end marker (field ``e``); ``XADD MAXLEN ~`` bounds it and it
  expires ``window`` seconds after the end.
- ``{p}:resume:{id}:meta``, a hash (``owner``, ``dialect``, ``window``), kept ten windows so
  an expired stream is told apart from an unknown one.
- ``{p}:resume:chat:{owner}:{chat}``: the UI chat's latest stream id, while it runs.
- ``{p}:resume:{id}:attached``: set by an instance replaying the stream, renewed every third of
  the grace, so the owner does not cancel an upstream someone elsewhere still reads.

Writes leave the request path at once: frames are queued and sent in pipelined batches by one
background task. Redis down: the copies are dropped (one ERROR line per outage), the local
buffer still serves resumes on this instance; nothing raises into a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from tokenrelay.ratelimit.shared import redis_client
from tokenrelay.resume.buffer import StreamGone
from tokenrelay.resume.info import TOMBSTONE_WINDOWS, StreamInfo

if TYPE_CHECKING:
    import redis.asyncio

    from tokenrelay.resume.buffer import StreamBuffer

log = logging.getLogger("tokenrelay.resume")

RUNNING_TTL = 3600  # seconds a stream's keys live while it runs (an owner that died leaves them)
READ_BLOCK_MS = 5_000  # one XREAD BLOCK
ORPHAN_AFTER = 60.0  # seconds without a new entry before a reader gives up on a dead owner
MAX_CONNECTIONS = 16


class RedisMirror:
    """The Redis side of ``ResumeStore``."""

    def __init__(self, url: str, prefix: str, *, timeout: float, max_events: int) -> None:
        self.prefix = prefix
        self.max_events = max_events
        self.redis: redis.asyncio.Redis = redis_client(url, timeout, MAX_CONNECTIONS)
        # readers block for seconds: their own pool, so writes never queue behind them
        self.readers: redis.asyncio.Redis = redis_client(url, READ_BLOCK_MS / 1000 + timeout, 64)
        self._ops: deque[tuple[Any, ...]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down = False
        self.dropped = 0  # operations lost to a Redis outage

    def _key(self, stream_id: str, suffix: str = "") -> str:
        return f"{self.prefix}:resume:{stream_id}{suffix}"

    def _chat_key(self, owner: str, chat: str) -> str:
        return f"{self.prefix}:resume:chat:{owner}:{chat}"

    # Writes: queued, sent by the background task.

    def opened(self, buffer: StreamBuffer) -> None:
        self._push(
            (
                "open",
                buffer.stream_id,
                buffer.owner,
                buffer.dialect,
                buffer.chat,
                buffer.settings.window,
                buffer.settings.grace,
            )
        )

    def frames(self, stream_id: str, first: int, frames: list[bytes]) -> None:
        self._push(("frames", stream_id, first, frames))

    def ended(self, buffer: StreamBuffer) -> None:
        self._push(
            (
                "end",
                buffer.stream_id,
                buffer.last_seq + 1,
                buffer.owner,
                buffer.chat,
                buffer.settings.window,
            )
        )

    def _push(self, op: tuple[Any, ...]) -> None:
        self._ops.append(op)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="resume-mirror")
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send every queued operation in one pipeline."""
        if not self._ops:
            return
        ops = list(self._ops)
        self._ops.clear()
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            self._queue(pipe, op)
        try:
            await pipe.execute()
        except Exception as error:  # redis errors, timeouts, a refused connection
            self.dropped += len(ops)
            if not self._down:
                self._down = True
                log.error(
                    "resume: Redis failed (%s); streams resume on their own instance only", error
                )
            return
        if self._down:
            self._down = False
            log.warning("resume: Redis answers again; streams are shared again")

    def _queue(self, pipe: Any, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "frames":
            _, stream_id, first, frames = op
            key = self._key(stream_id)
            for i, frame in enumerate(frames):
                pipe.xadd(
                    key, {"f": frame}, id=f"{first + i}-0", maxlen=self.max_events, approximate=True
                )
        elif kind == "open":
            _, stream_id, owner, dialect, chat, window, grace = op
            meta = self._key(stream_id, ":meta")
            pipe.hset(
                meta, mapping={"owner": owner, "dialect": dialect, "window": window, "grace": grace}
            )
            pipe.expire(meta, RUNNING_TTL + int(TOMBSTONE_WINDOWS * window))
            pipe.xadd(self._key(stream_id), {"o": b""}, id="0-1")  # exists from now on
            pipe.expire(self._key(stream_id), RUNNING_TTL)
            if chat is not None:
                pipe.set(self._chat_key(owner, chat), stream_id, ex=RUNNING_TTL)
        else:
            _, stream_id, end_seq, owner, chat, window = op
            key = self._key(stream_id)
            pipe.xadd(key, {"e": b"1"}, id=f"{end_seq}-0", maxlen=self.max_events, approximate=True)
            pipe.expire(key, max(1, round(window)))
            if chat is not None:
                pipe.delete(self._chat_key(owner, chat))

    # Reads.

    async def info(self, stream_id: str) -> StreamInfo | None:
        try:
            meta: Any
            exists: Any
            meta, exists = await asyncio.gather(
                self.readers.hgetall(self._key(stream_id, ":meta")),
                self.readers.exists(self._key(stream_id)),
            )
        except Exception:
            log.warning("resume: Redis failed looking up stream %s", stream_id, exc_info=True)
            return None
        if not meta:
            return None
        return StreamInfo(
            stream_id, meta[b"owner"].decode(), meta[b"dialect"].decode(), expired=not exists
        )

    async def active_for_chat(self, owner: str, chat: str) -> str | None:
        try:
            value: Any = await self.readers.get(self._chat_key(owner, chat))
        except Exception:
            return None
        return value.decode() if value else None

    async def attached(self, stream_id: str) -> bool:
        """Whether an instance is replaying the stream right now."""
        try:
            return bool(await self.redis.exists(self._key(stream_id, ":attached")))
        except Exception:
            return False

    async def replay(self, stream_id: str, after: int) -> AsyncGenerator[list[bytes]]:
        key = self._key(stream_id)
        meta: Any = await self.readers.hgetall(self._key(stream_id, ":meta"))
        grace = float(meta.get(b"grace", b"0") or 0) if meta else 0.0
        heartbeat = asyncio.create_task(self._heartbeat(stream_id, max(grace, 1.0)))
        try:
            first: Any = await self.readers.xrange(key, f"{after + 1}-0", "+", count=1)
            if not first and not await self.readers.exists(key):
                raise StreamGone(f"stream {stream_id} is no longer kept")
            oldest: Any = await self.readers.xrange(key, "1-0", "+", count=1)
            if oldest and _seq(oldest[0][0]) > after + 1:
                raise StreamGone(f"events after {after} are no longer kept")
            last = f"{after}-0"
            quiet = 0.0
            while True:
                answer: Any = await self.readers.xread({key: last}, count=500, block=READ_BLOCK_MS)
                if not answer:
                    quiet += READ_BLOCK_MS / 1000
                    if quiet >= ORPHAN_AFTER or not await self.readers.exists(key):
                        raise StreamGone(f"stream {stream_id} stopped without its end")
                    continue
                quiet = 0.0
                frames: list[bytes] = []
                done = False
                for entry_id, fields in answer[0][1]:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    if b"e" in fields:
                        done = True
                        break
                    if b"f" in fields:
                        frames.append(fields[b"f"])
                if frames:
                    yield frames
                if done:
                    return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await self.redis.delete(self._key(stream_id, ":attached"))

    async def _heartbeat(self, stream_id: str, grace: float) -> None:
        key = self._key(stream_id, ":attached")
        while True:
            with contextlib.suppress(Exception):
                await self.redis.set(key, b"1", px=max(1000, round(grace * 1000)))
            await asyncio.sleep(grace / 3)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        await self.redis.aclose()
        await self.readers.aclose()


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])
