"""The usage dashboard's data over real HTTP: ``GET /v1/usage/dashboard`` on a seeded ledger
(per-day sums per group, top spenders, TTFT percentiles, failovers, errors, the CSV download),
who may read it (anyone while no key exists, then admin keys only), what a bad parameter or a
database that is not open gets, and the same answers from PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.pg_server import machine_database
from tests.servers import RunningGateway, free_port, gateway_environ, gateway_server
from tokenrelay.gate.keys import KeyStore
from tokenrelay.metering.ledger import LedgerRow, insert_rows
from tokenrelay.store import open_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

RANGE = "since=2026-11-01&until=2026-11-05"  # four UTC days, 11-01 to 11-04
CLAUDE = ("anthropic", "claude-sonnet-5-5")
GPT = ("openai", "gpt-5.5")
LLAMA = ("local", "llama-3")
FAILED_OVER = json.dumps(
    [
        {"provider": "anthropic", "model": "claude-sonnet-5-5", "outcome": "overloaded",
         "status": 529, "ms": 12.0},
        {"provider": "openai", "model": "gpt-5.5", "outcome": "ok", "status": 200, "ms": 80.0},
    ],
    separators=(",", ":"),
)  # fmt: skip
BOTH_FAILED = FAILED_OVER.replace('"ok","status":200', '"overloaded","status":529')
HEDGED = json.dumps(
    [
        {"provider": "anthropic", "model": "claude-sonnet-5-5", "outcome": "ok", "status": 200,
         "ms": 90.0},
        {"provider": "openai", "model": "gpt-5.5", "outcome": "hedged_out", "status": 0,
         "ms": 40.0},
    ],
    separators=(",", ":"),
)  # fmt: skip


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def entry(
    request_id: str,
    created_at: float,
    who: tuple[str | None, str | None],
    route: str,
    target: tuple[str, str] | None,
    *,
    tokens: tuple[int, int] = (0, 0),
    cost: int = 0,
    ttft: float | None = None,
    outcome: str = "completed",
    error_type: str | None = None,
    attempts: int = 1,
    detail: str | None = None,
    cache_read: int = 0,
) -> LedgerRow:
    user, org = who
    return LedgerRow(
        request_id=request_id,
        created_at=created_at,
        user_id=user,
        org_id=org,
        key_id=f"key_{user}" if user else None,
        route=route,
        provider=target[0] if target else None,
        model=target[1] if target else None,
        attempts=attempts,
        attempts_detail=detail,
        status={"completed": 200, "aborted": 200, "rejected": 429}.get(outcome, 502),
        outcome=outcome,
        error_type=error_type,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cache_read_tokens=cache_read,
        cost_nanousd=cost,
        priced=True,
        ttft_ms=ttft,
        duration_ms=1000.0,
    )


ALICE, BOB, CAROL, DAVE = ("alice", "acme"), ("bob", "acme"), ("carol", "globex"), ("dave", "ini")
LEDGER = [
    entry("r01", ts("2026-11-01T09:00:00"), ALICE, "default", GPT, tokens=(100, 10),
          cost=1_000_000, ttft=100, cache_read=40),
    # a second before midnight: still 11-01 on both backends (a bare cast rounds on PostgreSQL)
    entry("r02", ts("2026-11-01T23:59:59"), BOB, "default", CLAUDE, tokens=(200, 20),
          cost=2_000_000_001, ttft=200),
    entry("r03", ts("2026-11-02T00:00:00"), CAROL, "fast", GPT, tokens=(300, 30),
          cost=3_000_000, ttft=300, attempts=2, detail=FAILED_OVER),
    entry("r04", ts("2026-11-02T12:00:00"), ALICE, "fast", GPT, outcome="error",
          error_type="overloaded", attempts=2, detail=BOTH_FAILED),
    entry("r05", ts("2026-11-03T08:00:00"), (None, None), "default", None, outcome="rejected",
          error_type="rate_limited", attempts=0),
    entry("r06", ts("2026-11-03T09:00:00"), CAROL, "default", CLAUDE, tokens=(400, 40),
          cost=4_000_000, ttft=400, attempts=2, detail=HEDGED),
    entry("r07", ts("2026-11-04T10:00:00"), BOB, "default", CLAUDE, tokens=(50, 5),
          cost=500_000, ttft=500, outcome="aborted", error_type="client_disconnected"),
    entry("r08", ts("2026-11-04T11:00:00"), DAVE, "default", GPT, tokens=(10, 1), cost=1,
          ttft=600),
    # a hundred free requests of a bot with no org, their first tokens after 1, 2, ... 100 ms
    *(entry(f"b{i:03}", ts("2026-11-03T06:00:00") + i, ("bot", None), "bulk", LLAMA,
            tokens=(1, 1), ttft=float(i)) for i in range(1, 101)),
    # outside the range: a second before it, and at its (exclusive) end
    entry("x1", ts("2026-10-31T23:59:59"), ALICE, "default", GPT, tokens=(9, 9), cost=999,
          ttft=1),
    entry("x2", ts("2026-11-05T00:00:00"), ALICE, "default", GPT, tokens=(9, 9), cost=999,
          ttft=1),
]  # fmt: skip


def sums(
    requests: int = 0,
    errors: int = 0,
    tokens: tuple[int, int] = (0, 0),
    cost: int = 0,
    cache_read: int = 0,
) -> dict[str, Any]:
    """The sums the dashboard gives for a group, a day or the total."""
    return {
        "requests": requests,
        "errors": errors,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_read_tokens": cache_read,
        "cache_write_tokens": 0,
        "cost_nanousd": cost,
        "cache_hits": 0,
        "saved_nanousd": 0,
        "cost_usd": f"{cost // 10**9}.{cost % 10**9:09d}",
        "saved_usd": "0.000000000",
    }


ZERO = sums()
ACME = sums(4, 1, (350, 35), 2_001_500_001, cache_read=40)
GLOBEX = sums(2, 0, (700, 70), 7_000_000)
INI = sums(1, 0, (10, 1), 1)
NO_ORG = sums(101, 1, (100, 100))
TOTAL = sums(108, 2, (1160, 206), 2_008_500_002, cache_read=40)

BY_ORG_GROUPS: list[dict[str, Any]] = [
    {
        "name": "acme",
        "others": 0,
        "total": ACME,
        "daily": [
            sums(2, 0, (300, 30), 2_001_000_001, cache_read=40),
            sums(1, 1),
            ZERO,
            sums(1, 0, (50, 5), 500_000),
        ],
    },
    {
        "name": "globex",
        "others": 0,
        "total": GLOBEX,
        "daily": [ZERO, sums(1, 0, (300, 30), 3_000_000), sums(1, 0, (400, 40), 4_000_000), ZERO],
    },
    {"name": "ini", "others": 0, "total": INI, "daily": [ZERO, ZERO, ZERO, INI]},
    {"name": None, "others": 0, "total": NO_ORG, "daily": [ZERO, ZERO, NO_ORG, ZERO]},
]

TOP_USERS = [
    {"name": "bob", **sums(2, 0, (250, 25), 2_000_500_001)},
    {"name": "carol", **sums(2, 0, (700, 70), 7_000_000)},
    {"name": "alice", **sums(2, 1, (100, 10), 1_000_000, cache_read=40)},
    {"name": "dave", **INI},
    {"name": "bot", **sums(100, 0, (100, 100))},
    {"name": None, **sums(1, 1)},
]

TTFT = [
    {"provider": "anthropic", "requests": 3, "p50_ms": 400.0, "p90_ms": 500.0, "p99_ms": 500.0},
    {"provider": "local", "requests": 100, "p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0},
    {"provider": "openai", "requests": 3, "p50_ms": 300.0, "p90_ms": 600.0, "p99_ms": 600.0},
]

FAILOVERS = [
    {"route": "fast", "requests": 2, "failovers": 2, "recovered": 1, "hedged": 0},
    {"route": "bulk", "requests": 100, "failovers": 0, "recovered": 0, "hedged": 0},
    {"route": "default", "requests": 6, "failovers": 0, "recovered": 0, "hedged": 1},
]

ERRORS = [
    {"outcome": "aborted", "error": False, "error_type": "client_disconnected",
     "provider": "anthropic", "requests": 1},
    {"outcome": "error", "error": True, "error_type": "overloaded", "provider": "openai",
     "requests": 1},
    {"outcome": "rejected", "error": True, "error_type": "rate_limited", "provider": None,
     "requests": 1},
]  # fmt: skip

CSV_BY_ORG = """\
day,org,requests,errors,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd
2026-11-01,acme,2,0,300,30,40,0,2.001000001
2026-11-02,globex,1,0,300,30,0,0,0.003000000
2026-11-02,acme,1,1,0,0,0,0,0.000000000
2026-11-03,globex,1,0,400,40,0,0,0.004000000
2026-11-03,,101,1,100,100,0,0,0.000000000
2026-11-04,acme,1,0,50,5,0,0,0.000500000
2026-11-04,ini,1,0,10,1,0,0,0.000000001
"""


async def seed(url: str, rows: Iterable[LedgerRow] = LEDGER) -> None:
    async with await open_database(url) as db:
        await insert_rows(db, rows)


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/ledger.db"
    await seed(url)
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def gw(simulator: Any, ledger_url: str) -> AsyncIterator[RunningGateway]:
    """A gateway of its own over a freshly seeded SQLite ledger (no keys in it yet)."""
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": ledger_url}
    async with gateway_server(env) as running:
        yield running


async def get(
    http: aiohttp.ClientSession, url: str, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with http.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def dashboard(
    http: aiohttp.ClientSession, gw: RunningGateway, query: str, key: str | None = None
) -> dict[str, Any]:
    status, _, body = await get(http, f"{gw.url}/v1/usage/dashboard?{query}", key)
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


# --- the numbers ---------------------------------------------------------------------------------


async def test_by_org_per_day_with_exact_costs(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    answer = await dashboard(http, gw, f"{RANGE}&by=org")
    assert answer["by"] == "org"
    assert (answer["since"], answer["until"]) == ("2026-11-01T00:00:00Z", "2026-11-05T00:00:00Z")
    assert answer["days"] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    assert answer["groups"] == BY_ORG_GROUPS
    assert answer["total"] == TOTAL
    assert answer["access"] == "open"  # no key exists yet


async def test_top_spenders(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    answer = await dashboard(http, gw, f"{RANGE}&by=org")
    top = answer["top"]
    assert top["group"] == [{"name": group["name"], **group["total"]} for group in BY_ORG_GROUPS]
    assert top["org"] == top["group"]
    assert top["user"] == TOP_USERS
    by_user = await dashboard(http, gw, f"{RANGE}&by=user")
    assert by_user["top"]["user"] == by_user["top"]["group"] == TOP_USERS
    assert by_user["top"]["org"] == top["org"]


async def test_ttft_percentiles_failovers_and_errors(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    answer = await dashboard(http, gw, f"{RANGE}&by=route")
    assert answer["ttft"] == TTFT
    assert answer["failovers"] == FAILOVERS
    assert answer["errors"] == ERRORS


async def test_by_model_and_route(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    by_model = await dashboard(http, gw, f"{RANGE}&by=model")
    groups = by_model["groups"]
    assert [(g["name"], g["total"]["requests"], g["total"]["cost_nanousd"]) for g in groups] == [
        ("anthropic:claude-sonnet-5-5", 3, 2_004_500_001),
        ("openai:gpt-5.5", 4, 4_000_001),
        ("local:llama-3", 100, 0),
        (None, 1, 0),
    ]  # fmt: skip
    claude = by_model["groups"][0]["daily"]
    assert [day["cost_usd"] for day in claude] == [
        "2.000000001",
        "0.000000000",
        "0.004000000",
        "0.000500000",
    ]
    by_route = await dashboard(http, gw, f"{RANGE}&by=route")
    assert [(g["name"], g["total"]["requests"]) for g in by_route["groups"]] == [
        ("default", 6),
        ("fast", 2),
        ("bulk", 100),
    ]
    assert by_route["total"] == by_model["total"] == TOTAL


async def test_filters_narrow_every_part(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    answer = await dashboard(http, gw, f"{RANGE}&by=user&org=acme")
    assert answer["filters"] == {"org": "acme"}
    assert [(g["name"], g["total"]["cost_nanousd"]) for g in answer["groups"]] == [
        ("bob", 2_000_500_001),
        ("alice", 1_000_000),
    ]
    assert answer["total"] == ACME
    assert [(t["provider"], t["requests"]) for t in answer["ttft"]] == [
        ("anthropic", 2),
        ("openai", 1),
    ]


async def test_csv_download(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, headers, body = await get(
        http, f"{gw.url}/v1/usage/dashboard?{RANGE}&by=org&format=csv"
    )
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == (
        'attachment; filename="tokenrelay-usage-by-org-2026-11-01-2026-11-04.csv"'
    )
    assert headers["Cache-Control"] == "no-store"
    assert body.decode() == CSV_BY_ORG
    # the lines add up to the JSON's total
    lines = list(csv.DictReader(io.StringIO(body.decode())))
    assert sum(int(line["requests"]) for line in lines) == TOTAL["requests"]


async def test_many_groups_fold_into_one_series(
    simulator: Any, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Eleven users: the seven costliest are drawn, the other four summed as one."""
    url = f"sqlite:///{tmp_path}/many.db"
    await seed(
        url,
        [
            entry(f"u{i}", ts("2026-11-02T10:00:00") + i, (f"user{i:02}", "acme"), "default",
                  GPT, tokens=(i, i), cost=1000 * i, ttft=10.0)
            for i in range(1, 12)
        ],
    )  # fmt: skip
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": url}
    async with gateway_server(env) as running:
        answer = await dashboard(http, running, f"{RANGE}&by=user")
    groups = answer["groups"]
    assert [(g["name"], g["others"]) for g in groups] == [
        *((f"user{i:02}", 0) for i in range(11, 4, -1)),
        (None, 4),
    ]
    assert groups[-1]["total"] == sums(4, 0, (10, 10), 10_000)  # users 1 to 4
    assert groups[-1]["daily"][1] == groups[-1]["total"]
    assert len(answer["top"]["group"]) == 10  # the top list is not folded


