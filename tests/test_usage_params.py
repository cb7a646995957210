"""Every query parameter of ``GET /v1/usage`` and ``GET /v1/usage/dashboard`` is checked: a time
out of range (``since=99999999999999999999d`` used to be an OverflowError and a 500), a filter with
a NUL (a 503 on PostgreSQL) or any other garbage is a 400 naming the parameter, never a 5xx. On
the machine's PostgreSQL, over real HTTP (issue 13). Also: CSV cells cannot become formulas
behind leading blanks, and database URLs lose every password before they are logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from tests.pg_server import machine_database
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.gate.keys import KeyStore
from tokenrelay.metering.reports import csv_cell, parse_time
from tokenrelay.store import DatabaseError, connect, display_url, redact_url

ENDPOINTS = ("/v1/usage", "/v1/usage/dashboard")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[tuple[RunningGateway, str]]:
    with machine_database() as url:
        env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": url}
        async with gateway_server(env) as running:
            db = await running.gateway.gate.database()
            _, admin = await KeyStore(db).create("ops", "acme", admin=True)
            yield running, admin


async def get(gw: tuple[RunningGateway, str], path: str) -> tuple[int, Any]:
    running, admin = gw
    headers = {"authorization": f"Bearer {admin}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(running.url + path, headers=headers) as response,
    ):
        text = await response.text()
        is_json = response.content_type == "application/json"
        return response.status, (await response.json()) if is_json else text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("since=99999999999999999999d", ("since", "out of range", "1970-01-01", "9999-12-31")),
        ("since=" + "9" * 400 + "w", ("since", "out of range")),
        ("since=7d&until=99999999999999999999h", ("until", "out of range")),
        ("since=0001-01-01", ("since", "out of range")),
        ("since=1e400d", ("since", "is not a time")),
        ("until=99999-01-01", ("until", "is not a time")),
        ("since=%00", ("since", "is not a time")),
    ],
)
async def test_times_out_of_range_are_a_400_naming_the_parameter(
    gw: tuple[RunningGateway, str], endpoint: str, query: str, names: tuple[str, ...]
) -> None:
    status, body = await get(gw, f"{endpoint}?{query}")
    assert status == 400, body
    message = body["error"]["message"]
    assert body["error"]["type"] == "invalid_request"
    assert all(name in message for name in names), message
    assert len(message) < 400  # a 400-digit value is not echoed whole


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", ["org", "user", "key", "route", "model", "requested_model"])
async def test_a_nul_in_a_filter_is_a_400_on_postgresql(
    gw: tuple[RunningGateway, str], endpoint: str, name: str
) -> None:
    status, body = await get(gw, f"{endpoint}?{name}=a%00b")
    assert status == 400, body
    assert body["error"]["message"].startswith(f"{name}: control characters")
    status, body = await get(gw, f"{endpoint}?{name}=" + "x" * 257)
    assert status == 400 and body["error"]["message"] == f"{name}: at most 256 characters"
    status, body = await get(gw, f"{endpoint}?{name}=" + quote("ünïcode ok"))
    assert status == 200, body


GARBAGE = ["", "%00", "%ff%fe", "-1", "1e999", "nan", "inf", "9" * 30, "%0d%0a", "..%2f", "'--"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_no_parameter_value_makes_a_5xx(
    gw: tuple[RunningGateway, str], endpoint: str
) -> None:
    names = ["since", "until", "by", "format", "org", "user", "key", "route", "model"]
    for name in names:
        for value in GARBAGE:
            status, body = await get(gw, f"{endpoint}?{name}={value}")
            assert status in (200, 400), (name, value, status, body)
            if status == 400:
                assert body["error"]["type"] == "invalid_request", (name, value, body)


def test_relative_times_stay_in_range() -> None:
    now = 1_800_000_000.0
    assert parse_time("20833d", now) == now - 20833 * 86400  # 1970-01-01 is the floor
    with pytest.raises(ValueError, match="at most 20833d ago"):
        parse_time("20834d", now)


# --- CSV -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cell"),
    [
        (" =1+1", "' =1+1"),
        ("\t=cmd", "'\t=cmd"),
        ("\r+1", "'\r+1"),
        ("\n-2", "'\n-2"),
        ("\u00a0\u3000@SUM(A1)", "'\u00a0\u3000@SUM(A1)"),
        ("\u200b=1", "'\u200b=1"),  # a zero-width space is invisible, and skipped
        ("\uff1dcmd", "'\uff1dcmd"),  # a full-width equals sign
        ("\x00=1", "'\x00=1"),
        (" alice", " alice"),
        ("a =b", "a =b"),
    ],
)
def test_csv_cells_cannot_be_formulas_behind_blanks(name: str, cell: str) -> None:
    assert csv_cell(name) == cell


async def test_both_csvs_neutralise_a_formula_behind_a_space(tmp_path: Path) -> None:
    from tokenrelay.metering import LedgerRow, insert_rows
    from tokenrelay.metering.dashboard import collect, dashboard_query, render_csv
    from tokenrelay.metering.reports import RENDER, make_query, usage
    from tokenrelay.store import open_database

    async with await open_database(f"sqlite:///{tmp_path}/ledger.db") as db:
        now = 1_800_000_000.0
        row = LedgerRow(
            request_id="r1",
            created_at=now - 60,
            org_id=' =HYPERLINK("http://x")',
            route="default",
            status=200,
            outcome="completed",
            duration_ms=1.0,
        )
        await insert_rows(db, [row])
        report = await usage(db, make_query("1d", by="org", now=now))
        assert "\n' =HYPERLINK" in RENDER["csv"](report).replace('"', "")
        query, by = dashboard_query({"since": "1d", "by": "org"}, now=now)
        assert ",' =HYPERLINK" in render_csv(await collect(db, query, by)).replace('"', "")


# --- URLs in logs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app@db/x?password=s3cret", "postgresql://app@db/x?password=***"),
        (
            "postgresql://db/x?sslmode=require&sslpassword=s3cret&passfile=/etc/s3cret",
            "postgresql://db/x?sslmode=require&sslpassword=***&passfile=***",
        ),
        (
            "postgres://u:p%40ss@h1:5432,h2:5432/x?PASSWORD=s3cret",
            "postgres://u:***@h1:5432,h2:5432/x?PASSWORD=***",
        ),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://user:s3cret@cache/0?password=s3cret", "rediss://user:***@cache/0?password=***"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("host=db password='s3 cret' dbname=x", "host=db password=*** dbname=x"),
        ("postgresql://[::1/x?password=s3cret", "postgresql://***"),
    ],
)
def test_one_masker_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in display_url(url) and "s3 cret" not in display_url(url)


def test_display_url_keeps_sqlite_paths() -> None:
    assert display_url("sqlite:///rel.db") == os.path.abspath("rel.db")
    assert display_url("sqlite:///:memory:") == ":memory:"


async def test_a_password_in_the_query_is_not_in_the_error_or_the_log(
    simulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = "postgresql://app@127.0.0.1:1/none?password=hunter2&connect_timeout=2"
    with pytest.raises(DatabaseError) as failure:
        await connect(url)
    assert "hunter2" not in str(failure.value) and "password=***" in str(failure.value)
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": url}
    with caplog.at_level(logging.WARNING):
        async with gateway_server(env) as running:
            with pytest.raises(DatabaseError):
                await running.gateway.gate.database()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "127.0.0.1" in logged and "hunter2" not in logged


def test_the_command_line_names_the_parameter_too(tmp_path: Path) -> None:
    from tests.test_reports import run

    url = f"sqlite:///{tmp_path}/ledger.db"
    result = run("usage", "--database-url", url, "--since", "99999999999999999999d")
    assert result.exit_code == 2 and "since: '99999999999999999999d' is out of range" in (
        result.output
    )
    result = run("usage", "--database-url", url, "--org", "a\x00b")
    assert result.exit_code == 2 and "org: control characters" in result.output
