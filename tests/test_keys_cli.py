"""``tokenrelay keys create | list | revoke`` on a SQLite file, as an operator runs them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tokenrelay.commands import main
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


def test_list_goes_through_the_admin_service(tmp_path: Path) -> None:
    """Role, models, expiry and last use as the admin API has them: in JSON always, in the table
    with --wide (the default table keeps its columns for scripts)."""
    url = ["--database-url", f"sqlite:///{tmp_path}/keys.db"]
    made = run("keys", "create", "--role", "reader", "--models", "a,b", "--expires",
               "2031-01-02T03:04:05Z", "--format", "json", *url)  # fmt: skip
    assert made.exit_code == 0, made.output
    plain = run("keys", "create", "--user", "erin", *url)
    assert plain.exit_code == 0, plain.output
    listed = json.loads(run("keys", "list", "--format", "json", *url).stdout)
    reader = listed[0]
    assert (reader["role"], reader["models"], reader["expires_at"]) == (
        "reader",
        ["a", "b"],
        "2031-01-02T03:04:05Z",
    )
    assert reader["admin"] is True and reader["last_used_at"] is None
    assert reader["limits"] == {"requests": None, "tokens": None, "concurrent_streams": None}
    assert (listed[1]["role"], listed[1]["models"], listed[1]["user"]) == (None, None, "erin")

    wide = run("keys", "list", "--wide", *url).stdout.strip().splitlines()
    assert wide[0].split() == [
        "ID", "PREFIX", "USER", "ORG", "ROUTES", "RPM", "CREATED", "REVOKED", "ROLE", "MODELS",
        "EXPIRES", "LAST", "USED", "NAME",
    ]  # fmt: skip
    assert "reader" in wide[1] and "a,b" in wide[1] and "2031-01-02 03:04:05Z" in wide[1]
    narrow = run("keys", "list", *url).stdout.splitlines()[0].split()
    assert narrow[-1] == "NAME" and "ROLE" not in narrow
