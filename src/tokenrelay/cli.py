"""The ``tokenrelay`` command (and ``python -m tokenrelay``): a well-formed ``serve`` starts the
gateway straight away, without importing click; everything else (the other commands, help, an
option click would refuse) is click's, in ``commands``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from tokenrelay import serve_command

if TYPE_CHECKING:
    from tokenrelay.settings import Settings


def main() -> None:
    options = serve_command.parse(sys.argv[1:])
    if options is None:
        from tokenrelay.commands import main as click_main

        click_main()
        return
    try:
        serve_command.serve(_settings(options))
    except KeyboardInterrupt:  # before the server handles the signal: as click reports it
        import click

        click.echo(file=sys.stderr)
        click.echo("Aborted!", file=sys.stderr)
        sys.exit(1)


def _settings(options: dict[str, Any]) -> Settings:
    """``serve``'s settings; one it cannot use ends the command as click ends it for every
    command (``Error: ...`` on stderr, exit status 1)."""
    try:
        return serve_command.settings_for(**options)
    except Exception as exc:
        from tokenrelay.settings import ConfigError

        if not isinstance(exc, ConfigError):
            raise
        import click

        error = click.ClickException(str(exc))
        error.show()
        sys.exit(error.exit_code)
