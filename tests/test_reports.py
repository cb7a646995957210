"""Usage reports: ``tokenrelay usage`` on a seeded ledger in all three formats, the same query on
a real PostgreSQL, and ``GET /v1/usage`` for admin keys only.

PostgreSQL runs in a database created for this module (``tokenrelay_t_<random>`` on
127.0.0.1:5432) and dropped after; without a server the tests say why and skip, except under
``CI=true``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import types
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.routing import Route

from tests.pg_server import machine_database
from tokenrelay.commands import main
from tokenrelay.gate.identity import AuthSettings
from tokenrelay.gate.keys import KeyStore
from tokenrelay.metering.reports import make_query, parse_time, usage
from tokenrelay.store import Database, open_database
from tokenrelay.usage_http import usage_endpoint

RANGE = ("--since", "2026-11-01", "--until", "2026-11-08")


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


# request_id, created_at, user, org, key, route, provider, model, status, outcome,
# input, output, cache read, cache write, estimated, cost in nanodollars
LEDGER = [
    ("r1", ts("2026-11-02T10:00:00"), "alice", "acme", "key_a", "default", "openai", "gpt-5.5",
     200, "completed", 1000, 200, 300, 0, 0, 1_500_000),
    ("r2", ts("2026-11-02T23:59:59"), "bob", "acme", "key_b", "default", "anthropic",
     "claude-sonnet-5-5", 200, "completed", 2000, 500, 0, 100, 1, 12_345_678),
    ("r3", ts("2026-11-03T00:00:00"), "alice", "acme", "key_a", "fast", "openai", "gpt-5.5",
     502, "error", 0, 0, 0, 0, 0, 0),
    ("r4", ts("2026-11-03T09:30:00"), "carol", "globex", "key_c", "default", "anthropic",
     "claude-sonnet-5-5", 200, "completed", 500, 50, 0, 0, 0, 2_000_000_123),
    ("r5", ts("2026-11-03T12:00:00"), None, None, None, "default", None, None,
     429, "rejected", 0, 0, 0, 0, 0, 0),
    ("r6", ts("2026-11-04T08:00:00"), "bob", "acme", "key_b", "default", "anthropic",
     "claude-sonnet-5-5", 200, "aborted", 100, 10, 0, 0, 0, 40_000),
    # outside the range: a second before it, and at its (exclusive) end
    ("r7", ts("2026-10-31T23:59:59"), "alice", "acme", "key_a", "default", "openai", "gpt-5.5",
     200, "completed", 9, 9, 0, 0, 0, 999_999_999),
    ("r8", ts("2026-11-08T00:00:00"), "alice", "acme", "key_a", "default", "openai", "gpt-5.5",
     200, "completed", 9, 9, 0, 0, 0, 999_999_999),
]  # fmt: skip

INSERT = (
    "INSERT INTO ledger (request_id, created_at, user_id, org_id, key_id, route, provider, model, "
    "status, outcome, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "estimated, cost_nanousd, attempts, duration_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 100)"
)

TABLE_BY_ORG = """\
ORG     REQUESTS  ERRORS  INPUT  OUTPUT  CACHE_READ  CACHE_WRITE  COST_USD  ESTIMATED
globex         1       0    500      50           0            0  2.000000       0.0%
acme           4       1  3,100     710         300          100  0.013886      25.0%
-              1       1      0       0           0            0  0.000000       0.0%
TOTAL          6       2  3,600     760         300          100  2.013886      16.7%
"""

TABLE_BY_DAY = """\
DAY         REQUESTS  ERRORS  INPUT  OUTPUT  CACHE_READ  CACHE_WRITE  COST_USD  ESTIMATED
2026-11-02         2       0  3,000     700         300          100  0.013846      50.0%
2026-11-03         3       2    500      50           0            0  2.000000       0.0%
2026-11-04         1       0    100      10           0            0  0.000040       0.0%
TOTAL              6       2  3,600     760         300          100  2.013886      16.7%
"""

CSV_BY_ORG = """\
org,requests,errors,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd,estimated_share
globex,1,0,500,50,0,0,2.000000123,0.0
acme,4,1,3100,710,300,100,0.013885678,0.25
,1,1,0,0,0,0,0.000000000,0.0
"""


JSON_BY_MODEL = {
    "by": "model",
    "since": "2026-11-01T00:00:00Z",
    "until": "2026-11-08T00:00:00Z",
    "filters": {},
    "rows": [
        {
            "model": "anthropic:claude-sonnet-5-5",
            "requests": 3,
            "errors": 0,
            "input_tokens": 2600,
            "output_tokens": 560,
            "cache_read_tokens": 0,
            "cache_write_tokens": 100,
            "cost_nanousd": 2_012_385_801,
            "cost_usd": "2.012385801",
            "estimated_share": 0.3333,
            "cache_hits": 0,
            "saved_nanousd": 0,
            "saved_usd": "0.000000000",
        },
        {
            "model": "openai:gpt-5.5",
            "requests": 2,
            "errors": 1,
            "input_tokens": 1000,
            "output_tokens": 200,
            "cache_read_tokens": 300,
            "cache_write_tokens": 0,
            "cost_nanousd": 1_500_000,
            "cost_usd": "0.001500000",
            "estimated_share": 0.0,
            "cache_hits": 0,
            "saved_nanousd": 0,
            "saved_usd": "0.000000000",
        },
        {
            "model": None,
            "requests": 1,
            "errors": 1,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost_nanousd": 0,
            "cost_usd": "0.000000000",
            "estimated_share": 0.0,
            "cache_hits": 0,
            "saved_nanousd": 0,
            "saved_usd": "0.000000000",
        },
    ],
    "total": {
        "requests": 6,
        "errors": 2,
        "input_tokens": 3600,
        "output_tokens": 760,
        "cache_read_tokens": 300,
        "cache_write_tokens": 100,
        "cost_nanousd": 2_013_885_801,
        "cost_usd": "2.013885801",
        "estimated_share": 0.1667,
        "cache_hits": 0,
        "saved_nanousd": 0,
        "saved_usd": "0.000000000",
    },
}


async def seed(url: str) -> None:
    async with await open_database(url) as db:
        await db.execute_many(INSERT, LEDGER)


def run(*args: str) -> Result:
    clean: dict[str, str | None] = {"TOKENRELAY_DATABASE_URL": None, "TOKENRELAY_CONFIG": None}
    return CliRunner().invoke(main, list(args), env=clean)


def report(url: str, *args: str) -> str:
    result = run("usage", "--database-url", url, *RANGE, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('reports')}/ledger.db"
    asyncio.run(seed(url))
    return url


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A seeded database of this module's own; dropped at the end."""
    with machine_database() as url:
        asyncio.run(seed(url))
        yield url


