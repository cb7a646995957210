"""The admin API's second pass, over a real gateway and the simulator on SQLite and PostgreSQL:
the rate-limit view read from the limiter without counting (in process and in Redis), disabled
orgs and users refusing JWT callers within the key cache TTL, and when each key was last used,
written in batches off the request path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import jwt
import pytest
import pytest_asyncio

from tests.redis_server import RedisServer, redis_server_fixture
from tests.servers import RunningGateway, gateway_server
from tests.test_admin_api import (  # noqa: F401  (db_url, pg_database: fixtures)
    TTL,
    Client,
    ask,
    bootstrap,
    db_url,
    environ,
    pg_database,
)
from tokenrelay.gate.keys import KeyStore
from tokenrelay.gate.last_used import LastUsed
from tokenrelay.simulator import RunningSimulator
from tokenrelay.store import Database, open_database

pytestmark = pytest.mark.asyncio(loop_scope="session")
redis_server = redis_server_fixture(scope="module")
JWT_SECRET = "a-jwt-secret-of-at-least-32-bytes!!"


def token(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 300, **claims}, JWT_SECRET, algorithm="HS256")


@pytest_asyncio.fixture(loop_scope="session")
async def db(db_url: str) -> AsyncIterator[Database]:  # noqa: F811
    async with await open_database(db_url) as opened:
        yield opened


# --- GET /admin/v1/keys/{id}/limits -------------------------------------------------------------


@pytest.mark.parametrize("limiter", ["memory", "redis"])
async def test_the_limits_view_reads_without_counting(
    simulator: RunningSimulator,
    db_url: str,  # noqa: F811
    limiter: str,
    request: pytest.FixtureRequest,
) -> None:
    extra = {}
    if limiter == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        extra = {
            "TOKENRELAY_LIMITS__REDIS_URL": server.url,
            "TOKENRELAY_LIMITS__KEY_PREFIX": f"view-{time.monotonic_ns()}",
        }
    async with gateway_server(environ(simulator.url, db_url, **extra)) as gw:
        admin = Client(gw, await bootstrap(db_url))
        org = await admin.ok(
            "POST",
            "/orgs",
            {"name": "O", "limits": {"requests": "5/minute", "tokens": "100000/minute"}},
            201,
        )
        user = await admin.ok(
            "POST",
            "/users",
            {"org_id": org["id"], "name": "u", "limits": {"requests": "7/minute;100/day"}},
            201,
        )
        made = await admin.ok(
            "POST",
            "/keys",
            {
                "name": "k",
                "user_id": user["id"],
                "limits": {"requests": "4/minute", "concurrent_streams": 2},
            },
            201,
        )
        key_id, secret = made["key"]["id"], made["secret"]
        for _ in range(2):
            assert (await ask(gw, secret))[0] == 200

        async def view() -> dict[tuple[str, str, int | None], dict[str, Any]]:
            found = await admin.ok("GET", f"/keys/{key_id}/limits")
            return {(s["subject"], s["kind"], s["window_seconds"]): s for s in found["limits"]}

        deadline = time.monotonic() + 5  # tokens are charged once the stream has been settled
        while (states := await view())[(f"org:{org['id']}", "tokens", 60)]["used"] == 0:
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.05)
        for _ in range(3):  # reading counts nothing
            states = await view()
        assert set(states) == {
            (f"key:{key_id}", "requests", 60),
            (f"key:{key_id}", "concurrent_streams", None),
            (f"user:{user['id']}", "requests", 60),
            (f"user:{user['id']}", "requests", 86400),
            (f"org:{org['id']}", "requests", 60),
            (f"org:{org['id']}", "tokens", 60),
        }
        mine = states[(f"key:{key_id}", "requests", 60)]
        assert (mine["limit"], mine["quota"], mine["used"], mine["remaining"]) == (
            "4/minute",
            4,
            2,
            2,
        )
        assert 0 < mine["reset_seconds"] <= 60
        day = states[(f"user:{user['id']}", "requests", 86400)]
        assert (day["limit"], day["quota"], day["used"], day["remaining"]) == (
            "7/minute;100/day",
            100,
            2,
            98,
        )
        assert states[(f"org:{org['id']}", "requests", 60)]["remaining"] == 3
        tokens = states[(f"org:{org['id']}", "tokens", 60)]
        assert tokens["used"] > 0 and tokens["used"] + tokens["remaining"] == 100_000
        streams = states[(f"key:{key_id}", "concurrent_streams", None)]
        assert (streams["quota"], streams["used"], streams["remaining"]) == (2, 0, 2)

        # A stream in flight holds one of the key's slots, and the view shows it.
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                gw.url + "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {secret}"},
            ) as response,
        ):
            assert response.status == 200
            await response.content.readany()
            held = (await view())[(f"key:{key_id}", "concurrent_streams", None)]
            assert (held["used"], held["remaining"]) == (1, 1)
        # Three requests counted (two asked, one streamed): the view never counted one.
        assert (await view())[(f"key:{key_id}", "requests", 60)]["used"] == 3
        status, refused = await ask(gw, secret)  # the fourth fits; the fifth would not
        assert status == 200, refused
        assert (await view())[(f"key:{key_id}", "requests", 60)]["remaining"] == 0


# --- disabled orgs and users, for JWT callers ----------------------------------------------------


async def refused_within(gw: RunningGateway, bearer: str, want: int) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 10 * TTL:
        if (await ask(gw, bearer))[0] == want:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {want} in time")


async def test_disabled_orgs_and_users_refuse_jwt_callers(
    simulator: RunningSimulator,
    db_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = environ(
        simulator.url,
        db_url,
        TOKENRELAY_AUTH__JWT__SECRET=JWT_SECRET,
        TOKENRELAY_ADMIN__JWT_ROLE_CLAIM="tokenrelay_role",
    )
    async with gateway_server(env) as one, gateway_server(env) as two:
        admin = Client(one, await bootstrap(db_url))
        org = await admin.ok("POST", "/orgs", {"name": "O"}, 201)
        user = await admin.ok("POST", "/users", {"org_id": org["id"], "name": "u"}, 201)
        other = await admin.ok("POST", "/users", {"org_id": org["id"], "name": "v"}, 201)
        both = token(sub=user["id"], org=org["id"])
        no_org = token(sub=other["id"])  # only the user's row names the org
        stranger = token(sub="someone-else", org="not-an-org")  # no rows at all: served
        for bearer in (both, no_org, stranger):
            assert (await ask(one, bearer))[0] == 200
            assert (await ask(two, bearer))[0] == 200  # cached as enabled on two

        # This instance enforces a change it made at once; the other within the TTL.
        await admin.ok("PATCH", f"/users/{user['id']}", {"disabled": True})
        status, body = await ask(one, both)
        assert status == 403 and "user of this token is disabled" in body["error"]["message"]
        user_delay = await refused_within(two, both, 403)
        assert (await ask(two, no_org))[0] == 200  # the other user is not disabled
        await admin.ok("PATCH", f"/users/{user['id']}", {"disabled": False})
        assert (await ask(one, both))[0] == 200

        await admin.ok("PATCH", f"/orgs/{org['id']}", {"disabled": True})
        status, body = await ask(one, no_org)
        assert status == 403 and "organization of this token" in body["error"]["message"]
        org_delay = await refused_within(two, no_org, 403)
        assert (await ask(two, stranger))[0] == 200
        # An admin JWT of the disabled org is refused on the admin API too.
        reader = Client(one, token(sub=user["id"], org=org["id"], tokenrelay_role="reader"))
        status, body = await reader.call("GET", "/me")
        assert status == 403 and "disabled" in body["error"]["message"]
    with capsys.disabled():
        print(
            f"\n[{db_url.split(':')[0]}] JWT callers refused by a second instance (key cache "
            f"TTL {TTL:g} s): disabled user {user_delay:.2f} s, disabled org {org_delay:.2f} s"
        )
    for delay in (user_delay, org_delay):
        assert delay <= TTL * 3 + 1


# --- last_used_at ---------------------------------------------------------------------------------


async def test_last_use_is_shown_and_written_in_batches(
    simulator: RunningSimulator,
    db_url: str,  # noqa: F811
) -> None:
    env = environ(simulator.url, db_url, TOKENRELAY_AUTH__KEY_LAST_USED_INTERVAL="0.2")
    async with gateway_server(env) as gw:
        admin = Client(gw, await bootstrap(db_url))
        made = [(await admin.ok("POST", "/keys", {"name": f"k{i}"}, 201)) for i in range(3)]
        assert all(m["key"]["last_used_at"] is None for m in made)
        keys = await gw.gateway.gate.authenticator.key_store()
        flushes = keys.last_used.flushes
        before = time.time()
        for _ in range(4):
            for m in made[:2]:
                assert (await ask(gw, m["secret"]))[0] == 200
        shown = await admin.ok("GET", f"/keys/{made[0]['key']['id']}")
        assert shown["last_used_at"] is not None  # at once, from what is not written yet
        async with await open_database(db_url) as db:
            deadline = time.monotonic() + 5
            while True:
                rows = await db.fetch_all("SELECT id, last_used_at FROM api_keys")
                used = {row["id"]: row["last_used_at"] for row in rows}
                if all(used[m["key"]["id"]] is not None for m in made[:2]):
                    break
                assert time.monotonic() < deadline, used
                await asyncio.sleep(0.05)
        assert used[made[2]["key"]["id"]] is None  # never used
        assert all(used[m["key"]["id"]] >= int(before) for m in made[:2])
        # Eight requests (and the admin calls) in a few batches, never a write per request.
        assert keys.last_used.flushes - flushes < 8
        listed = await admin.ok("GET", "/keys")
        by_id = {key["id"]: key for key in listed["data"]}
        assert by_id[made[1]["key"]["id"]]["last_used_at"] is not None
        assert by_id[made[2]["key"]["id"]]["last_used_at"] is None


async def test_a_graceful_shutdown_writes_what_is_pending(
    simulator: RunningSimulator,
    db_url: str,  # noqa: F811
) -> None:
    env = environ(simulator.url, db_url, TOKENRELAY_AUTH__KEY_LAST_USED_INTERVAL="3600")
    secret = await bootstrap(db_url)
    async with gateway_server(env) as gw:
        assert (await ask(gw, secret))[0] == 200
    async with await open_database(db_url) as db:
        row = await db.fetch_one("SELECT last_used_at FROM api_keys")
    assert row is not None and row["last_used_at"] is not None


async def test_batches_move_times_forward_and_survive_a_failure(db: Database) -> None:
    store = KeyStore(db)
    ids = [(await store.create(f"u{i}"))[0] for i in range(600)]
    recorder = LastUsed(db, interval=3600)
    for key_id in ids:
        recorder.mark(key_id)
    marked = dict(recorder.pending)
    await recorder.flush()
    assert recorder.flushes == 2 and not recorder.pending  # 600 keys: two UPDATEs of 500 at most
    rows = {r["id"]: r["last_used_at"] for r in await db.fetch_all("SELECT * FROM api_keys")}
    assert all(rows[key_id] == pytest.approx(marked[key_id]) for key_id in ids)
    # An older time (another instance flushing late) never moves a key's time back.
    recorder.pending[ids[0]] = marked[ids[0]] - 100
    await recorder.flush()
    row = await db.fetch_one("SELECT last_used_at FROM api_keys WHERE id = ?", (ids[0],))
    assert row is not None and row["last_used_at"] == pytest.approx(marked[ids[0]])
    assert recorder.seen(ids[0], None) is None  # nothing pending now
    await recorder.close()
    # A flush that fails keeps its batch for the next one, under newer uses.
    failing = LastUsed(cast("Database", _Failing(db)), interval=3600)
    failing.mark(ids[1])
    kept = failing.pending[ids[1]]
    await failing.flush()
    assert failing.pending == {ids[1]: kept}
    failing.mark(ids[1])
    assert failing.pending[ids[1]] >= kept
    failing.db = db
    await failing.close()
    assert not failing.pending
    row = await db.fetch_one("SELECT last_used_at FROM api_keys WHERE id = ?", (ids[1],))
    assert row is not None and row["last_used_at"] >= kept


class _Failing:
    """A database that is away: every statement fails as a dropped connection does."""

    def __init__(self, db: Database) -> None:
        self.backend = db.backend

    async def execute(self, sql: str, params: Any = ()) -> int:
        from tokenrelay.store import DatabaseError

        raise DatabaseError("connection refused")
