"""``deadline.Deadline`` behaves as ``asyncio.timeout`` does in each case the failover and the
provider rely on: a block that ends in time, one that overruns, an error raised inside, and a
cancellation from elsewhere that must stay a cancellation (a client leaving mid-attempt)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tokenrelay.deadline import Deadline

Timeouts = Callable[[float], AbstractAsyncContextManager[Any]]
BOTH = pytest.mark.parametrize("limited", [asyncio.timeout, Deadline], ids=["asyncio", "ours"])


@BOTH
async def test_a_block_within_its_deadline_returns_its_value(limited: Timeouts) -> None:
    async with limited(5):
        value = await asyncio.sleep(0, "done")
    assert value == "done"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@BOTH
async def test_an_overrun_is_a_timeout_error_and_the_task_is_not_left_cancelled(
    limited: Timeouts,
) -> None:
    with pytest.raises(TimeoutError) as raised:
        async with limited(0.01):
            await asyncio.sleep(5)
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and the task goes on


@BOTH
async def test_a_past_deadline_expires_at_the_first_await(limited: Timeouts) -> None:
    with pytest.raises(TimeoutError):
        async with limited(-1):
            await asyncio.sleep(1)


@BOTH
async def test_an_error_inside_passes_through(limited: Timeouts) -> None:
    with pytest.raises(ConnectionResetError):
        async with limited(5):
            await asyncio.sleep(0)
            raise ConnectionResetError("upstream reset")


@BOTH
async def test_a_cancellation_from_elsewhere_stays_a_cancellation(limited: Timeouts) -> None:
    """The client left while the attempt waited: no TimeoutError, the task ends cancelled."""
    entered = asyncio.Event()

    async def attempt() -> str:
        async with limited(5):
            entered.set()
            await asyncio.sleep(5)
        return "not reached"

    task = asyncio.create_task(attempt())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


@BOTH
async def test_a_cancellation_racing_the_deadline_stays_a_cancellation(
    limited: Timeouts,
) -> None:
    """Both the deadline and the client cancel the task in the same loop turn: the
    client's wins (the uncancel count says it was not the deadline's alone)."""
    entered = asyncio.Event()

    async def attempt() -> None:
        async with limited(0):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
