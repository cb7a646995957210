"""The garbage collector settled once a served process is up (``tokenrelay serve``: start-up's
objects frozen out of its sight, young collections ten times rarer), and left alone by a server
started inside another program (these tests)."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServeProcess, clean_environ, gateway_environ, gateway_server


def test_settling_freezes_what_exists_and_raises_the_young_threshold() -> None:
    code = (
        "import gc; from tokenrelay.server import settle_garbage_collector;"
        "before = gc.get_freeze_count(); settle_garbage_collector();"
        "print(before, gc.get_freeze_count() > 1000, gc.get_threshold()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environ(),
        check=True,
    ).stdout.split()
    assert out == ["0", "True", "7000"]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_server_inside_another_program_leaves_its_collector_alone(simulator: Any) -> None:
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    # the server class `tokenrelay serve` runs, started here as the tests do
    async with gateway_server(gateway_environ(simulator.url), drains=True) as gw:
        assert gw.server is not None and gw.server.started
    assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen, threshold)


def test_serve_starts_with_the_collector_off_and_runs_it_again_once_settled(
    tmp_path: Path,
) -> None:
    env = clean_environ(
        TOKENRELAY_PROVIDERS__OPENAI__API_KEY="test",
        TOKENRELAY_PROVIDERS__OPENAI__BASE_URL="http://127.0.0.1:9/v1",
        TOKENRELAY_DATABASE_URL=f"sqlite:///{tmp_path}/ledger.db",
    )
    server = ServeProcess(env, "--log-level", "debug")
    time.sleep(2)  # settled a second after the server is up
    code, output = server.stop()
    assert code == 0
    settled = [line for line in output.splitlines() if "garbage collector settled" in line]
    assert len(settled) == 1 and settled[0].endswith("collecting: True"), output
