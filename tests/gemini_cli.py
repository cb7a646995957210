"""Gemini CLI (``@google/gemini-cli``, installed by ``npm ci --prefix tests/agents``) run
non-interactively (``gemini -p``) against a gateway's Gemini front, offline: a fresh HOME whose
``.gemini/settings.json`` selects API-key auth, the base URL in ``GOOGLE_GEMINI_BASE_URL`` and a
tokenrelay key as ``GEMINI_API_KEY``. Built like ``tests/agent_cli.py``'s runners."""

from __future__ import annotations

import json
from pathlib import Path

from tests.agent_cli import AGENTS_DIR, AgentRun, _base_environ, _run, _scratch_home

GEMINI = AGENTS_DIR / "node_modules" / ".bin" / "gemini"
SETTINGS = {"security": {"auth": {"selectedType": "gemini-api-key"}}}


def gemini_environ(home: Path, base_url: str, key: str) -> dict[str, str]:
    return {
        **_base_environ(home),
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_API_KEY": key,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
    }


async def run_gemini(
    base_url: str, prompt: str, *, key: str, model: str | None = None, kill_after: float = 180.0
) -> AgentRun:
    """``gemini -p PROMPT [-m MODEL]`` in a fresh home (removed afterwards)."""
    with _scratch_home("gemini-home-", None) as home:
        (home / ".gemini").mkdir(exist_ok=True)
        (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
        argv = [str(GEMINI), "-p", prompt, *(["-m", model] if model else [])]
        environ = gemini_environ(home, base_url, key)
        return await _run("gemini", argv, environ, home, home / "work", kill_after)
