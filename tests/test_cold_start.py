"""What a start-up imports, checked in a fresh interpreter: the guard against cold-start
regressions (issue 20; the times are in bench/cold_start.py and BENCHMARKS.md, never asserted
here). Each package named below costs milliseconds to tens of milliseconds to import and is
not needed before the first request of a gateway configured without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parents[1] / "src")

# What the command line on click (``--help``, ``ask``: ``tokenrelay.commands``) must leave out.
NOT_FOR_CLI = (
    "aiohttp",
    "asyncio",
    "genai_prices",
    "httptools",
    "msgspec",
    "opentelemetry",
    "psycopg",
    "redis",
    "starlette",
    "tokenrelay.server",
    "tokenrelay.settings",
    "uvicorn",
)
# What ``serve`` must leave out up to a started gateway, with a provider configured, SQLite,
# no Redis, no tracing, no config file and no cache: the pages (Starlette), the price table
# (loaded in a thread a second later), the shared state, the demo simulator's server, a
# WebSocket library some other package installed, and the ledger's database driver.
NOT_FOR_SERVE = (
    "aiohttp",
    "aiosqlite",
    "asyncpg",
    "click",  # the other commands' command line, and uvicorn's (tokenrelay.uvicorn_parts)
    "genai_prices",
    "httpx",
    "multiprocessing",  # uvicorn's supervisors: only with several workers
    "opentelemetry",
    "psycopg",
    "pydantic",
    "redis",
    "sqlite3",
    "starlette",
    "tokenrelay.cache.service",
    "tokenrelay.commands",
    "tokenrelay.endpoints",
    "tokenrelay.shared_state",
    "tokenrelay.simulator",
    "tokenrelay.workers",
    "tomllib",
    "websockets",
)

_PROBE = r"""
import json, sys

import tokenrelay.commands

print(json.dumps(sorted(sys.modules)))
"""

# ``tokenrelay serve`` as the command runs it, up to a started gateway (the server's run
# stops short of binding a port).
_SERVE_PROBE = r"""
import json, sys

import tokenrelay.cli

after_cli = sorted(sys.modules)  # before anything else is imported

import tokenrelay.server


def started_gateway(settings) -> None:
    import uvloop

    from tokenrelay.app import create_app
    from tokenrelay.uvicorn_parts import Config

    app = create_app(settings)

    async def start() -> None:
        config = Config(app, **tokenrelay.server.uvicorn_options(settings))
        config.load()
        await app.gateway.start()
        started.extend(sorted(sys.modules))
        await app.gateway.stop()

    uvloop.run(start())


started: list[str] = []
tokenrelay.server.run = started_gateway
sys.argv = ["tokenrelay", "serve", "--log-level", "warning"]
tokenrelay.cli.main()
from tokenrelay.screening import rules

tries = rules._tries.cache_info().currsize
print(json.dumps({"cli": after_cli, "serve": started, "tries": tries}))
"""


def _probe(tmp_path: Path, probe: str = _SERVE_PROBE, demo: bool = False) -> Any:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TOKENRELAY_", "OPENAI_", "ANTHROPIC_", "GEMINI_"))
    }
    env.update(
        {
            "PYTHONPATH": SRC,
            "TOKENRELAY_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
            "TOKENRELAY_LOG_LEVEL": "warning",
        }
    )
    if not demo:
        env["TOKENRELAY_PROVIDERS__OPENAI__API_KEY"] = "test"
        env["TOKENRELAY_PROVIDERS__OPENAI__BASE_URL"] = "http://127.0.0.1:9/v1"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _loaded(modules: object, names: tuple[str, ...]) -> list[str]:
    assert isinstance(modules, list)
    return sorted(
        {name for name in names for module in modules if module.split(".")[0] == name}
        | {name for name in names if name in modules}
    )


def test_the_command_line_starts_without_the_heavy_packages(tmp_path: Path) -> None:
    assert _loaded(_probe(tmp_path, _PROBE), NOT_FOR_CLI) == []


def test_serve_starts_without_the_heavy_packages(tmp_path: Path) -> None:
    result = _probe(tmp_path)
    # the entry point alone: not even click (serve's options are read without it)
    assert _loaded(result["cli"], (*NOT_FOR_CLI, "click", "tokenrelay.commands")) == []
    serve = result["serve"]
    # the probe did reach a started gateway
    assert isinstance(serve, list) and "tokenrelay.relay" in serve
    assert _loaded(serve, NOT_FOR_SERVE) == []
    # the screening's re tries are built only for a text the Aho-Corasick pass cannot settle
    assert result["tries"] == 0


def test_the_ca_store_preloads_only_for_tls_upstreams() -> None:
    from tokenrelay.serve_command import calls_tls_upstreams as _calls_tls_upstreams
    from tokenrelay.settings import load

    key = {"TOKENRELAY_PROVIDERS__OPENAI__API_KEY": "k"}
    assert _calls_tls_upstreams(load(environ=key))  # the default base URL is https
    local = {**key, "TOKENRELAY_PROVIDERS__OPENAI__BASE_URL": "http://127.0.0.1:8000/v1"}
    assert not _calls_tls_upstreams(load(environ=local))
    remote = {**key, "TOKENRELAY_PROVIDERS__OPENAI__BASE_URL": "https://llm.example/v1"}
    assert _calls_tls_upstreams(load(environ=remote))
    assert not _calls_tls_upstreams(load(environ={}))  # demo mode: the simulator, plain HTTP
    assert not _calls_tls_upstreams(load(environ={**key, "TOKENRELAY_WORKERS": "2"}))


def test_demo_mode_serves_its_simulator_without_aiohttp_s_client(tmp_path: Path) -> None:
    serve = _probe(tmp_path, demo=True)["serve"]
    assert "aiohttp.web" in serve  # the probe did start the demo simulator
    # aiohttp's client (its connector loads two SSL contexts at import), click, uvicorn's
    # supervisors: none of them serves a demo gateway's first request
    left_out = ("aiohttp.client", "aiohttp.connector", "click", "multiprocessing")
    assert [name for name in left_out if name in serve] == []
