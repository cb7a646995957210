"""``tokenrelay serve | ask | simulate | keys | usage`` on click. Subcommands import what they need
when they run, so ``--help`` and ``ask`` stay fast; a well-formed ``serve`` starts without click
(``cli``, ``serve_command``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from tokenrelay import serve_command

if TYPE_CHECKING:
    from tokenrelay.admin.schema import Key, KeySecret
    from tokenrelay.admin.service import AdminService
    from tokenrelay.settings import Settings

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokenrelay")
def main() -> None:
    """tokenrelay: stream LLM answers token by token, with failover, limits and metering."""


def _serve_options(command: Callable[..., None]) -> Callable[..., None]:
    """``serve``'s options as click options, from the one table ``serve_command`` reads too."""
    for option in reversed(serve_command.OPTIONS):
        kind = {
            "text": None,
            "int": int,
            "file": click.Path(dir_okay=False),
            "choice": click.Choice(option.choices),
        }[option.kind]
        command = click.option(option.flag, option.dest, type=kind, help=option.help)(command)
    return command


@main.command()
@_serve_options
def serve(
    host: str | None,
    port: int | None,
    config: str | None,
    workers: int | None,
    log_level: str | None,
) -> None:
    """Run the gateway. With no provider keys set it runs in demo mode on built-in simulators."""
    from tokenrelay.settings import ConfigError

    try:
        settings = serve_command.settings_for(host, port, config, workers, log_level)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    serve_command.serve(settings)


@main.command()
@click.argument("prompt")
@click.option(
    "--url",
    default=lambda: os.environ.get("TOKENRELAY_URL", "http://127.0.0.1:8787"),
    show_default="$TOKENRELAY_URL or http://127.0.0.1:8787",
    help="Gateway base URL.",
)
@click.option("--route", default="default", show_default=True, help="Route to ask.")
@click.option("--max-tokens", type=int, help="Cap on the answer's length in tokens.")
@click.option("--api-key", envvar="TOKENRELAY_API_KEY", help="Gateway API key, if it needs one.")
def ask(prompt: str, url: str, route: str, max_tokens: int | None, api_key: str | None) -> None:
    """Stream an answer to PROMPT; print the stats on stderr. Ctrl-C stops the upstream too."""
    from tokenrelay.client import Client, GatewayRequestError

    client = Client(url, api_key=api_key)
    try:
        stream = client.stream(prompt, route=route, max_tokens=max_tokens)
    except GatewayRequestError as exc:
        raise click.ClickException(f"{exc.type} ({exc.status}): {exc.message}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot reach the gateway at {url}: {exc}") from None
    try:
        with stream:
            for text in stream.text():
                sys.stdout.write(text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        click.echo("\n[aborted: the gateway closed the upstream stream]", err=True)
        sys.exit(130)
    info = stream.info
    sys.stdout.write("\n")
    usage = info.usage
    ttft = f"{info.ttft_s * 1000:.0f} ms" if info.ttft_s is not None else "-"
    duration = f"{info.duration_s * 1000:.0f} ms" if info.duration_s is not None else "-"
    demo = " (demo simulator)" if info.demo else ""
    click.echo(
        f"provider {info.provider}{demo} · model {info.model} · first token {ttft} · "
        f"tokens in {usage.input_tokens} out {usage.output_tokens} · {duration} · "
        f"request {info.request_id}",
        err=True,
    )
    if info.error is not None:
        raise click.ClickException(
            f"the stream ended with an error: {info.error.type}: {info.error.message}"
        )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8790, show_default=True, type=int)
