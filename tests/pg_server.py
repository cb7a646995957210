"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary directory, started with
``pg_ctl`` on a spare loopback port (its Unix socket in that directory too), and a ``stop()`` /
``start()`` pair that brings it back on the same port with its data, so a test can take the
database away mid-load and watch the ledger recover. It is never the machine's shared server.

The binaries come from ``/usr/lib/postgresql/<version>/bin`` (the newest) or the PATH. Run as
root, the server runs as the ``postgres`` user (``initdb`` refuses root). Without the binaries
the tests that need one are skipped with the reason printed; under ``CI=true`` they fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psycopg
import pytest

from tests.services import free_port, unavailable


def postgres_bindir() -> Path:
    """The directory holding initdb and pg_ctl, or skip (fail under ``CI=true``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    pg_ctl = found[-1] if found else shutil.which("pg_ctl")
    if pg_ctl and os.access(Path(pg_ctl).with_name("initdb"), os.X_OK):
        return Path(pg_ctl).parent
    unavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
        "or on PATH (apt-get install postgresql)"
    )


def _run_as() -> tuple[int, int] | None:
    """As root, the uid and gid of ``postgres`` (initdb refuses root); else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no postgres user to run initdb as")
    return entry.pw_uid, entry.pw_gid


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tokenrelay-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as = _run_as()
        if self._as is not None:
            os.chown(self.dir, *self._as)
        self._initialized = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            user=self._as[0] if self._as else None,
            group=self._as[1] if self._as else None,
        )

    def _init(self) -> None:
        result = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
        self._initialized = True

    @property
    def running(self) -> bool:
        status = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "status")
        return status.returncode == 0

    def start(self, timeout: float = 30.0) -> None:
        """Start (again), on the same port once it has started once; returns when it accepts
        connections."""
        if not self._initialized:
            self._init()
            for _ in range(3):
                if self._start(timeout):
                    return
                self.port = free_port()  # the spare port was taken meanwhile
        elif self._start(timeout):
            return
        raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {self._log_tail()}")

    def _start(self, timeout: float) -> bool:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off"  # only an OS crash loses data then; a stop or a kill does not
        )
        result = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        return result.returncode == 0 and self._accepts()

    def _accepts(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return True
            except psycopg.Error:
                time.sleep(0.05)
        return False

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server: ``fast`` ends sessions and shuts down cleanly, ``immediate`` is a
        crash (recovery from the WAL at the next start). Its data stays."""
        if self._initialized:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        """A fresh database on this server; its URL."""
        name = f"t_{os.urandom(6).hex()}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def postgres_server_fixture(scope: Literal["function", "module", "session"] = "module") -> Any:
    """A fixture giving a started ``PostgresServer``; a test that stops it starts it again
    before it ends (``try``/``finally``), so its outage never leaks into the next test."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[PostgresServer]:
        with PostgresServer(postgres_bindir()) as server:
            yield server

    return fixture


PG_ADMIN = os.environ.get("TOKENRELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def machine_database() -> Iterator[str]:
    """A uniquely named database on the machine's shared server (``PG_ADMIN``), dropped after;
    nothing else on that server is touched."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN} is unreachable: {str(exc).strip()}")
    name = f"tokenrelay_t_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
