"""Metrics across workers: each worker's families as a small file in a directory they share, so
whichever worker is scraped can serve the totals of all of them.

Each worker writes ``<pid>.snap`` (msgpack: its pid, the time, whether it is still running, and
every family's children as plain data) at most once a second and once more when it exits;
writes go to a temporary name and are renamed, so a reader never sees half a file. The reader
keeps every file: a worker that exited or was killed still counts in the counters and
histograms (they never go down, which Prometheus would read as a reset), while its gauges drop
out as soon as its process is gone or its file is stale.

The directory belongs on a memory file system (the supervisor picks ``/dev/shm`` when it can):
nothing here is worth a disk write, and it is removed when the supervisor exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

log = logging.getLogger("tokenrelay.metrics")

SUFFIX = ".snap"
WRITE_EVERY = 1.0  # seconds between a worker's snapshots
STALE_AFTER = 10.0  # a live worker's gauges older than this are left out (a stuck worker)


class Snapshot(msgspec.Struct, array_like=True):
    """One worker's families: name -> ``Metric.dump()``."""

    pid: int
    time: float
    running: bool
    families: dict[str, list[Any]]


@dataclass(slots=True)
class Others:
    """What the other workers' snapshots hold, split by how a family may merge them."""

    every: dict[str, list[list[Any]]] = field(default_factory=dict)  # all workers, ever
    live: dict[str, list[list[Any]]] = field(default_factory=dict)  # workers running now
    workers: int = 0  # snapshots read
    running: int = 0  # of which from workers running now


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


class Snapshots:
    """This worker's file in ``directory``, and the reading of everyone else's."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.pid = os.getpid()
        self.path = os.path.join(directory, f"{self.pid}{SUFFIX}")

    def write(self, families: dict[str, list[Any]], *, running: bool = True) -> None:
        """Replace this worker's file (a few kilobytes on a memory file system)."""
        data = _encoder.encode(Snapshot(self.pid, time.time(), running, families))
        temporary = f"{self.path}.{time.monotonic_ns()}.tmp"
        try:
            with open(temporary, "wb") as file:
                file.write(data)
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("metrics: cannot write this worker's snapshot: %s", exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def read_others(self) -> Others:
        others = Others()
        now = time.time()
        for snapshot in self._snapshots():
            others.workers += 1
            live = snapshot.running and now - snapshot.time < STALE_AFTER and _alive(snapshot.pid)
            others.running += live
            for name, dump in snapshot.families.items():
                others.every.setdefault(name, []).append(dump)
                if live:
                    others.live.setdefault(name, []).append(dump)
        return others

    def _snapshots(self) -> Iterable[Snapshot]:
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            log.warning("metrics: cannot read the workers' snapshots: %s", exc)
            return
        for name in names:
            if not name.endswith(SUFFIX) or name == f"{self.pid}{SUFFIX}":
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as file:
                    yield _decoder.decode(file.read())
            except (OSError, msgspec.DecodeError) as exc:
                log.warning("metrics: skipping the snapshot %s: %s", name, exc)


def clear(directory: str) -> None:
    """Remove the snapshots of an earlier run (a new supervisor starts its counts at zero)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.endswith(SUFFIX) or name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