@click.option("--ttft-ms", type=float, help="Delay before the first token.")
@click.option("--tokens", type=int, help="Tokens per answer.")
@click.option("--token-delay-ms", type=float, help="Delay between tokens.")
@click.option(
    "--token-delay-max-ms", type=float, help="Draw each delay from [token-delay-ms, this]."
)
@click.option("--text", help="Fixed answer text instead of the generated one.")
@click.option(
    "--fault",
    help="429, 500, 503, 529, 401, 400, error_after, error_before_content, "
    "hang_before_first_byte, hang_mid or reset.",
)
@click.option("--fault-after", type=int, help="Tokens before a mid-stream fault.")
@click.option("--retry-after", type=float, help="Seconds in retry-after on 429/529.")
@click.option("--slow-fraction", type=float, help="Share of requests (0-1) made slow, at random.")
@click.option("--slow-ttft-ms", type=float, help="Delay before the first token of a slow request.")
@click.option("--api-key", help="Require this key, as the real APIs do.")
def simulate(host: str, port: int, **knobs: object) -> None:
    """Serve wire-exact Anthropic and OpenAI APIs on loopback, with fault injection.

    Each knob can also be set per request with an x-sim-<knob> header or a ?<knob>= query."""
    from tokenrelay import simulator

    given = {name: value for name, value in knobs.items() if value is not None}
    simulator.run(simulator.SimulatorSettings(**given), host=host, port=port)  # type: ignore[arg-type]


