"""Shared fixtures: one wire-exact simulator on a loopback port for the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def simulator() -> AsyncIterator[RunningSimulator]:
    """Fast defaults (5 ms to the first token, 20 tokens 1 ms apart); tests steer it per request
    with ``x-sim-*`` headers or ``?knob=`` queries."""
    running = await start(SimulatorSettings(ttft_ms=5, tokens=20, token_delay_ms=1))
    try:
        yield running
    finally:
        await running.stop()
