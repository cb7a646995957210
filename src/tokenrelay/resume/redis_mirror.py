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
- ``{p}:resume:cancel:{instance}``: a list of stream ids their owners cancelled (``DELETE``) on
  another instance; the owning instance (named in the meta) waits on it with ``BLPOP``.

Writes leave the request path at once: frames are queued and sent in pipelined batches by one
background task. Redis down: the copies are dropped (one ERROR line per outage), the local
buffer still serves resumes on this instance; nothing raises into a request. A stream whose
copy lost frames that way is marked (meta ``lost``, and an ``l`` entry after its last one) once
Redis answers again, and is copied no further: other instances answer its reconnects with a 503
instead of replaying a hole. Reads raise ``StreamUnavailable`` when Redis fails, within
``redis_timeout`` (an ``XREAD BLOCK`` within its block time plus that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from tokenrelay.ratelimit.shared import redis_client
from tokenrelay.resume.buffer import StreamGone
from tokenrelay.resume.info import TOMBSTONE_WINDOWS, StreamInfo, StreamUnavailable

if TYPE_CHECKING:
    import redis.asyncio

    from tokenrelay.resume.buffer import StreamBuffer

log = logging.getLogger("tokenrelay.resume")

RUNNING_TTL = 3600  # seconds a stream's keys live while it runs (an owner that died leaves them)
READ_BLOCK_MS = 5_000  # one XREAD BLOCK
ORPHAN_AFTER = 60.0  # seconds without a new entry before a reader gives up on a dead owner
MAX_CONNECTIONS = 16
RETRY_AFTER = 1.0  # seconds between attempts to mark lost copies, and to listen for cancels
CANCEL_TTL = 60  # seconds a cancel waits in its list for an owner that does not listen
MAX_UNMARKED = 10_000  # lost copies remembered through an outage, to mark once Redis is back


class RedisMirror:
    """The Redis side of ``ResumeStore``."""

    def __init__(self, url: str, prefix: str, *, timeout: float, max_events: int) -> None:
        self.prefix = prefix
        self.max_events = max_events
        self.timeout = timeout
        self.instance = os.urandom(8).hex()  # where other instances send this one's cancels
        self.on_cancel: Callable[[str], bool] | None = None  # set by the store
        self.redis: redis.asyncio.Redis = redis_client(url, timeout, MAX_CONNECTIONS)
        # readers block for seconds: their own pool, so writes never queue behind them
        self.readers: redis.asyncio.Redis = redis_client(url, READ_BLOCK_MS / 1000 + timeout, 64)
        self._ops: deque[tuple[Any, ...]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._down = False
        self.dropped = 0  # operations lost to a Redis outage
        self._meta: dict[str, dict[str, Any]] = {}  # running streams' meta, to mark a lost copy
        self._holes: set[str] = set()  # streams whose copy lost frames: copied no further
        self._unmarked: dict[str, bool] = {}  # holes not yet marked in Redis -> ended

    def _key(self, stream_id: str, suffix: str = "") -> str:
        return f"{self.prefix}:resume:{stream_id}{suffix}"

    def _chat_key(self, owner: str, chat: str) -> str:
        return f"{self.prefix}:resume:chat:{owner}:{chat}"

    # Writes: queued, sent by the background task.

    def opened(self, buffer: StreamBuffer) -> None:
        self._meta[buffer.stream_id] = {
            "owner": buffer.owner,
            "dialect": buffer.dialect,
            "window": buffer.settings.window,
            "grace": buffer.settings.grace,
            "instance": self.instance,
        }
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="resume-cancels")
        self._push(("open", buffer.stream_id, buffer.chat))

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
            if self._unmarked:  # lost copies to mark: try again without waiting for a write
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETRY_AFTER)
            else:
                await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send every queued operation in one pipeline, with the marks of lost copies."""
        if not self._ops and not self._unmarked:
            return
        ops = list(self._ops)
        self._ops.clear()
        pipe = self.redis.pipeline(transaction=False)
        ended: list[str] = []
        for op in ops:
            stream_id = op[1]
            if op[0] == "end":
                ended.append(stream_id)
            if stream_id in self._holes:  # no more frames; its end is marked with the hole
                if op[0] == "end":
                    self._unmarked[stream_id] = True
                continue
            self._queue(pipe, op)
        marks = list(self._unmarked.items())
        for stream_id, over in marks:
            self._mark_lost(pipe, stream_id, over)
        try:
            await pipe.execute()
        except Exception as error:  # redis errors, timeouts, a refused connection
            self.dropped += len(ops)
            for op in ops:  # each of these streams now has a hole in its copy
                self._holes.add(op[1])
                self._unmarked[op[1]] = self._unmarked.get(op[1], False) or op[0] == "end"
            while len(self._unmarked) > MAX_UNMARKED:  # a long outage: forget the oldest (their
                forgotten = next(iter(self._unmarked))  # readers elsewhere still see the hole)
                del self._unmarked[forgotten]
                self._holes.discard(forgotten)
                self._meta.pop(forgotten, None)
            if not self._down:
                self._down = True
                log.error(
                    "resume: Redis failed (%s); streams resume on their own instance only", error
                )
            return
        for stream_id, over in marks:
            del self._unmarked[stream_id]
            if over:
                self._holes.discard(stream_id)
                self._meta.pop(stream_id, None)
        for stream_id in ended:
            if stream_id not in self._unmarked:
                self._meta.pop(stream_id, None)
        if self._down:
            self._down = False
            log.warning("resume: Redis answers again; streams are shared again")

    def _mark_lost(self, pipe: Any, stream_id: str, ended: bool) -> None:
        """Tell other instances this copy has a hole: they answer 503 rather than replay it."""
        meta = self._meta.get(stream_id)
        if meta is None:
            return
        window = meta["window"]
        key, meta_key = self._key(stream_id), self._key(stream_id, ":meta")
        pipe.hset(meta_key, mapping={**meta, "lost": 1})
        pipe.expire(meta_key, RUNNING_TTL + int(TOMBSTONE_WINDOWS * window))
        pipe.xadd(key, {"l": b"1"})  # an automatic id: after every frame's
        pipe.expire(key, max(1, round(window)) if ended else RUNNING_TTL)

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
            _, stream_id, chat = op
            fields = self._meta[stream_id]
            meta = self._key(stream_id, ":meta")
            pipe.hset(meta, mapping=fields)
            pipe.expire(meta, RUNNING_TTL + int(TOMBSTONE_WINDOWS * fields["window"]))
            pipe.xadd(self._key(stream_id), {"o": b""}, id="0-1")  # exists from now on
            pipe.expire(self._key(stream_id), RUNNING_TTL)
            if chat is not None:
                pipe.set(self._chat_key(fields["owner"], chat), stream_id, ex=RUNNING_TTL)
        else:
            _, stream_id, end_seq, owner, chat, window = op
            key = self._key(stream_id)
            pipe.xadd(key, {"e": b"1"}, id=f"{end_seq}-0", maxlen=self.max_events, approximate=True)
            pipe.expire(key, max(1, round(window)))
            if chat is not None:
                pipe.delete(self._chat_key(owner, chat))

    # Reads: bounded by redis_timeout (an XREAD BLOCK by its block time and that); a failure
    # is StreamUnavailable, which the reconnect answers with a 503.

    async def _bounded(self, call: Any) -> Any:
        return await asyncio.wait_for(call, self.timeout)

    async def info(self, stream_id: str) -> StreamInfo | None:
        try:
            meta: Any
            exists: Any
            meta, exists = await self._bounded(
                asyncio.gather(
                    self.readers.hgetall(self._key(stream_id, ":meta")),
                    self.readers.exists(self._key(stream_id)),
                )
            )
        except Exception as error:
            raise _unavailable(error) from error
        if not meta or b"owner" not in meta:
            return None
        return StreamInfo(
            stream_id,
            meta[b"owner"].decode(),
            meta[b"dialect"].decode(),
            expired=not exists,
            copy_lost=b"lost" in meta,
        )

    async def active_for_chat(self, owner: str, chat: str) -> str | None:
        try:
            value: Any = await self._bounded(self.readers.get(self._chat_key(owner, chat)))
        except Exception as error:
            raise _unavailable(error) from error
        return value.decode() if value else None

    async def attached(self, stream_id: str) -> bool:
        """Whether an instance is replaying the stream right now."""
        try:
            return bool(await self.redis.exists(self._key(stream_id, ":attached")))
        except Exception:
            return False

    async def replay(self, stream_id: str, after: int) -> AsyncGenerator[list[bytes]]:
        """The frames after ``after`` until the end marker: ``StreamGone`` when they are no
        longer kept, ``StreamUnavailable`` when Redis fails or the copy has a hole."""
        reader = self._read(stream_id, after)
        try:
            async for frames in reader:
                yield frames
        except (StreamGone, StreamUnavailable):
            raise
        except Exception as error:
            raise _unavailable(error) from error
        finally:
            await reader.aclose()  # its heartbeat stops now, not when it is collected

    async def _read(self, stream_id: str, after: int) -> AsyncGenerator[list[bytes]]:
        key = self._key(stream_id)
        meta: Any = await self._bounded(self.readers.hgetall(self._key(stream_id, ":meta")))
        if meta and b"lost" in meta:
            raise StreamUnavailable(LOST)
        grace = float(meta.get(b"grace", b"0") or 0) if meta else 0.0
        heartbeat = asyncio.create_task(self._heartbeat(stream_id, max(grace, 1.0)))
        try:
            first: Any = await self._bounded(
                self.readers.xrange(key, f"{after + 1}-0", "+", count=1)
            )
            if not first and not await self._bounded(self.readers.exists(key)):
                raise StreamGone(f"stream {stream_id} is no longer kept")
            oldest: Any = await self._bounded(self.readers.xrange(key, "1-0", "+", count=1))
            if oldest and _seq(oldest[0][0]) > after + 1:
                raise StreamGone(f"events after {after} are no longer kept")
            last = f"{after}-0"
            expected = after + 1  # a frame with another seq: the copy has a hole
            quiet = 0.0
            while True:
                answer: Any = await self.readers.xread({key: last}, count=500, block=READ_BLOCK_MS)
                if not answer:
                    quiet += READ_BLOCK_MS / 1000
                    if quiet >= ORPHAN_AFTER or not await self._bounded(self.readers.exists(key)):
                        raise StreamGone(f"stream {stream_id} stopped without its end")
                    continue
                quiet = 0.0
                frames: list[bytes] = []
                end = None
                for entry_id, fields in answer[0][1]:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    if b"f" in fields:
                        if _seq(entry_id) != expected:
                            end = b"l"
                            break
                        expected += 1
                        frames.append(fields[b"f"])
                    elif b"e" in fields or b"l" in fields:
                        end = b"e" if b"e" in fields else b"l"
                        break
                if frames:
                    yield frames
                if end == b"l":
                    raise StreamUnavailable(LOST)
                if end == b"e":
                    return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await self._bounded(self.redis.delete(self._key(stream_id, ":attached")))

    async def _heartbeat(self, stream_id: str, grace: float) -> None:
        key = self._key(stream_id, ":attached")
        while True:
            with contextlib.suppress(Exception):
                await self.redis.set(key, b"1", px=max(1000, round(grace * 1000)))
            await asyncio.sleep(grace / 3)

    # Cancels: the owner's DELETE reaching the instance that runs the stream.

    def _cancel_key(self, instance: str) -> str:
        return f"{self.prefix}:resume:cancel:{instance}"

    async def cancel(self, stream_id: str) -> bool:
        """Ask the instance that runs ``stream_id`` to stop it; False when none is named."""
        try:
            instance: Any = await self._bounded(
                self.redis.hget(self._key(stream_id, ":meta"), "instance")
            )
            if not instance:
                return False
            queue = self._cancel_key(instance.decode())
            pipe = self.redis.pipeline(transaction=False)
            pipe.rpush(queue, stream_id)
            pipe.expire(queue, CANCEL_TTL)
            await self._bounded(pipe.execute())
        except Exception as error:
            raise _unavailable(error) from error
        return True

    async def _listen(self) -> None:
        """Wait for the cancels other instances send this one (``BLPOP``), from the first
        resumable stream on; a Redis outage is waited out."""
        queue = self._cancel_key(self.instance)
        while True:
            try:
                answer: Any = await self.readers.blpop([queue], timeout=READ_BLOCK_MS // 1000)
            except Exception:
                await asyncio.sleep(RETRY_AFTER)
                continue
            if answer and self.on_cancel is not None:
                self.on_cancel(answer[1].decode())

    async def close(self) -> None:
        for task in (self._task, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        await self.redis.aclose()
        await self.readers.aclose()


LOST = "its copy in Redis lost events in a Redis outage; only the instance running it has them"


def _unavailable(error: BaseException) -> StreamUnavailable:
    return StreamUnavailable(f"Redis did not answer ({type(error).__name__}: {error})")


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])
