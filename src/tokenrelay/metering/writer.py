"""Writes ledger rows in the background, so metering never waits on the database, and loses none.

A row held only in memory dies with the process (SIGKILL, OOM killer, a crash), so ``submit``
appends every row first to a write-ahead spool file with one ``write()`` to an ``O_APPEND``
descriptor: once that returns the kernel holds the line and it survives the process being killed
(a few µs; not an fsync: the background task fsyncs each batch, so a power cut loses at most
the last ``interval`` seconds, or the last retry's while the database is down). The spool *is*
the queue: the task reads each closed file back in
batches, inserts them with ``ON CONFLICT (request_id) DO NOTHING`` in one transaction, and
deletes the file only after the commit. Memory stays at one batch however long the database is
away; a crash anywhere means a file replayed at the next start, written again harmlessly.

Files are ``ledger-<owner>-<seq>.jsonl``; the owner (one writer in one process) holds an
``flock`` on ``ledger-<owner>.lock`` while it may append. At start a writer adopts the files of
owners whose lock it can take (they are dead) by renaming them into its own name, so several
worker processes can share one spool directory and a file still being appended is never
replayed. Only when the spool cannot be written (full disk) are rows kept in memory instead,
up to ``memory_rows``.

No single row can stop the ledger. Text no database stores (NUL, lone surrogates) is replaced
before a row is spooled or inserted, and a batch the database refuses for its *values* (a
``DataError``: a number out of range, a constraint), not for being unreachable, is split in
halves until the refused rows are alone: each goes to ``dead-letters.jsonl`` in the spool
directory with the reason (never replayed, as it is not a spool file), ``dead_letters`` counts
it, readiness reports it as degraded, and the rest are written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tokenrelay.metering.ledger import LedgerRow, insert_rows, sanitized
from tokenrelay.store import Database, DataError, parse_url

log = logging.getLogger("tokenrelay.ledger")

PREFIX = "ledger-"
SEGMENT = ".jsonl"
LOCK = ".lock"
DEFAULT_SPOOL_DIR = "tokenrelay-spool"
DEAD_LETTERS = "dead-letters.jsonl"  # rows the database refused, with why; never replayed
LOG_EVERY = 30.0  # seconds between "still down" lines
DatabaseProvider = Callable[[], Awaitable[Database]]
BatchHook = Callable[[list[LedgerRow]], Awaitable[None]]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LedgerRow)


def default_spool_dir(database_url: str) -> str:
    """Next to a SQLite file (``<file>.spool``), else ``./tokenrelay-spool``."""
    with contextlib.suppress(ValueError):
        backend, target = parse_url(database_url)
        if backend == "sqlite" and target != ":memory:":
            return os.path.abspath(target) + ".spool"
    return os.path.abspath(DEFAULT_SPOOL_DIR)


@dataclass(slots=True)
class _Segment:
    """One spool file: appended to while active, then read back and deleted once written."""

    path: str
    rows: int = 0  # complete lines in it
    fd: int | None = None  # open while active, and until fsynced after that
    offset: int = 0  # bytes already in the database
    done: int = 0  # lines already in the database (or unreadable and skipped)
    synced: int = 0  # lines fsynced while active


class LedgerWriter:
    """``submit`` from a request listener; ``start`` once the loop runs; ``close`` at shutdown."""

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        *,
        batch_size: int = 500,
        interval: float = 0.2,
        memory_rows: int = 10_000,
        first_write_delay: float = 1.0,
        retry_max: float = 5.0,
        before_write: BatchHook | None = None,
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.batch_size = batch_size
        self.interval = interval
        self.memory_rows = memory_rows
        self.first_write_delay = first_write_delay  # the gate opens the database lazily too
        self.retry_max = retry_max
        # Awaited with each batch just before it is inserted; may change the rows (pricing
        # rows spooled before the price table loaded). Raising keeps the batch queued.
        self.before_write = before_write
        self.written = 0  # rows committed (a duplicate the database ignored included)
        self.write_errors = 0  # failed attempts to write a batch
        self.dropped = 0  # rows lost: the spool could not be written and memory was full
        self.dead_letters = 0  # rows the database refused for their values, set aside
        self._owner: str | None = None
        self._lock_fd: int | None = None
        self._seq = 0
        self._active: _Segment | None = None
        self._sealed: list[_Segment] = []
        self._memory: collections.deque[LedgerRow] = collections.deque()
        self._wake = asyncio.Event()
        self._eager = False  # wake the task when a batch is full (not while it backs off)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._logged_at = 0.0
        self._spool_failed_at = 0.0
        self._set_aside: set[str] = set()  # request ids dead-lettered (a retried batch skips)
        self._dead_logged_at = -LOG_EVERY

    # --- counters -------------------------------------------------------------------------------

    @property
    def spooled(self) -> int:
        """Rows in spool files, not yet in the database."""
        segments = [*self._sealed, *([self._active] if self._active else [])]
        return sum(max(0, segment.rows - segment.done) for segment in segments)

    @property
    def running(self) -> bool:
        """Whether the background task that writes rows to the database is alive."""
        return self._task is not None and not self._task.done()

    @property
    def failure(self) -> BaseException | None:
        """What ended the background task, when it died of an error."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @property
    def database_down_since(self) -> float | None:
        """``time.monotonic()`` of the first failed write of the current outage, else None."""
        return self._down_since

    def spool_bytes(self) -> int | None:
        """The spool files' size on disk, every process sharing the directory included (one
        scan and a stat per file, a handful); None when the directory cannot be read."""
        total = 0
        try:
            with os.scandir(self.spool_dir) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(PREFIX) and name.endswith(SEGMENT):
                        try:
                            total += entry.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue  # written and removed meanwhile
        except OSError:
            return None
        return total

    @property
    def dead_letter_path(self) -> Path:
        """Where refused rows go, one JSON line each: ``{"at", "reason", "row"}``."""
        return self.spool_dir / DEAD_LETTERS

    @property
    def backlog(self) -> int:
        """Rows accepted and not yet in the database."""
        return self.spooled + len(self._memory)

    # --- the request's side ---------------------------------------------------------------------

    def submit(self, row: LedgerRow) -> None:
        """Queue ``row``; never blocks or awaits. On return the row survives a process kill."""
        row = sanitized(row)
        try:
            segment = self._append(row)
        except OSError as exc:
            self._keep_in_memory(row, exc)
            return
        if self._eager and segment.rows >= self.batch_size:
            self._wake.set()

    def _append(self, row: LedgerRow) -> _Segment:
        """Write ``row`` to the active spool file in one ``write()``."""
        line = _encoder.encode(row) + b"\n"
        segment = self._active or self._open_segment()
        assert segment.fd is not None
        if os.write(segment.fd, line) != len(line):  # a torn line (disk full): seal it there
            self._seal()
            raise OSError("short write to the ledger spool")
        segment.rows += 1
        return segment

    def _keep_in_memory(self, row: LedgerRow, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._spool_failed_at >= LOG_EVERY:
            self._spool_failed_at = now
            log.error(
                "ledger: cannot write the spool in %s (%s); rows are kept in memory (up to %d) "
                "and are lost if the process dies before the database takes them",
                self.spool_dir,
                exc,
                self.memory_rows,
            )
        if len(self._memory) >= self.memory_rows:
            self.dropped += 1
            return
        self._memory.append(row)
        if self._eager and len(self._memory) >= self.batch_size:
            self._wake.set()

    def _open_segment(self) -> _Segment:
        if self._owner is None:
            self._take_ownership()
        self._seq += 1
        path = str(self.spool_dir / f"{PREFIX}{self._owner}-{self._seq:06d}{SEGMENT}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._active = _Segment(path, fd=os.open(path, flags, 0o600))
        return self._active

    def _take_ownership(self) -> None:
        """A fresh owner name and its lock, taken before any file of ours exists."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(self.spool_dir / f"{PREFIX}{owner}{LOCK}", os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):  # a fresh name: nobody else can hold it
            os.close(fd)
            raise OSError(f"cannot lock the ledger spool in {self.spool_dir}")
        self._owner, self._lock_fd = owner, fd

    def _seal(self) -> None:
        """Close the active file to appends; the next row starts a new one."""
        if self._active is not None:
            self._sealed.append(self._active)
            self._active = None

    # --- the background task --------------------------------------------------------------------

    def start(self, database: DatabaseProvider) -> None:
        """Begin writing: spool files left by dead writers first, then new rows. ``database``
        is awaited only when there is something to write, so it may open the database then."""
        if self._task is not None:
            return
        self._closing = False
        if self._owner is None:
            try:
                self._take_ownership()
            except OSError as exc:  # submit keeps trying, and says so
                log.error("ledger: cannot use the spool directory %s: %s", self.spool_dir, exc)
        self._task = asyncio.create_task(self._run(database), name="ledger-writer")

    async def _run(self, database: DatabaseProvider) -> None:
        if self._owner is not None:
            try:
                adopted = await asyncio.to_thread(_adopt, self.spool_dir, self._owner)
            except OSError as exc:
                log.error("ledger: cannot read the spool in %s: %s", self.spool_dir, exc)
            else:
                self._sealed[:0] = adopted
                if adopted:
                    rows = sum(segment.rows for segment in adopted)
                    log.warning("ledger: replaying %d row(s) left in %s", rows, self.spool_dir)
        await self._pause(self.first_write_delay)
        retry = self.interval
        while True:
            if self.backlog:
                try:
                    await self._flush(database)
                except Exception as exc:
                    self._failed(exc)
                    await self._sync_active()  # rows may wait a while: fsync them meanwhile
                    await self._pause(self.interval if self._closing else retry)
                    retry = min(retry * 2, self.retry_max)
                    continue
                self._recovered()
                retry = self.interval
            if self._closing and not self.backlog:
                return
            self._eager = True
            await self._pause(self.interval)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a batch fills (if eager) or ``close`` begins."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
        self._eager = False

    async def _sync_active(self) -> None:
        """fsync what the active file gained since the last time, while the database is away
        (a written file is fsynced when it is closed, before its rows go to the database)."""
        segment = self._active
        if segment is not None and segment.fd is not None and segment.synced != segment.rows:
            rows = segment.rows
            await asyncio.to_thread(os.fsync, segment.fd)
            segment.synced = rows

    async def _flush(self, database: DatabaseProvider) -> None:
        """Write everything accepted so far, oldest first. The active file is closed only once
        older ones are written, so a database that is down does not split the spool into a
        file per retry."""
        db = await database()
        while self._memory:
            chunk = [self._memory[i] for i in range(min(self.batch_size, len(self._memory)))]
            written = await self._insert(db, chunk)
            for _ in chunk:
                self._memory.popleft()
            self.written += written
        while self._sealed:
            await self._write_segment(db, self._sealed[0])
            self._sealed.pop(0)
        if self._active is not None and self._active.rows:
            self._seal()
            await self._write_segment(db, self._sealed[0])
            self._sealed.pop(0)

    async def _write_segment(self, db: Database, segment: _Segment) -> None:
        if segment.fd is not None:  # fsync once per batch, off the event loop
            fd, segment.fd = segment.fd, None
            await asyncio.to_thread(_sync_close, fd)
        while True:
            rows, end, bad = await asyncio.to_thread(
                _read_rows, segment.path, segment.offset, self.batch_size
            )
            if bad:
                log.warning("ledger: %d unreadable line(s) in %s skipped", bad, segment.path)
            if end == segment.offset:
                break
            written = await self._insert(db, rows)
            segment.offset, segment.done = end, segment.done + len(rows) + bad
            self.written += written
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)

    async def _insert(self, db: Database, rows: list[LedgerRow]) -> int:
        """Write ``rows``; how many went to the database (the others to the dead letters).
        Any error but a ``DataError`` propagates, and the whole batch is tried again later."""
        if self.before_write is not None and rows:
            await self.before_write(rows)
        return await self._isolate(db, rows)

    async def _isolate(self, db: Database, rows: list[LedgerRow]) -> int:
        """Insert ``rows``; when the database refuses their values, each half on its own, down
        to the single rows it refuses (a few statements for one bad row in a full batch). The
        insert is idempotent, so a half written before a later failure is harmless."""
        if not rows:
            return 0
        try:
            await insert_rows(db, rows)
            return len(rows)
        except DataError as exc:
            if len(rows) == 1:
                await self._dead_letter(rows[0], exc)
                return 0
        half = len(rows) // 2
        return await self._isolate(db, rows[:half]) + await self._isolate(db, rows[half:])

    async def _dead_letter(self, row: LedgerRow, exc: DataError) -> None:
        """Set ``row`` aside with the reason, durably, before its spool line is passed over;
        if that fails (a full disk) the error propagates and the batch waits in the spool.
        A row already set aside (its batch retried after the connection failed) is not again."""
        if row.request_id in self._set_aside:
            return
        reason = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode()
        entry = {"at": time.time(), "reason": reason, "row": sanitized(row)}
        line = _encoder.encode(entry) + b"\n"
        await asyncio.to_thread(_append_synced, self.dead_letter_path, line)
        self.dead_letters += 1
        if len(self._set_aside) >= self.memory_rows:
            self._set_aside.clear()
        self._set_aside.add(row.request_id)
        now = time.monotonic()
        if now - self._dead_logged_at >= LOG_EVERY:  # one line, then one every 30 s at most
            self._dead_logged_at = now
            log.error(
                "ledger: the database refused request %s's row (%s); it is set aside in %s "
                "and the other rows are written (%d set aside since start-up)",
                row.request_id,
                reason,
                self.dead_letter_path,
                self.dead_letters,
            )

    def _failed(self, exc: Exception) -> None:
        self.write_errors += 1
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        elif now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        log.error(
            "ledger: cannot write to the database (%s); %d row(s) waiting in %s, retrying",
            f"{type(exc).__name__}: {exc}",
            self.backlog,
            self.spool_dir,
        )

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning(
                "ledger: the database is writable again after %.0f s; the rows kept meanwhile "
                "are written",
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    # --- shutdown -------------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (not a cancel scope)
        """Write everything pending, for up to ``timeout`` seconds; what the database did not
        take by then stays in the spool (fsynced) and is written at the next start. The
        timeout bounds the database wait only: the spool work after it always completes."""
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                log.exception("ledger: the writer failed")
        while self._memory:  # kept in memory because the spool failed; it may work now
            try:
                self._append(self._memory[0])
            except OSError:
                break
            self._memory.popleft()
        await self._sync_active()
        self._seal()
        for segment in self._sealed:
            if segment.fd is not None:
                fd, segment.fd = segment.fd, None
                await asyncio.to_thread(_sync_close, fd)
        if self.backlog:
            log.error(
                "ledger: %d row(s) not yet in the database at shutdown; kept in %s and written "
                "at the next start%s",
                self.spooled,
                self.spool_dir,
                f" ({len(self._memory)} held in memory are lost)" if self._memory else "",
            )
        self._release()

    def _release(self) -> None:
        """Give up our name: our files left behind are now a dead writer's, adopted next time."""
        if self._lock_fd is not None:
            if not self._sealed:
                with contextlib.suppress(OSError):
                    os.unlink(self.spool_dir / f"{PREFIX}{self._owner}{LOCK}")
            os.close(self._lock_fd)
        self._owner, self._lock_fd, self._sealed = None, None, []


def _adopt(spool_dir: Path, owner: str) -> list[_Segment]:
    """Take over the spool files of writers that are gone, renaming them into ``owner``'s
    name so that only we replay them (run in a thread at start; touches no writer state)."""
    owners: dict[str, list[Path]] = collections.defaultdict(list)
    for path in sorted(spool_dir.glob(f"{PREFIX}*{SEGMENT}")):
        owners[path.name[len(PREFIX) : -len(SEGMENT)].rpartition("-")[0]].append(path)
    adopted: list[_Segment] = []
    for other, paths in owners.items():
        if other == owner:
            continue
        lock = spool_dir / f"{PREFIX}{other}{LOCK}"
        try:
            fd: int | None = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None  # its adopter died before finishing: nobody holds these files
        if fd is not None and not _try_lock(fd):
            os.close(fd)
            continue  # alive
        try:
            for path in paths:
                mine = spool_dir / f"{PREFIX}{owner}-r{len(adopted) + 1:06d}{SEGMENT}"
                try:
                    os.rename(path, mine)
                except FileNotFoundError:
                    continue  # another writer took it first
                adopted.append(_Segment(str(mine), rows=mine.read_bytes().count(b"\n")))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
        finally:
            if fd is not None:
                os.close(fd)
    return adopted


def _append_synced(path: Path, line: bytes) -> None:
    """One ``write()`` to an ``O_APPEND`` file (so processes sharing it never interleave a
    line), fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_rows(path: str, offset: int, limit: int) -> tuple[list[LedgerRow], int, int]:
    """Up to ``limit`` rows from ``offset``: the rows, the offset after them, and how many
    lines could not be read (a line torn by a crash or a full disk)."""
    rows: list[LedgerRow] = []
    bad = 0
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            while len(rows) < limit:
                line = file.readline()
                if not line:
                    break
                offset += len(line)
                try:
                    rows.append(_decoder.decode(line))
                except msgspec.DecodeError:
                    bad += 1
    except FileNotFoundError:
        pass  # written and removed by whoever renamed it away
    return rows, offset, bad


if sys.platform == "win32":

    def _try_lock(fd: int) -> bool:
        """No flock on Windows: one writer per spool directory is assumed there."""
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