# --- the command, on SQLite ----------------------------------------------------------------------


def test_table_by_org(sqlite_url: str) -> None:
    assert report(sqlite_url, "--by", "org") == TABLE_BY_ORG


def test_table_by_day_splits_at_utc_midnight(sqlite_url: str) -> None:
    assert report(sqlite_url, "--by", "day") == TABLE_BY_DAY


def test_csv_by_org_has_exact_costs(sqlite_url: str) -> None:
    assert report(sqlite_url, "--by", "org", "--format", "csv") == CSV_BY_ORG


def test_json_by_model(sqlite_url: str) -> None:
    assert json.loads(report(sqlite_url, "--by", "model", "--format", "json")) == JSON_BY_MODEL


def test_filters_and_other_groups(sqlite_url: str) -> None:
    out = json.loads(report(sqlite_url, "--by", "user", "--org", "acme", "--format", "json"))
    assert out["filters"] == {"org": "acme"}
    assert [(r["user"], r["requests"], r["cost_nanousd"]) for r in out["rows"]] == [
        ("bob", 2, 12_385_678),
        ("alice", 2, 1_500_000),
    ]
    routes = json.loads(report(sqlite_url, "--by", "route", "--format", "json"))["rows"]
    assert [(r["route"], r["requests"], r["errors"]) for r in routes] == [
        ("default", 5, 1),
        ("fast", 1, 1),
    ]
    keys = json.loads(report(sqlite_url, "--by", "key", "--format", "json"))["rows"]
    assert [r["key"] for r in keys] == ["key_c", "key_b", "key_a", None]


def test_bad_arguments_say_what_to_write(sqlite_url: str, tmp_path: Path) -> None:
    bad = run("usage", "--database-url", sqlite_url, "--since", "last tuesday")
    assert bad.exit_code == 2 and "2026-11-01" in bad.output
    empty = run("usage", "--database-url", sqlite_url, "--since", "1d", "--until", "2d")
    assert empty.exit_code == 2 and "range is empty" in empty.output
    missing = run("usage", "--database-url", f"sqlite:///{tmp_path}/none.db")
    assert missing.exit_code == 1 and "no database at" in missing.output


def test_parse_time() -> None:
    now = ts("2026-11-10T12:00:00")
    assert parse_time("7d", now) == now - 7 * 86400
    assert parse_time("24h", now) == now - 86400
    assert parse_time("30m", now) == now - 1800
    assert parse_time("now", now) == now
    assert parse_time("2026-11-01", now) == ts("2026-11-01T00:00:00")
    assert parse_time("2026-11-01T12:00", now) == ts("2026-11-01T12:00:00")
    assert parse_time("2026-11-01T12:00+01:00", now) == ts("2026-11-01T11:00:00")
    with pytest.raises(ValueError, match="not a time"):
        parse_time("7 days", now)
    with pytest.raises(ValueError, match="cannot group by"):
        make_query(by="week", now=now)
    with pytest.raises(ValueError, match="cannot filter on"):
        make_query(filters={"ip": "1.2.3.4"}, now=now)


