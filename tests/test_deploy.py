"""The deployment examples in deploy/ checked against the code, so they cannot drift from it.

- Every ``TOKENRELAY_*`` variable they name (comments included) is a field of ``Settings`` and is
  documented in docs/configuration.md, and the values they give load without a
  ``ConfigError``, together with the env file all three read.
- The paths they probe answer on a real gateway, and the image's HEALTHCHECK command itself is
  run against it (and fails once it is gone).
- They stop the process with SIGTERM and wait longer than it can take to exit: ``shutdown_grace``
  plus what ``tokenrelay.server`` and the ledger's flush take after it, plus Kubernetes's preStop
  sleep, which runs before the signal.
- ``systemd-analyze verify`` accepts the unit, where it is installed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import aiohttp
import msgspec
import pytest
import yaml

from tests.servers import gateway_environ, gateway_server
from tokenrelay import server
from tokenrelay.app import Gateway
from tokenrelay.settings import Settings, load

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "tokenrelay.service"
CONTAINERFILE = DEPLOY / "Containerfile"
KUBERNETES = DEPLOY / "kubernetes.yaml"
ENV_FILE = DEPLOY / "tokenrelay.env.example"
PAGES = {"Configuration": ROOT / "docs/configuration.md", "Deployment": ROOT / "docs/deployment.md"}
VARIABLE = re.compile(r"\bTOKENRELAY_[A-Z0-9_]*[A-Z0-9]")
SECRETS = {
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "TOKENRELAY_DATABASE_URL",
    "TOKENRELAY_REDIS_URL",
    "TOKENRELAY_AUDIT__SECRET",
}


def section(title: str) -> str:
    """The docs page on ``title`` (docs/configuration.md, docs/deployment.md)."""
    return PAGES[title].read_text(encoding="utf-8")


def shutdown_tail() -> float:
    """Seconds the process may still take after ``shutdown_grace`` (docs/deployment.md,
    Graceful shutdown): the interrupted streams' error events, anything else still open, the
    ledger's last flush."""
    flush = re.search(r"ledger\.close\(timeout=([\d.]+)\)", inspect.getsource(Gateway.stop))
    assert flush, "Gateway.stop no longer says how long the ledger's flush may take"
    return server._FINISH_WAIT + server._LAST_RESORT_WAIT + float(flush.group(1))


def env_file() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in ENV_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {key: value for key, value in pairs}


# --- the files, parsed ----------------------------------------------------------------------------


def unit() -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) in order (a key may repeat). Commented-out ``Environment=``
    lines count too, as ``#Environment``: an example must be right as well."""
    sections: dict[str, list[tuple[str, str]]] = {}
    entries: list[tuple[str, str]] = []
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("["):
            entries = sections.setdefault(line.strip("[]"), [])
        elif line.startswith("#Environment="):
            entries.append(("#Environment", line.partition("=")[2]))
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            entries.append((key.strip(), value.strip()))
    return sections


def unit_environment(service: list[tuple[str, str]]) -> dict[str, str]:
    """``Environment=`` assignments, quoted as systemd quotes them (like a shell's words)."""
    words = [
        w for key, v in service if key in ("Environment", "#Environment") for w in shlex.split(v)
    ]
    return dict(word.split("=", 1) for word in words)