# --- keys ----------------------------------------------------------------------------------------

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
_DATABASE = click.option(
    "--database-url",
    envvar="TOKENRELAY_DATABASE_URL",
    help="sqlite:///file.db, a file path or postgresql://... "
    "[default: $TOKENRELAY_DATABASE_URL, else the config file's, else sqlite:///tokenrelay.db]",
)
_CONFIG = click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys. Only a key's SHA-256 is stored, in the database the
    gateway uses (SQLite file tokenrelay.db in the working directory unless configured)."""


def _settings(config: str | None) -> Settings:
    from tokenrelay.settings import ConfigError, load

    try:
        return load(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _database_url(given: str | None, config: str | None, *, must_exist: bool) -> str:
    """The URL to use, said on stderr so a key is never created in a database the gateway
    does not read; with ``must_exist``, a SQLite file that is not there is an error."""
    from tokenrelay.store import DEFAULT_DATABASE_URL, display_url, parse_url

    # Settings.database_url is the top-level setting the ledger shares; before it is wired in,
    # the default applies.
    url: str = given or getattr(_settings(config), "database_url", None) or DEFAULT_DATABASE_URL
    try:
        backend, target = parse_url(url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"database: {display_url(url)}", err=True)
    if must_exist and backend == "sqlite" and target != ":memory:" and not os.path.exists(target):
        raise click.ClickException(
            f"no database at {os.path.abspath(target)}: no key was created there. Run from the "
            "directory the gateway runs in, or pass --database-url (or TOKENRELAY_DATABASE_URL)."
        )
    return url


def _with_admin(url: str, action: Callable[[AdminService], Awaitable[T]]) -> T:
    """Run ``action`` on the admin service over the migrated database at ``url``: the CLI is a
    client of the same code as ``/admin/v1/``."""
    import asyncio

    from tokenrelay.admin.service import AdminService
    from tokenrelay.gate.keys import AmbiguousKey, KeyNotFound, KeyStore
    from tokenrelay.model import GatewayError
    from tokenrelay.store import DatabaseError, open_database

    async def run() -> T:
        async with await open_database(url) as db:
            return await action(AdminService(db, KeyStore(db)))

    try:
        return asyncio.run(run())
    except (DatabaseError, KeyNotFound, AmbiguousKey, ValueError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        raise click.ClickException(message) from None
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None


def _when(moment: str | None) -> str:
    """An admin API time (``2026-01-31T12:00:00Z``) as the table shows it."""
    return moment.replace("T", " ") if moment is not None else "-"


def _key_json(key: Key) -> dict[str, object]:
    """A key as ``--format json`` prints it: the older fields first, unchanged, then what the
    admin API added (role, models, expiry, limits, last use)."""
    return {
        "id": key.id,
        "prefix": key.prefix,
        "user": key.user_id,
        "org": key.org_id,
        "routes": key.routes,
        "rpm": key.rpm,
        "name": key.name,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        # may read every caller's usage (GET /v1/usage): a global admin or reader
        "admin": key.role in ("admin", "reader") and key.org_id is None,
        "role": key.role,
        "models": key.models,
        "expires_at": key.expires_at,
        "limits": {
            "requests": key.limits.requests,
            "tokens": key.limits.tokens,
            "concurrent_streams": key.limits.concurrent_streams,
        },
        "last_used_at": key.last_used_at,
    }


def _key_row(key: Key, wide: bool = False) -> list[str]:
    routes = ",".join(key.routes) if key.routes is not None else "*"
    row = [
        key.id,
        key.prefix,
        key.user_id or "-",
        key.org_id or "-",
        routes or "(none)",
        str(key.rpm) if key.rpm is not None else "-",
        _when(key.created_at),
        _when(key.revoked_at),
    ]
    if wide:
        models = ",".join(key.models) if key.models is not None else "*"
        row += [
            key.role or "-",
            models or "(none)",
            _when(key.expires_at),
            _when(key.last_used_at),
        ]
    return [*row, key.name or ""]


def _table(rows: list[list[str]], wide: bool = False) -> str:
    header = ["ID", "PREFIX", "USER", "ORG", "ROUTES", "RPM", "CREATED", "REVOKED"]
    if wide:
        header += ["ROLE", "MODELS", "EXPIRES", "LAST USED"]
    header.append("NAME")  # last: a free text
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _echo_json(value: object) -> None:
    import json

    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@keys.command("create")
@click.option(
    "--user", help="The user the key acts for (recorded in the ledger); needed without --role."
)
@click.option("--org", help="The user's organization.")
@click.option(
    "--routes",
    multiple=True,
    help="A route the key may use; repeat or comma-separate. Default: every route.",
)
@click.option("--rpm", type=click.IntRange(min=1), help="The key's own requests per minute.")
@click.option("--name", help="A note to tell keys apart in listings.")
@click.option("--admin", is_flag=True, help="Same as --role admin (kept for old scripts).")
@click.option(
    "--role",
    type=click.Choice(["admin", "org_admin", "reader"]),
    help="An admin API role (docs/admin-api.md): admin is global; org_admin and reader with "
    "--org are confined to that org.",
)
@click.option("--expires", help="When the key stops working: an ISO time (2030-01-31T00:00:00Z).")
@click.option(
    "--models", multiple=True, help="A model the key may ask for; repeat or comma-separate."
)
@_DATABASE
@_CONFIG
@_FORMAT
def keys_create(
    user: str | None,
    org: str | None,
    routes: tuple[str, ...],
    rpm: int | None,
    name: str | None,
    admin: bool,
    role: str | None,
    expires: str | None,
    models: tuple[str, ...],
    database_url: str | None,
    config: str | None,
    fmt: str,
) -> None:
    """Create a key and print its secret, once: only its SHA-256 hash is stored. The change is
    made by the admin service (the same validation and audit trail entry, actor "cli")."""
    role = "admin" if admin else role
    if user is None and role is None:
        raise click.UsageError("give --user (the key's user), or --role for an admin key")
    url = _database_url(database_url, config, must_exist=False)
    allowed = [part.strip() for value in routes for part in value.split(",") if part.strip()]
    if allowed:
        with contextlib.suppress(click.ClickException):
            unknown = sorted(set(allowed) - set(_settings(config).routes))
            if unknown:
                click.echo(f"warning: no route named {', '.join(unknown)} is configured", err=True)

    allowed_models = [part.strip() for value in models for part in value.split(",") if part]

    async def create(service: AdminService) -> KeySecret:
        from tokenrelay.admin.roles import CLI
        from tokenrelay.admin.schema import KeyCreate

        body = KeyCreate(
            name=name or (f"{role} key" if role else f"key of {user}"),
            org_id=org,
            user_id=user,
            role=role,  # type: ignore[arg-type]  # click.Choice
            routes=allowed or None,
            models=allowed_models or None,
            expires_at=expires,
        )
        return await service.key_admin.create(CLI, body, rpm=rpm)

    created = _with_admin(url, create)
    key, secret = created.key, created.secret
    click.echo(
        "Copy the key now: tokenrelay stores only its SHA-256 hash and cannot show it again.",
        err=True,
    )
    if role == "admin":
        click.echo("This is an admin key: it may read every caller's usage.", err=True)
    if fmt == "json":
        _echo_json({**_key_json(key), "secret": secret})
    else:
        click.echo(_table([_key_row(key)]))
        click.echo(f"\n{secret}")


@keys.command("list")
@click.option("--active", is_flag=True, help="Leave revoked keys out.")
@click.option("--wide", is_flag=True, help="Also show role, models, expiry and last use.")
@_DATABASE
@_CONFIG
@_FORMAT
def keys_list(
    active: bool, wide: bool, database_url: str | None, config: str | None, fmt: str
) -> None:
    """List keys: id, prefix, user, org, routes, rpm, created, revoked (never a secret), read
    through the admin service like GET /admin/v1/keys; --format json has every field."""
    url = _database_url(database_url, config, must_exist=True)

    async def list_keys(service: AdminService) -> list[Key]:
        from tokenrelay.admin.roles import CLI
        from tokenrelay.admin.rows import MAX_PAGE

        found: list[Key] = []
        cursor = None
        while True:
            page = await service.key_admin.list(
                CLI, include_revoked=not active, cursor=cursor, limit=MAX_PAGE
            )
            found += page.data
            if page.next is None:
                return found
            cursor = page.next

    found = _with_admin(url, list_keys)
    if fmt == "json":
        _echo_json([_key_json(key) for key in found])
    elif found:
        click.echo(_table([_key_row(key, wide) for key in found], wide))
    else:
        click.echo("no keys", err=True)


@keys.command("revoke")
@click.argument("key")
@_DATABASE
@_CONFIG
@_FORMAT
def keys_revoke(key: str, database_url: str | None, config: str | None, fmt: str) -> None:
    """Revoke KEY, given by its id, its prefix or the secret itself. Running gateways stop
    accepting it within their key cache TTL (5 s by default)."""
    url = _database_url(database_url, config, must_exist=True)

    async def revoke(service: AdminService) -> tuple[Key, bool]:
        from tokenrelay.admin.roles import CLI

        before = await service.keys.find(key)  # by id, prefix or secret
        after = await service.key_admin.revoke(CLI, before.id)
        return after, before.revoked_at is not None

    revoked, already = _with_admin(url, revoke)
    if fmt == "json":
        _echo_json(_key_json(revoked))
    elif already:
        click.echo(
            f"{revoked.id} ({revoked.prefix}) was already revoked at {_when(revoked.revoked_at)}"
        )
    else:
        click.echo(f"revoked {revoked.id} ({revoked.prefix}, user {revoked.user_id or '-'})")


# --- usage ---------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Start: 7d, 24h, 30m ago, a UTC date (2026-11-01) or an ISO time.",
)
@click.option("--until", help="End, exclusive, in the same forms. Default: now.")
@click.option(
    "--by",
    type=click.Choice(["org", "user", "key", "model", "requested_model", "route", "day"]),
    default="day",
    show_default=True,
    help="One line per organization, user, key, provider:model (served, or as requested), "
    "route or UTC day.",
)
@click.option("--org", help="Only this organization's requests.")
@click.option("--user", help="Only this user's requests.")
@click.option("--key", "key_id", help="Only this key's requests (its id).")
@click.option("--route", help="Only this route's requests.")
@click.option("--model", help="Only requests served by this model.")
@click.option("--requested-model", help="Only requests that asked for this model.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@_DATABASE
@_CONFIG
def usage(
    since: str,
    until: str | None,
    by: str,
    org: str | None,
    user: str | None,
    key_id: str | None,
    route: str | None,
    model: str | None,
    requested_model: str | None,
    fmt: str,
    database_url: str | None,
    config: str | None,
) -> None:
    """Requests, errors, tokens and cost from the ledger, grouped. Costs are exact sums of
    nanodollars; ESTIMATED is the share of requests whose token counts the gateway estimated
    because the upstream did not report them."""
    import asyncio
    import time

    from tokenrelay.metering.reports import RENDER, UsageReport, make_query
    from tokenrelay.metering.reports import usage as report_usage
    from tokenrelay.store import DatabaseError, open_database

    filters = {"org": org, "user": user, "key": key_id, "route": route, "model": model}
    filters["requested_model"] = requested_model
    try:
        query = make_query(since, until, by, filters, now=time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    url = _database_url(database_url, config, must_exist=True)

    async def run() -> UsageReport:
        async with await open_database(url) as db:
            return await report_usage(db, query)

    try:
        report = asyncio.run(run())
    except (DatabaseError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(RENDER[fmt](report), nl=False)