# --- the same on PostgreSQL ----------------------------------------------------------------------


def test_postgresql_gives_the_same_reports(pg_url: str, sqlite_url: str) -> None:
    assert report(pg_url, "--by", "org") == TABLE_BY_ORG
    assert report(pg_url, "--by", "day") == TABLE_BY_DAY
    assert report(pg_url, "--by", "org", "--format", "csv") == CSV_BY_ORG
    assert json.loads(report(pg_url, "--by", "model", "--format", "json")) == JSON_BY_MODEL
    for by in ("user", "key", "route"):
        for fmt in ("table", "csv", "json"):
            args = ("--by", by, "--format", fmt)
            assert report(pg_url, *args) == report(sqlite_url, *args), args


async def test_day_buckets_floor_on_both_backends(pg_url: str, sqlite_url: str) -> None:
    """A bare cast rounds on PostgreSQL: 23:59:59 would land on the next day."""
    for url in (sqlite_url, pg_url):
        async with await open_database(url) as db:
            query = make_query("2026-11-02", "2026-11-03", "day", now=ts("2026-11-10T00:00:00"))
            result = await usage(db, query)
        assert [(row.group, row.requests) for row in result.rows] == [("2026-11-02", 2)], url


# --- GET /v1/usage -------------------------------------------------------------------------------


async def _get(app: Starlette, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One GET through the ASGI app, no server or HTTP client needed."""
    target, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": "GET",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


async def test_usage_endpoint_is_for_admin_keys_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    await seed(url)
    db: Database = await open_database(url)
    try:
        store = KeyStore(db)
        _, admin = await store.create("ops", "acme", admin=True)
        _, plain = await store.create("alice", "acme")
        _, revoked = await store.create("mallory", admin=True)
        await store.revoke(revoked)

        async def database() -> Database:
            return db

        gateway = types.SimpleNamespace(
            gate=types.SimpleNamespace(database=database),
            settings=types.SimpleNamespace(auth=AuthSettings()),
        )
        endpoint = usage_endpoint(gateway)
        app = Starlette(routes=[Route("/v1/usage", endpoint, methods=["GET"])])
        path = "/v1/usage?since=2026-11-01&until=2026-11-08&by=org"

        status, body = await _get(app, path, {})
        assert status == 401 and b"admin API key" in body
        status, body = await _get(app, path, {"Authorization": "Bearer trk_" + "x" * 40})
        assert status == 401 and b"unknown or revoked" in body
        status, _ = await _get(app, path, {"Authorization": f"Bearer {revoked}"})
        assert status == 401
        status, body = await _get(app, path, {"Authorization": f"Bearer {plain}"})
        assert status == 403 and json.loads(body)["error"]["type"] == "permission"
        assert plain.encode() not in body

        status, body = await _get(app, path, {"Authorization": f"Bearer {admin}"})
        assert status == 200
        answer = json.loads(body)
        assert [(r["org"], r["requests"]) for r in answer["rows"]] == [
            ("globex", 1),
            ("acme", 4),
            (None, 1),
        ]
        assert answer["total"]["cost_usd"] == "2.013885801"

        status, body = await _get(app, path + "&format=csv", {"x-api-key": admin})
        assert status == 200 and body.decode() == CSV_BY_ORG
        status, body = await _get(app, path + "&format=table", {"x-api-key": admin})
        assert status == 200 and body.decode() == TABLE_BY_ORG
        status, body = await _get(app, "/v1/usage?by=week", {"x-api-key": admin})
        assert status == 400 and b"cannot group by" in body
    finally:
        await db.close()


def test_keys_create_admin(tmp_path: Path) -> None:
    url = ["--database-url", f"sqlite:///{tmp_path}/keys.db"]
    created = run("keys", "create", "--user", "ops", "--admin", "--format", "json", *url)
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["admin"] is True
    plain = json.loads(run("keys", "create", "--user", "a", "--format", "json", *url).stdout)
    assert plain["admin"] is False
    listed = json.loads(run("keys", "list", "--format", "json", *url).stdout)
    assert [key["admin"] for key in listed] == [True, False]


@pytest.mark.parametrize(
    ("name", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("alice", "alice"),
        ("a=b", "a=b"),
        (None, ""),
    ],
)
def test_csv_cells_cannot_be_formulas(name: str | None, cell: str) -> None:
    from tokenrelay.metering.reports import csv_cell

    assert csv_cell(name) == cell
