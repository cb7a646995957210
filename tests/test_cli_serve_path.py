"""``tokenrelay serve`` read without click (``serve_command.parse``): it takes exactly the
well-formed uses, leaves everything else to click so help and errors stay click's own, and
click's ``serve`` is built from the same option table."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tokenrelay import serve_command
from tokenrelay.commands import main

NONE = {"host": None, "port": None, "config": None, "workers": None, "log_level": None}


def test_well_formed_serve_is_read_as_click_would(tmp_path: Path) -> None:
    config = tmp_path / "tokenrelay.toml"
    config.write_text("")
    assert serve_command.parse(["serve"]) == NONE
    argv = ["serve", "--host", "0.0.0.0", "--port=9000", "--workers", "2", "--log-level=debug"]
    assert serve_command.parse([*argv, "--config", str(config)]) == {
        "host": "0.0.0.0",
        "port": 9000,
        "config": str(config),
        "workers": 2,
        "log_level": "debug",
    }
    # the last of a repeated option counts; int() as click.INT; a file that is not there yet
    assert serve_command.parse(["serve", "--port", "1", "--port", " 08 "]) == {**NONE, "port": 8}
    missing = str(tmp_path / "later.toml")
    assert serve_command.parse(["serve", "--config", missing]) == {**NONE, "config": missing}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["ask", "hi"],
        ["--version"],
        ["serve", "--help"],
        ["serve", "-h"],
        ["serve", "--bogus"],
        ["serve", "extra"],
        ["serve", "--port"],
        ["serve", "--port", "abc"],
        ["serve", "--port="],
        ["serve", "--workers", "1.5"],
        ["serve", "--log-level", "INFO"],
        ["serve", "--host", "--port"],
        ["serve", "--port", "-1"],
        ["serve", "--", "--port", "1"],
    ],
)
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert serve_command.parse(argv) is None


def test_a_directory_as_config_goes_to_click(tmp_path: Path) -> None:
    assert serve_command.parse(["serve", "--config", str(tmp_path)]) is None
    result = CliRunner().invoke(main, ["serve", "--config", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output


def test_a_shell_completion_goes_to_click(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_TOKENRELAY_COMPLETE", "bash_source")
    assert serve_command.parse(["serve"]) is None


def test_clicks_serve_has_the_tables_options() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in serve_command.OPTIONS:
        assert option.flag in result.output
        if option.help:
            assert option.help in result.output
    assert "[debug|info|warning|error]" in result.output and "--port INTEGER" in result.output
