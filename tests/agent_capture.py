"""Records what the real coding agents send, into the fixtures of ``tests/data/agents/``.

``PYTHONPATH=src python -m tests.agent_capture [NAME ...]`` runs each scenario (or those named)
against a fresh recorder (``tests/recorder.py``, which answers like the provider would), then
writes one JSON file per
scenario: the agent's version and command, and every request it made, sanitized (the key and
the temporary home replaced by placeholders). Rerun it when the versions in
``tests/agents/package.json`` move; the tests replay these files against the gateway.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import recorder
from tests.agent_cli import CLAUDE, CODEX, FAKE_KEY, AgentRun, run_claude, run_codex

FIXTURES = Path(__file__).resolve().parent / "data" / "agents"
HOME = "<HOME>"
KEY = "<KEY>"


def version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def sanitize(value: Any, home: str) -> Any:
    """The capture with the temporary home (its realpath too, and the dashed form Claude Code
    names its project directory after) and the key replaced."""
    text = json.dumps(value)
    for path in {home, str(Path(home).resolve())}:
        dashed = re.sub("[^A-Za-z0-9]", "-", path)
        text = text.replace(path, HOME).replace(dashed, "-" + HOME)
    return json.loads(text.replace(FAKE_KEY, KEY))


@dataclass(frozen=True)
class Scenario:
    name: str
    agent: str
    describe: str
    run: Callable[[str, Path], Awaitable[AgentRun]]  # given the recorder's URL and a home
    tool_call: dict[str, Any] | None = None


READ_ME = {"hello.txt": "hello from the fixture\n"}

SCENARIOS = [
    Scenario(
        "claude_code_say_hi_provider_model",
        "claude",
        "claude -p 'say hi' --model claude-sonnet-5-5",
        lambda url, home: run_claude(url, "say hi", model="claude-sonnet-5-5", home=home),
    ),
    Scenario(
        "claude_code_say_hi_route_alias",
        "claude",
        "claude -p 'say hi' --model default (Claude Code's own alias: it sends its default model)",
        lambda url, home: run_claude(url, "say hi", model="default", home=home),
    ),
    Scenario(
        "claude_code_say_hi_route_name",
        "claude",
        "claude -p 'say hi' --model opus with ANTHROPIC_DEFAULT_OPUS_MODEL=default "
        "(how a route named like an alias is reached)",
        lambda url, home: run_claude(
            url, "say hi", model="opus", env={"ANTHROPIC_DEFAULT_OPUS_MODEL": "default"}, home=home
        ),
    ),
    Scenario(
        "claude_code_tool_turn",
        "claude",
        "claude -p 'read hello.txt' --model claude-sonnet-5-5; the first answer is a Read "
        "tool call, so the second request carries its tool_result",
        lambda url, home: run_claude(
            url, "read hello.txt", model="claude-sonnet-5-5", files=READ_ME, home=home
        ),
        tool_call={"name": "Read", "input": {"file_path": HOME + "/work/hello.txt"}},
    ),
    Scenario(
        "claude_code_context",
        "claude",
        "claude -p /context --model claude-sonnet-5-5 (the context report: count_tokens calls)",
        lambda url, home: run_claude(url, "/context", model="claude-sonnet-5-5", home=home),
    ),
    Scenario(
        "codex_say_hi",
        "codex",
        "codex exec 'say hi' with model gpt-5.5, supports_websockets = true",
        lambda url, home: run_codex(
            url + "/v1", "say hi", model="gpt-5.5", websockets=True, home=home
        ),
    ),
    Scenario(
        "codex_say_hi_route_name",
        "codex",
        "codex exec 'say hi' with model default (a route name), supports_websockets = true",
        lambda url, home: run_codex(
            url + "/v1", "say hi", model="default", websockets=True, home=home
        ),
    ),
    Scenario(
        "codex_tool_turn",
        "codex",
        "codex exec 'show hello.txt' with model gpt-5.5, supports_websockets = true; the first "
        "answer is an exec_command call, so the second request carries its function_call_output",
        lambda url, home: run_codex(
            url + "/v1",
            "show hello.txt",
            model="gpt-5.5",
            websockets=True,
            files=READ_ME,
            home=home,
        ),
        tool_call={"name": "exec_command", "arguments": json.dumps({"cmd": "cat hello.txt"})},
    ),
]


async def capture(scenario: Scenario) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"{scenario.agent}-home-"))
    call = scenario.tool_call
    if call is not None:
        call = json.loads(json.dumps(call).replace(HOME, str(home)))
    running = await recorder.start(tool_call=call)
    try:
        run = await scenario.run(running.url, home)
    finally:
        await running.stop()
        shutil.rmtree(home, ignore_errors=True)
    binary = CLAUDE if scenario.agent == "claude" else CODEX
    sanitized: dict[str, Any] = sanitize(
        {
            "scenario": scenario.name,
            "agent": scenario.agent,
            "version": version(binary),
            "command": scenario.describe,
            "exit_code": run.exit_code,
            "stdout": run.stdout,
            "requests": running.records,
        },
        run.home,
    )
    return sanitized


def main() -> None:
    """All scenarios, or those named on the command line."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    chosen = set(sys.argv[1:])

    async def all_scenarios() -> None:
        for scenario in SCENARIOS:
            if chosen and scenario.name not in chosen:
                continue
            data = await capture(scenario)
            path = FIXTURES / f"{scenario.name}.json"
            path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
            print(f"{path.name}: exit {data['exit_code']}, {len(data['requests'])} requests")

    asyncio.run(all_scenarios())


if __name__ == "__main__":
    main()