# --- who may look --------------------------------------------------------------------------------


async def test_open_until_a_key_exists_then_admin_keys_only(
    gw: RunningGateway, http: aiohttp.ClientSession, ledger_url: str
) -> None:
    path = f"{gw.url}/v1/usage/dashboard?{RANGE}&by=org"
    status, _, body = await get(http, path, "trk_" + "x" * 40)
    assert status == 200 and json.loads(body)["access"] == "open"  # no key yet: not looked at

    async with await open_database(ledger_url) as db:
        store = KeyStore(db)
        _, admin = await store.create("ops", "acme", admin=True)
        _, plain = await store.create("alice", "acme")
        _, revoked = await store.create("mallory", admin=True)
        await store.revoke(revoked)

    status, headers, body = await get(http, path)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    error = json.loads(body)["error"]
    assert error["type"] == "authentication"
    assert error["message"] == (
        "the usage dashboard needs an admin API key as 'Authorization: Bearer <key>' "
        "(create one with 'tokenrelay keys create --admin')"
    )
    status, _, body = await get(http, path, "trk_" + "y" * 40)
    assert status == 401 and b"unknown or revoked" in body
    status, _, body = await get(http, path, revoked)
    assert status == 401 and b"unknown or revoked" in body
    status, _, body = await get(http, path, plain)
    assert status == 403 and json.loads(body)["error"]["type"] == "permission"
    assert plain.encode() not in body and plain[:12].encode() in body
    status, _, body = await get(http, path + "&format=csv", plain)
    assert status == 403  # nor the download

    answer = await dashboard(http, gw, f"{RANGE}&by=org", admin)
    assert answer["access"] == "admin" and answer["total"] == TOTAL
    async with http.get(path + "&format=csv", headers={"x-api-key": admin}) as response:
        assert response.status == 200 and await response.text() == CSV_BY_ORG
    # the page itself holds no data: it is served to anyone, and asks for the key
    status, headers, body = await get(http, f"{gw.url}/usage")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    assert b'type="password"' in body


