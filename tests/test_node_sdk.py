"""The Node SDKs against the gateway: ``node --test tests/node/`` (see tests/node/README.md) run
against a gateway on the test routes, with the real ``ai``, ``@ai-sdk/*``, ``openai`` and
``@openai/agents`` packages pinned in tests/node/package-lock.json. Two API keys of the gateway
(``TOKENRELAY_KEY``, ``TOKENRELAY_OTHER_KEY``) let the tests store responses and check that one
key cannot read another's."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.servers import gateway_environ, gateway_server
from tests.services import unavailable
from tokenrelay.gate.keys import KeyStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

NODE_DIR = Path(__file__).resolve().parent / "node"
TIMEOUT_S = 120
# At least this many node tests must pass: a suite that silently ran nothing is a failure.
MIN_TESTS = 55


async def test_ai_sdk_node_suite_passes(simulator: Any) -> None:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (Node 20+; the AI SDK tests need it)")
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        unavailable("tests/node/node_modules is missing: run `npm ci --prefix tests/node`")

    async with gateway_server(gateway_environ(simulator.url)) as gw:
        keys = KeyStore(await gw.gateway.gate.database())
        _, key = await keys.create("node-sdk", "acme")
        _, other_key = await keys.create("node-sdk-other", "acme")
        env = {
            **os.environ,
            "TOKENRELAY_URL": gw.url,
            "TOKENRELAY_SIM_URL": simulator.url,
            "TOKENRELAY_KEY": key,
            "TOKENRELAY_OTHER_KEY": other_key,
            "NO_COLOR": "1",
        }
        # In tests/node with no path: node's default patterns (*.test.mjs, node_modules
        # skipped), the same on Node 20, where a path would be a directory to search, and on
        # Node 22+, where it would be a glob. One file at a time: the abort tests read the
        # simulator's disconnect log, which every file shares.
        proc = await asyncio.create_subprocess_exec(
            node,
            "--test",
            "--test-concurrency=1",
            "--test-reporter=tap",
            cwd=NODE_DIR,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            output, _ = await proc.communicate()
            pytest.fail(f"node --test ran over {TIMEOUT_S} s:\n{output.decode(errors='replace')}")

    report = output.decode(errors="replace")
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail|cancelled) (\d+)$", report, re.M)}
    assert proc.returncode == 0, f"node --test exited {proc.returncode}:\n{report}"
    assert counts.get("fail") == 0 and counts.get("cancelled") == 0, report
    assert counts.get("pass", 0) >= MIN_TESTS, report
