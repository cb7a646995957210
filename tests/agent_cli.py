"""Real coding agents (Claude Code, Codex CLI) run non-interactively against a URL, as a user
would run them, but offline: a fresh HOME and config directory per run, every non-essential
network feature off, the key a fake one. Installed by ``npm ci --prefix tests/agents``.

``run_claude`` and ``run_codex`` return the exit code, stdout and stderr of one run, killed (with
its children) after ``kill_after`` seconds. Both are coroutines, so a test can run an agent against
a gateway served in the same event loop; ``settled``, ``refused`` and ``ledger_rows`` then tell
what that gateway made of the run. To see every answer the agent got (status, headers, body), put
``tests/recorder.py`` in front of the gateway (``recorder.start(upstream=gateway_url)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.servers import RunningGateway
    from tokenrelay.records import StreamRecord

AGENTS_DIR = Path(__file__).resolve().parent / "agents"
_BIN = AGENTS_DIR / "node_modules" / ".bin"
CLAUDE = _BIN / "claude"
CODEX = _BIN / "codex"
FAKE_KEY = "trk_agent_test_key_not_real"

# Claude Code 2.1: everything but the model API off (the first switch covers telemetry, error
# reporting, the auto-updater and feature-flag fetches; the others are belt and braces).
CLAUDE_OFFLINE = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
}


def installed() -> bool:
    """Whether ``npm ci --prefix tests/agents`` has put both CLIs in place."""
    return CLAUDE.exists() and CODEX.exists()


def require_installed() -> None:
    """Skip (fail under CI=true) a test that needs the real CLIs when they are missing."""
    if not installed():
        from tests.services import unavailable

        unavailable(f"the coding agents are not installed: run `npm ci --prefix {AGENTS_DIR}`")


@dataclass(frozen=True)
class AgentRun:
    """One run of an agent; ``exit_code`` is None when it was killed at the timeout."""

    agent: str
    argv: list[str]
    exit_code: int | None
    stdout: str
    stderr: str
    elapsed: float
    home: str  # removed after the run; kept to recognise the path in captured requests
    workdir: str

    def describe(self) -> str:
        """Everything a failed assertion needs to show."""
        return (
            f"{self.agent} exited {self.exit_code} after {self.elapsed:.1f} s\n"
            f"argv: {self.argv}\n--- stdout\n{self.stdout[-4000:]}\n"
            f"--- stderr\n{self.stderr[-4000:]}"
        )


def _base_environ(home: Path) -> dict[str, str]:
    """A clean environment: no proxy, no provider key, no user config, a PATH with node."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "TERM": "dumb",
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
    }