async def test_never_open_when_callers_are_known_by_jwt(
    simulator: Any, ledger_url: str, http: aiohttp.ClientSession
) -> None:
    """No key yet, but JWTs name the users in the ledger: an admin key is still required."""
    env = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": ledger_url,
        "TOKENRELAY_AUTH__JWT__SECRET": "a-jwt-secret-of-at-least-32-bytes!!",
    }
    async with gateway_server(env) as running:
        status, _, body = await get(http, f"{running.url}/v1/usage/dashboard?{RANGE}")
    assert status == 401 and b"needs an admin API key" in body


async def test_bad_parameters_say_what_to_write(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    cases = {
        "by=day": "by 'day': use one of org, user, model, requested_model, route",
        "since=last+tuesday": "is not a time",
        "since=2d&until=3d": "range is empty",
        "since=2024-01-01&until=2026-01-01": "the range spans 731 days; the dashboard shows 400",
        "format=xml": "format must be json or csv",
        "ip=1.2.3.4&by=org&since=1d": "",  # an unknown parameter is ignored, as on /v1/usage
        "org=&by=org": "",  # an empty filter is no filter
    }
    for query, message in cases.items():
        status, _, body = await get(http, f"{gw.url}/v1/usage/dashboard?{query}")
        if not message:
            assert status == 200, (query, body)
            continue
        assert status == 400, query
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request" and message in error["message"], (query, error)


async def test_database_not_open_is_a_503_in_words(
    simulator: Any, http: aiohttp.ClientSession
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": dead}
    async with gateway_server(env) as running:
        status, _, body = await get(http, f"{running.url}/v1/usage/dashboard")
        assert status == 503
        error = json.loads(body)["error"]
        assert error["type"] == "api_error" and "database is not open yet" in error["message"]
        assert "127.0.0.1" not in error["message"]  # where the database is stays private
        status, _, _ = await get(http, f"{running.url}/usage")
        assert status == 200


# --- PostgreSQL ----------------------------------------------------------------------------------


async def test_postgresql_gives_the_same_answers(
    simulator: Any, gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    with machine_database() as pg_url:
        await seed(pg_url)
        env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": pg_url}
        async with gateway_server(env) as pg:
            pg_org = await dashboard(http, pg, f"{RANGE}&by=org")
            assert pg_org["groups"] == BY_ORG_GROUPS and pg_org["total"] == TOTAL
            assert pg_org["top"]["user"] == TOP_USERS
            assert pg_org["ttft"] == TTFT
            assert pg_org["failovers"] == FAILOVERS
            assert pg_org["errors"] == ERRORS
            for by in ("user", "model", "route"):
                query = f"{RANGE}&by={by}"
                assert await dashboard(http, pg, query) == await dashboard(http, gw, query), by
            status, _, body = await get(
                http, f"{pg.url}/v1/usage/dashboard?{RANGE}&by=org&format=csv"
            )
            assert status == 200 and body.decode() == CSV_BY_ORG
