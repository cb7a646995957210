"""``tokenrelay keys create | list | revoke`` on a SQLite file, as an operator runs them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tokenrelay.cli import main
from tokenrelay.gate.keys import hash_key


def run(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    # No TOKENRELAY_* setting of the machine leaks in; the settings come from defaults.
    clean: dict[str, str | None] = {"TOKENRELAY_DATABASE_URL": None, "TOKENRELAY_CONFIG": None}
    return CliRunner().invoke(main, list(args), env={**clean, **(env or {})})


def test_create_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    url = ["--database-url", f"sqlite:///{path}"]

    created = run("keys", "create", "--user", "alice", "--org", "acme", "--routes", "default",
                  "--rpm", "60", "--name", "ci", "--format", "json", *url)  # fmt: skip
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    secret = key["secret"]
    assert secret.startswith("trk_") and len(secret) == 44
    assert key["prefix"] == secret[:12] and key["routes"] == ["default"] and key["rpm"] == 60
    assert "cannot show it again" in created.stderr
    assert f"database: {path}" in created.stderr

    table = run("keys", "create", "--user", "bob", "--routes", "a,b", "--routes", "c", *url)
    assert table.exit_code == 0, table.output
    bob_secret = table.stdout.strip().splitlines()[-1]
    assert bob_secret.startswith("trk_") and "a,b,c" in table.stdout

    listed = run("keys", "list", *url)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split() == [
        "ID", "PREFIX", "USER", "ORG", "ROUTES", "RPM", "CREATED", "REVOKED", "NAME"
    ]  # fmt: skip
    assert len(lines) == 3 and key["id"] in lines[1] and "alice" in lines[1]
    assert secret not in listed.output and bob_secret not in listed.output

    revoked = run("keys", "revoke", key["prefix"], *url)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked {key['id']}" in revoked.stdout
    again = run("keys", "revoke", key["id"], *url)
    assert again.exit_code == 0 and "already revoked" in again.stdout

    as_json = json.loads(run("keys", "list", "--format", "json", *url).stdout)
    assert [(k["user"], k["revoked_at"] is not None) for k in as_json] == [
        ("alice", True),
        ("bob", False),
    ]
    assert all("secret" not in k for k in as_json)
    active = run("keys", "list", "--active", *url)
    assert "alice" not in active.stdout and "bob" in active.stdout

    # The secrets are nowhere on disk; their hashes are.
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.db"))
    assert secret.encode() not in stored and bob_secret.encode() not in stored
    assert secret[12:].encode() not in stored  # not even the part after the display prefix
    assert hash_key(secret).encode() in stored


def test_default_database_is_tokenrelay_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = run("keys", "list")
    assert missing.exit_code == 1 and "no database at" in missing.output
    assert not (tmp_path / "tokenrelay.db").exists()  # listing does not create one

    assert run("keys", "create", "--user", "carol").exit_code == 0
    assert (tmp_path / "tokenrelay.db").exists()
    assert "carol" in run("keys", "list").stdout

    env = {"TOKENRELAY_DATABASE_URL": f"sqlite:///{tmp_path}/other.db"}
    assert run("keys", "create", "--user", "dave", env=env).exit_code == 0
    assert "dave" in run("keys", "list", env=env).stdout
    assert "dave" not in run("keys", "list").stdout


def test_errors_are_one_line(tmp_path: Path) -> None:
    url = ["--database-url", f"sqlite:///{tmp_path}/keys.db"]
    assert run("keys", "create", "--user", "x", *url).exit_code == 0
    unknown = run("keys", "revoke", "key_nope", *url)
    assert unknown.exit_code == 1 and "no key has the id, prefix or secret" in unknown.output
    bad_url = run("keys", "list", "--database-url", "mysql://x/y")
    assert bad_url.exit_code == 1 and "unsupported database URL" in bad_url.output
    bad_rpm = run("keys", "create", "--user", "x", "--rpm", "0", *url)
    assert bad_rpm.exit_code == 2
    warned = run("keys", "create", "--user", "x", "--routes", "nosuchroute", *url)
    assert warned.exit_code == 0 and "no route named nosuchroute" in warned.stderr
