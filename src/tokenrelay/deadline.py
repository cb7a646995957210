"""``asyncio.timeout`` for the two deadlines every request sets (the first token's, in
``failover.attempt``, and the upstream's answer, in ``Provider.stream``), at less cost.

The semantics are ``asyncio.timeout``'s (Python 3.11), step for step: the current task is
cancelled when the delay is over; leaving the block after that uncancels it, and a
``CancelledError`` becomes ``TimeoutError`` unless the task was also cancelled from elsewhere
(then the cancellation goes on). What it leaves out is what these callers never use
(rescheduling, ``when()``, the state enum, a deadline computed before entering), which is
about half of ``asyncio.timeout``'s Python per request.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """``async with Deadline(seconds):`` raises ``TimeoutError`` when the block takes longer."""

    __slots__ = ("_cancelling", "_handle", "_seconds", "_task", "expired")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self.expired = False

    async def __aenter__(self) -> Deadline:
        task = self._task = asyncio.current_task()
        if task is None:
            raise RuntimeError("deadline should be used inside a task")
        self._cancelling = task.cancelling()
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        assert self._task is not None
        self._task.cancel()
        self.expired = True
        self._handle = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc_val
