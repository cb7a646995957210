"""Gemini CLI through the gateway's Gemini front in demo mode, offline: one one-line task, exit
0, the answer printed, every request served on a ``gemini-*`` provider model (its first call
routes the prompt with a small model the default allow-list admits) and a ledger row each."""

from __future__ import annotations

import json
import tempfile

import pytest

from tests.agent_cli import ledger_rows, refused, settled
from tests.gemini_cli import GEMINI, run_gemini
from tests.servers import clean_environ, gateway_server
from tokenrelay.gate.keys import KeyStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Valid JSON, so the CLI's routing classifier (which asks for a JSON answer) takes the first
# reply instead of retrying with backoff; the main answer is the same text.
ANSWER = json.dumps({"reasoning": "simple", "complexity_score": 10, "model_choice": "flash"})


async def test_gemini_cli_one_line_task_in_demo_mode() -> None:
    if not GEMINI.exists():
        from tests.services import unavailable

        unavailable("Gemini CLI is not installed: run `npm ci --prefix tests/agents`")
    scratch = tempfile.mkdtemp(prefix="tokenrelay-gemini-cli-")
    environ = clean_environ(
        TOKENRELAY_DATABASE_URL=f"sqlite:///{scratch}/gateway.db",
        TOKENRELAY_SIMULATOR__TTFT_MS="5",
        TOKENRELAY_SIMULATOR__TOKEN_DELAY_MS="1",
        TOKENRELAY_SIMULATOR__TEXT=json.dumps(ANSWER),  # a JSON string, not an object
        TOKENRELAY_ANONYMOUS_LIMIT="100000/minute",
    )
    async with gateway_server(environ) as gw:
        assert gw.gateway.demo
        _, key = await KeyStore(await gw.gateway.gate.database()).create("gemini-cli", "tests")
        run = await run_gemini(gw.url, "Say hi in one word.", key=key)
        records = await settled(gw, 0)
        assert run.exit_code == 0, run.describe()
        assert "complexity_score" in run.stdout, run.describe()
        assert records and not refused(records), refused(records)
        assert all(r.dialect == "gemini" and r.provider == "gemini" for r in records)
        assert all((r.model or "").startswith("gemini-") for r in records)
        rows = await ledger_rows(gw, [r.request_id for r in records])
        assert len(rows) == len(records)
        assert all(row["user_id"] == "gemini-cli" and row["status"] == 200 for row in rows)