def seconds(timespan: str) -> float:
    """A systemd time span: ``45``, ``45s``, ``1min 30s``."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", timespan)
    assert parts, f"not a time span: {timespan!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        name, _, arguments = pending.partition(" ")
        instructions.append((name.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction(name: str) -> str:
    found = [arguments for got, arguments in containerfile() if got == name]
    assert len(found) == 1, f"the Containerfile should have one {name}, has {len(found)}"
    return found[0]


def image_environment() -> dict[str, str]:
    words = [w for name, args in containerfile() if name == "ENV" for w in shlex.split(args)]
    return dict(word.split("=", 1) for word in words)


def healthcheck_command() -> list[str]:
    command = instruction("HEALTHCHECK").partition(" CMD ")[2]
    argv: list[str] = json.loads(command)
    return argv


def kubernetes() -> tuple[dict[str, Any], dict[str, Any]]:
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERNETES.read_text())}
    assert set(documents) == {"Deployment", "Service"}
    return documents["Deployment"], documents["Service"]


def pod_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


# --- settings ------------------------------------------------------------------------------------


def _unwrap(kind: Any) -> Any:
    if get_origin(kind) in (Union, UnionType):
        rest = [arg for arg in get_args(kind) if arg is not NoneType]
        if len(rest) == 1:
            return rest[0]
    return kind


def is_setting(name: str) -> bool:
    """Whether ``TOKENRELAY_A__B`` names a field of ``Settings`` (a dict's key is any name)."""
    kind: Any = Settings
    for key in name.removeprefix("TOKENRELAY_").lower().split("__"):
        kind = _unwrap(kind)
        if kind is Any:
            return True
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            fields = {field.name: field.type for field in msgspec.structs.fields(kind)}
            if key not in fields:
                return False
            kind = fields[key]
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        else:
            return False  # a value has no keys below it
    return True


def test_every_variable_named_is_a_documented_setting() -> None:
    table = section("Configuration")
    documented = set(VARIABLE.findall(table))
    wildcards = [w[:-1] for w in re.findall(r"TOKENRELAY_[A-Z0-9_]*__\*", table)]
    texts = {path.name: path.read_text(encoding="utf-8") for path in DEPLOY.iterdir()}
    texts["docs/deployment.md"] = section("Deployment")
    named = {(where, name) for where, text in texts.items() for name in VARIABLE.findall(text)}
    assert {name for _, name in named} >= {"TOKENRELAY_SHUTDOWN_GRACE", "TOKENRELAY_DATABASE_URL"}
    for where, name in sorted(named):
        assert is_setting(name), f"{where} names {name}, which is no setting"
        assert name in documented or name.startswith(tuple(wildcards)), (
            f"{where} names {name}, which docs/configuration.md does not document"
        )


def test_env_file_holds_the_secrets_and_reads_alike_everywhere() -> None:
    environ = env_file()
    assert set(environ) == SECRETS
    for key, value in environ.items():
        # systemd strips quotes, docker and kubectl keep them: none at all reads alike.
        assert value and not re.search(r"[\"'\s\\$`]", value), f"{key}: write the value bare"
    settings = load(environ=environ)
    assert settings.database_url.startswith("postgresql://") and settings.redis_url
    assert settings.audit.secret and not settings.demo_mode


def test_values_given_load() -> None:
    service = unit()["Service"]
    deployment, _ = kubernetes()
    pod_env = {item["name"]: item["value"] for item in pod_container(deployment)["env"]}
    everywhere = {
        "systemd": {**env_file(), **unit_environment(service)},
        "container": {**env_file(), **image_environment()},
        "kubernetes": {**env_file(), **image_environment(), **pod_env},
    }
    for where, environ in everywhere.items():
        settings = load(environ=environ)  # a bad name or value raises ConfigError
        assert settings.shutdown_grace == float(environ.get("TOKENRELAY_SHUTDOWN_GRACE", 30)), where
    assert load(environ=everywhere["container"]).host == "0.0.0.0"
    assert load(environ=everywhere["kubernetes"]).workers == 1


# --- systemd -------------------------------------------------------------------------------------


def test_systemd_unit_stops_after_the_drain() -> None:
    sections = unit()
    assert set(sections) == {"Unit", "Service", "Install"}
    service = dict(sections["Service"])  # the last value of a key wins, as in systemd
    grace = load(environ=unit_environment(sections["Service"])).shutdown_grace
    command = service["ExecStart"].split()
    assert Path(command[0]).name == "tokenrelay" and command[1:] == ["serve"]
    assert service["User"] not in ("root", "0") and service["EnvironmentFile"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # the supervisor passes the signal to its workers
    assert seconds(service["TimeoutStopSec"]) > grace + shutdown_tail()
    assert service["Restart"] == "on-failure"  # a drained stop exits 0 and stays stopped
    assert int(service["LimitNOFILE"]) >= 4096
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict")]:
        assert service[key] == value
    assert service["PrivateTmp"] == "yes"
    # The spool lives in the working directory: it must be writable and kept.
    workdir = service["WorkingDirectory"]
    assert workdir == "/var/lib/" + service["StateDirectory"]
    assert workdir in service["ReadWritePaths"].split()


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not verified")
    text = UNIT.read_text(encoding="utf-8")
    binary = dict(unit()["Service"])["ExecStart"].split()[0]
    # verify checks that the command is executable; this machine has no /opt/tokenrelay.
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(binary, sys.executable), encoding="utf-8")
    result = subprocess.run(
        [tool, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and unparsable values are only warnings (exit 0): any output fails.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


# --- the image -----------------------------------------------------------------------------------


def test_containerfile() -> None:
    base = instruction("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    assert instruction("USER").split(":")[0] not in ("root", "0")
    assert instruction("STOPSIGNAL") == "SIGTERM"
    environ = image_environment()
    settings = load(environ=environ)
    assert settings.host == "0.0.0.0"
    assert instruction("EXPOSE") == str(settings.port)
    assert json.loads(instruction("ENTRYPOINT")) + json.loads(instruction("CMD")) == [
        "tokenrelay",
        "serve",
    ]
    installs = [args for name, args in containerfile() if name == "RUN" and "pip install" in args]
    assert installs and " -e " not in installs[0]  # a regular install compiles the bytecode
    # The working directory (database and spool) is the volume.
    assert instruction("WORKDIR") == instruction("VOLUME")
    command = healthcheck_command()
    assert command[0] == "python" and "/healthz" in command[-1]  # no curl in the slim image
    # Docker's stop timeout is 10 s; the documented runs give it more than the drain.
    for where, text in [
        ("Containerfile", CONTAINERFILE.read_text()),
        ("docs/deployment.md", section("Deployment")),
    ]:
        timeouts = [int(t) for t in re.findall(r"--stop-timeout (\d+)", text)]
        assert timeouts, f"{where}: no `docker run --stop-timeout`"
        assert min(timeouts) > settings.shutdown_grace + shutdown_tail(), where


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern: ``**`` crosses directories, ``*`` and ``?`` do not."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    replace = {"**": ".*", "**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(replace.get(part, re.escape(part)) for part in parts))


def ignored(path: str) -> bool:
    """Whether the root .dockerignore leaves ``path`` out of the build context: the last rule
    matching it or a directory above it decides."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        regex = _ignore_regex(rule.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not rule.startswith("!")
    return excluded


def test_build_context_holds_what_the_image_copies_and_nothing_heavy() -> None:
    sources = [
        word
        for name, args in containerfile()
        if name == "COPY" and "--from" not in args
        for word in args.split()[:-1]
    ]
    assert set(sources) == {"pyproject.toml", "README.md", "src"}
    package = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path)
    ]
    for path in ["pyproject.toml", "README.md", *package]:
        assert not ignored(path), f".dockerignore leaves {path} out of the image"
    for path in [
        ".venv/bin/python",
        "tests/node/node_modules/ai/package.json",
        "test-artifacts/screenshots/a.png",
        "bench/peers/.venv-litellm/bin/python",
        "tokenrelay.db",
        "src/tokenrelay/__pycache__/app.cpython-311.pyc",
        "src/tokenrelay.egg-info/PKG-INFO",
    ]:
        assert ignored(path), f".dockerignore lets {path} into the build context"


# --- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_terminates_after_the_drain() -> None:
    deployment, service = kubernetes()
    pod = deployment["spec"]["template"]
    container = pod_container(deployment)
    environ = {**env_file(), **image_environment()}
    environ.update({item["name"]: item["value"] for item in container["env"]})
    settings = load(environ=environ)
    assert deployment["spec"]["replicas"] == 3
    assert container["envFrom"] == [{"secretRef": {"name": "tokenrelay"}}]
    # preStop runs before SIGTERM, inside the termination grace period.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = float(pre_stop[1]) + settings.shutdown_grace + shutdown_tail()
    assert pod["spec"]["terminationGracePeriodSeconds"] > budget
    # Probes on the port the gateway listens on, by name.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": settings.port}
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}
    assert readiness["periodSeconds"] == 2
    assert liveness["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The working directory (the spool) is writable although the root filesystem is not.
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert instruction("WORKDIR") in mounts
    # The Service reaches those pods on that port, with no affinity.
    assert service["spec"]["selector"] == pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["sessionAffinity"] == "None"


def test_readme_presents_every_deploy_file() -> None:
    text = section("Deployment")
    for path in DEPLOY.iterdir():
        assert f"deploy/{path.name}" in text, f"docs/deployment.md does not mention {path}"
    assert "docker build -f deploy/Containerfile ." in text


# --- against a running gateway -------------------------------------------------------------------


async def _healthcheck(port: int) -> int:
    """The image's HEALTHCHECK command, run by this interpreter against ``port``."""
    command = [sys.executable, *healthcheck_command()[1:]]
    environ = {"TOKENRELAY_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return await asyncio.to_thread(
        lambda: subprocess.run(command, env=environ, capture_output=True, timeout=30).returncode
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_probed_paths_answer_on_a_real_gateway(simulator: Any, tmp_path: Path) -> None:
    deployment, _ = kubernetes()
    container = pod_container(deployment)
    paths = {container[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe")}
    environ = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{tmp_path}/keys.db",
    }
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:
        for path in sorted(paths):
            async with http.get(gw.url + path) as response:
                assert response.status == 200, (path, await response.text())
        assert await _healthcheck(gw.port) == 0
        port = gw.port
    assert await _healthcheck(port) != 0  # and it does fail when nothing answers
