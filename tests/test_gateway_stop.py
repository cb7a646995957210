"""A shutdown always ends: a component whose close hangs is named in the log and passed over,
and the components after it still close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tokenrelay import gateway as gateway_module
from tokenrelay.gateway import Gateway
from tokenrelay.settings import load


@pytest.mark.asyncio
async def test_a_hanging_component_is_passed_over_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = Gateway(load(environ={}))
    closed: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def pool_close() -> None:
        closed.append("pool")

    monkeypatch.setattr(gateway.responses, "close", hangs)
    monkeypatch.setattr(gateway.pool, "close", pool_close)
    monkeypatch.setattr(gateway_module, "STOP_STEP_SECONDS", 0.05)
    with caplog.at_level(logging.WARNING, logger="tokenrelay"):
        await asyncio.wait_for(gateway.stop(), 2.0)
    assert closed == ["pool"]  # the step after the hanging one still ran
    assert "the response store did not close within 0.05 s" in caplog.text