def claude_environ(
    home: Path, base_url: str, key: str = FAKE_KEY, headers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Claude Code pointed at ``base_url`` (the gateway's root: it appends /v1/messages);
    ``headers`` go on every request."""
    custom = "\n".join(f"{name}: {value}" for name, value in (headers or {}).items())
    return {
        **({"ANTHROPIC_CUSTOM_HEADERS": custom} if custom else {}),
        **_base_environ(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": key,  # sent as Authorization: Bearer, as a tokenrelay key is
        **CLAUDE_OFFLINE,
    }


def codex_config(
    base_url: str,
    model: str,
    *,
    websockets: bool = False,
    retries: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """``$CODEX_HOME/config.toml`` with a provider at ``base_url`` (ending in /v1), keyed by the
    ``TOKENRELAY_API_KEY`` variable. ``websockets`` false is Codex 0.171's default for a provider
    of one's own; true (the built-in OpenAI provider's) first tries a WebSocket on /v1/responses,
    then POSTs. ``retries`` sets both of Codex's retry counts (request and stream; None: its
    defaults); ``headers`` go on every request."""
    tries = (
        []
        if retries is None
        else [f"request_max_retries = {retries}", f"stream_max_retries = {retries}"]
    )
    return "\n".join(
        [
            f"model = {json.dumps(model)}",
            'model_provider = "tokenrelay"',
            "check_for_update_on_startup = false",
            "",
            "[model_providers.tokenrelay]",
            'name = "tokenrelay"',
            f"base_url = {json.dumps(base_url)}",
            'env_key = "TOKENRELAY_API_KEY"',
            'wire_api = "responses"',
            f"supports_websockets = {'true' if websockets else 'false'}",
            *tries,
            *([f"http_headers = {_toml_table(headers)}"] if headers else []),
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[feedback]",
            "enabled = false",
            "",
        ]
    )


def _toml_table(values: Mapping[str, str]) -> str:
    return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in values.items()) + " }"


def codex_environ(home: Path, key: str = FAKE_KEY) -> dict[str, str]:
    return {**_base_environ(home), "CODEX_HOME": str(home / ".codex"), "TOKENRELAY_API_KEY": key}


async def _run(
    agent: str,
    argv: list[str],
    env: Mapping[str, str],
    home: Path,
    workdir: Path,
    kill_after: float,
) -> AgentRun:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout kills its children too
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), kill_after)
        code: int | None = proc.returncode
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = await proc.communicate()
        code = None
    return AgentRun(
        agent,
        argv,
        code,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.monotonic() - started,
        str(home),
        str(workdir),
    )


@contextlib.contextmanager
def _scratch_home(prefix: str, given: Path | None) -> Iterator[Path]:
    """A fresh home with ``tmp`` and ``work`` in it, removed afterwards unless ``given``."""
    home = given or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        (home / "work").mkdir(exist_ok=True)
        yield home
    finally:
        if given is None:
            shutil.rmtree(home, ignore_errors=True)


async def run_claude(
    base_url: str,
    prompt: str,
    *,
    model: str,
    key: str = FAKE_KEY,
    kill_after: float = 90.0,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
    home: Path | None = None,
    headers: Mapping[str, str] | None = None,
) -> AgentRun:
    """``claude -p PROMPT --model MODEL`` in a fresh home; ``files`` are written to its working
    directory first, ``env`` added to its environment; ``home`` (kept) instead of a temporary
    one (removed)."""
    with _scratch_home("claude-home-", home) as home:
        workdir = home / "work"
        for name, text in (files or {}).items():
            (workdir / name).write_text(text)
        environ = {**claude_environ(home, base_url, key, headers), **(env or {})}
        argv = [str(CLAUDE), "-p", prompt, "--model", model, *args]
        return await _run("claude", argv, environ, home, workdir, kill_after)


async def run_codex(
    base_url: str,
    prompt: str,
    *,
    model: str,
    key: str = FAKE_KEY,
    kill_after: float = 90.0,
    websockets: bool = False,
    retries: int | None = None,
    args: Sequence[str] = (),
    files: Mapping[str, str] | None = None,
    home: Path | None = None,
    headers: Mapping[str, str] | None = None,
) -> AgentRun:
    """``codex exec PROMPT`` in a fresh home whose config.toml points at ``base_url``."""
    with _scratch_home("codex-home-", home) as home:
        workdir = home / "work"
        for name, text in (files or {}).items():
            (workdir / name).write_text(text)
        (home / ".codex").mkdir(exist_ok=True)
        config = codex_config(
            base_url, model, websockets=websockets, retries=retries, headers=headers
        )
        (home / ".codex" / "config.toml").write_text(config)
        argv = [str(CODEX), "exec", "--skip-git-repo-check", *args, prompt]
        return await _run("codex", argv, codex_environ(home, key), home, workdir, kill_after)


# --- what the gateway saw of a run (an in-process gateway of tests/servers.py) ------------------


async def settled(gw: RunningGateway, since: int) -> list[StreamRecord]:
    """The gateway's records of a run, once no new one has come for half a second (a record
    follows its response, which the agent may have read before the gateway finished)."""
    count, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 0.5:
        if len(gw.records) != count:
            count, quiet_since = len(gw.records), time.monotonic()
        await asyncio.sleep(0.05)
    return gw.records[since:]


def refused(records: list[StreamRecord]) -> list[str]:
    """The records of requests the gateway answered with an error, one line each."""
    return [f"{r.status} {r.error_type} {r.route!r}" for r in records if r.status >= 400]


_LEDGER_COLUMNS = (
    "request_id, user_id, route, provider, model, status, outcome, error_type, input_tokens, "
    "output_tokens"
)


async def ledger_rows(gw: RunningGateway, request_ids: list[str]) -> list[dict[str, Any]]:
    """The ledger rows of these requests, once the writer has put them in the database."""
    db = await gw.gateway.gate.database()
    marks = ", ".join("?" * len(request_ids))
    deadline = time.monotonic() + 15
    while True:
        rows = await db.fetch_all(
            f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE request_id IN ({marks})",
            tuple(request_ids),
        )
        if len(rows) == len(request_ids) or time.monotonic() > deadline:
            return [dict(row) for row in rows]
        await asyncio.sleep(0.1)
