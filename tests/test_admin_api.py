"""The admin API (/admin/v1/, docs/admin-api.md) over a real gateway and the simulator, on SQLite
and on PostgreSQL: every endpoint for every role (admin, org_admin, reader, an ordinary key, no
key) including the refusals; org admins confined to their org (404, not 403) and unable to raise
what a global admin set; what a key carries enforced by the gate; a change made through one
instance enforced by a second within the key cache TTL (measured and printed); hostile names kept
as data; the admin key never written to logs, metrics, ledger rows or audit entries."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import pytest_asyncio

from tests.pg_server import machine_database
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.admin.roles import CLI
from tokenrelay.admin.schema import KeyCreate
from tokenrelay.admin.service import AdminService
from tokenrelay.gate.keys import KeyStore
from tokenrelay.simulator import RunningSimulator
from tokenrelay.store import open_database

pytestmark = pytest.mark.asyncio(loop_scope="session")
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"
TTL = 1.0  # the key cache TTL of these gateways, seconds


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with machine_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/admin.db"
    base: str = request.getfixturevalue("pg_database")
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{base}?options=-csearch_path%3D{schema}"


def environ(sim_url: str, db_url: str, **extra: str) -> dict[str, str]:
    return {
        **gateway_environ(sim_url),
        "TOKENRELAY_DATABASE_URL": db_url,
        "TOKENRELAY_AUDIT__ENABLED": "false",
        "TOKENRELAY_AUTH__KEY_CACHE_TTL": str(TTL),
        **extra,
    }


async def bootstrap(db_url: str) -> str:
    """A global admin key made as ``tokenrelay keys create --role admin`` makes it."""
    async with await open_database(db_url) as db:
        made = await AdminService(db, KeyStore(db)).key_admin.create(
            CLI, KeyCreate(name="root", role="admin")
        )
    return made.secret


@pytest_asyncio.fixture(loop_scope="session")
async def gw(simulator: RunningSimulator, db_url: str) -> AsyncIterator[RunningGateway]:
    async with gateway_server(environ(simulator.url, db_url)) as running:
        yield running


class Client:
    def __init__(self, gw: RunningGateway, key: str | None) -> None:
        self.url = gw.url + "/admin/v1"
        self.key = key

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {self.key}"} if self.key else {}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method,
                self.url + path,
                json=body if raw is None else None,
                data=raw,
                headers=headers,
            ) as response,
        ):
            text = await response.read()
            data = await response.json(content_type=None) if text else None
            return response.status, data

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data = await self.call(method, path, body)
        assert got == status, (method, path, got, data)
        return data


async def ask(gw: RunningGateway, key: str, model: str = "oa") -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def world(gw: RunningGateway, db_url: str) -> dict[str, Any]:
    """Two orgs with a user each, and a key of every role."""
    admin = Client(gw, await bootstrap(db_url))
    a = await admin.ok("POST", "/orgs", {"name": "A", "limits": {"requests": "100/minute"}}, 201)
    b = await admin.ok("POST", "/orgs", {"name": "B"}, 201)
    ua = await admin.ok("POST", "/users", {"org_id": a["id"], "name": "ua"}, 201)
    ub = await admin.ok("POST", "/users", {"org_id": b["id"], "name": "ub"}, 201)

    async def key(**fields: Any) -> str:
        made = await admin.ok("POST", "/keys", {"name": "k", **fields}, 201)
        return str(made["secret"])

    kb = await admin.ok("POST", "/keys", {"name": "kb", "user_id": ub["id"]}, 201)
    budget_b = await admin.ok(
        "POST", "/budgets", {"scope": "org", "subject_id": b["id"], "amount_usd": "5"}, 201
    )
    return {
        "admin": admin,
        "org_admin": Client(gw, await key(role="org_admin", org_id=a["id"])),
        "reader": Client(gw, await key(role="reader")),
        "org_reader": Client(gw, await key(role="reader", org_id=a["id"])),
        "ordinary": Client(gw, await key(user_id=ua["id"])),
        "nobody": Client(gw, None),
        "a": a,
        "b": b,
        "ua": ua,
        "ub": ub,
        "kb": kb["key"],
        "budget_b": budget_b,
    }


# --- every endpoint, every role -----------------------------------------------------------------


async def test_every_endpoint_for_every_role(gw: RunningGateway, db_url: str) -> None:
    w = await world(gw, db_url)
    a, b, ua = w["a"]["id"], w["b"]["id"], w["ua"]["id"]
    kb, bb = w["kb"]["id"], w["budget_b"]["id"]
    # Made by the admin for org A, for the calls below to read and change.
    admin: Client = w["admin"]
    ka = (await admin.ok("POST", "/keys", {"name": "ka", "user_id": ua}, 201))["key"]["id"]
    ba = (
        await admin.ok(
            "POST", "/budgets", {"scope": "user", "subject_id": ua, "amount_usd": "1"}, 201
        )
    )["id"]

    # (method, path, body, {role: status}); "own" = org A's, "other" = org B's
    cases: list[tuple[str, str, Any, dict[str, int]]] = [
        ("GET", "/me", None, dict(admin=200, org_admin=200, reader=200, ordinary=403)),
        ("POST", "/orgs", {"name": "n"}, dict(admin=201, org_admin=403, reader=403)),
        ("GET", "/orgs", None, dict(admin=200, org_admin=200, reader=200, ordinary=403)),
        ("GET", f"/orgs/{a}", None, dict(admin=200, org_admin=200, reader=200, org_reader=200)),
        ("GET", f"/orgs/{b}", None, dict(admin=200, org_admin=404, reader=200, org_reader=404)),
        ("PATCH", f"/orgs/{a}", {"name": "A2"}, dict(admin=200, org_admin=200, reader=403)),
        ("PATCH", f"/orgs/{b}", {"name": "B2"}, dict(org_admin=404, org_reader=404)),
        ("PATCH", f"/orgs/{a}", {"disabled": True}, dict(org_admin=403)),
        ("POST", "/users", {"org_id": a, "name": "u"}, dict(admin=201, org_admin=201, reader=403)),
        ("POST", "/users", {"org_id": b, "name": "u"}, dict(org_admin=400)),
        ("GET", "/users", None, dict(admin=200, org_admin=200, reader=200, ordinary=403)),
        ("GET", f"/users/{ua}", None, dict(admin=200, org_admin=200, org_reader=200)),
        ("GET", f"/users/{w['ub']['id']}", None, dict(admin=200, org_admin=404, org_reader=404)),
        ("PATCH", f"/users/{ua}", {"name": "v"}, dict(admin=200, org_admin=200, reader=403)),
        ("PATCH", f"/users/{w['ub']['id']}", {"name": "v"}, dict(org_admin=404)),
        ("POST", "/keys", {"name": "x"}, dict(admin=201, org_admin=201, reader=403)),
        ("POST", "/keys", {"name": "x", "role": "admin"}, dict(org_admin=403)),
        ("GET", "/keys", None, dict(admin=200, org_admin=200, reader=200, ordinary=403)),
        ("GET", f"/keys/{ka}", None, dict(admin=200, org_admin=200, org_reader=200)),
        ("GET", f"/keys/{kb}", None, dict(admin=200, org_admin=404, org_reader=404, reader=200)),
        ("PATCH", f"/keys/{ka}", {"name": "y"}, dict(admin=200, org_admin=200, reader=403)),
        ("PATCH", f"/keys/{kb}", {"name": "y"}, dict(org_admin=404)),
        ("GET", f"/keys/{ka}/requests", None, dict(admin=200, org_admin=200, reader=200)),
        ("GET", f"/keys/{kb}/requests", None, dict(org_admin=404, org_reader=404)),
        ("GET", f"/keys/{ka}/limits", None, dict(admin=200, org_admin=200, reader=200)),
        ("GET", f"/keys/{kb}/limits", None, dict(org_admin=404)),
        ("POST", f"/keys/{kb}/rotate", {}, dict(org_admin=404, reader=403)),
        ("POST", f"/keys/{kb}/revoke", None, dict(org_admin=404, reader=403)),
        (
            "POST",
            "/budgets",
            {"scope": "org", "subject_id": a, "amount_usd": "1"},
            dict(admin=201, org_admin=201, reader=403),
        ),
        (
            "POST",
            "/budgets",
            {"scope": "org", "subject_id": b, "amount_usd": "1"},
            dict(org_admin=400),
        ),
        ("GET", "/budgets", None, dict(admin=200, org_admin=200, reader=200, ordinary=403)),
        ("GET", f"/budgets/{ba}", None, dict(admin=200, org_admin=200, org_reader=200)),
        ("GET", f"/budgets/{bb}", None, dict(admin=200, org_admin=404, org_reader=404)),
        ("PATCH", f"/budgets/{ba}", {"amount_usd": "0.5"}, dict(admin=200, org_admin=200)),
        ("PATCH", f"/budgets/{ba}", {"amount_usd": "9"}, dict(org_admin=403, reader=403)),
        ("PATCH", f"/budgets/{bb}", {"amount_usd": "1"}, dict(org_admin=404)),
        ("DELETE", f"/budgets/{bb}", None, dict(org_admin=404, reader=403)),
        ("DELETE", f"/budgets/{ba}", None, dict(org_admin=403)),
        ("GET", f"/spend?scope=org&subject_id={a}", None, dict(admin=200, org_admin=200)),
        ("GET", f"/spend?scope=org&subject_id={b}", None, dict(org_admin=404, reader=200)),
        ("GET", "/audit", None, dict(admin=200, org_admin=200, reader=200, ordinary=403)),
        ("GET", "/nosuch", None, dict(admin=404)),
    ]
    for method, path, body, expected in cases:
        expected = {**expected, "nobody": 401} if path != "/nosuch" else expected
        for role, status in expected.items():
            got, data = await w[role].call(method, path, body)
            assert got == status, (role, method, path, got, data)
            if got >= 400 and path != "/nosuch":
                assert set(data["error"]) == {"type", "message", "param"}
    # Deleting a budget the admin set, and rotating and revoking: as the admin.
    await admin.ok("DELETE", f"/budgets/{ba}", status=204)
    rotated = await admin.ok("POST", f"/keys/{ka}/rotate", {"overlap_seconds": 60})
    assert rotated["key"]["rotated_from"] == ka and rotated["secret"].startswith("trk_")
    revoked = await admin.ok("POST", f"/keys/{kb}/revoke")
    assert revoked["revoked_at"] is not None
    # The org admin sees only its org's entries in the audit trail; the admin sees them all.
    own = await w["org_admin"].ok("GET", "/audit?limit=200")
    assert own["data"] and {e["org_id"] for e in own["data"]} == {a}
    every = await admin.ok("GET", "/audit?limit=200")
    assert {"org.create", "key.create", "key.revoke", "budget.delete"} <= {
        e["action"] for e in every["data"]
    }
    me = await w["org_admin"].ok("GET", "/me")
    assert me["role"] == "org_admin" and me["org_id"] == a


async def test_org_admin_cannot_raise_its_org_past_the_admin(
    gw: RunningGateway, db_url: str
) -> None:
    w = await world(gw, db_url)
    a = w["a"]["id"]
    org_admin: Client = w["org_admin"]
    status, data = await org_admin.call(
        "PATCH", f"/orgs/{a}", {"limits": {"requests": "1000/minute"}}
    )
    assert status == 403 and data["error"]["type"] == "permission_error"
    status, _ = await org_admin.call("PATCH", f"/orgs/{a}", {"limits": None})
    assert status == 403  # no limit at all is the highest
    lowered = await org_admin.ok("PATCH", f"/orgs/{a}", {"limits": {"requests": "10/minute"}})
    assert lowered["limits"]["requests"] == "10/minute"
    # ... and back up to the admin's ceiling, not past it
    await org_admin.ok("PATCH", f"/orgs/{a}", {"limits": {"requests": "100/minute"}})
    budget = await w["admin"].ok(
        "POST", "/budgets", {"scope": "org", "subject_id": a, "amount_usd": "2.00"}, 201
    )
    path = f"/budgets/{budget['id']}"
    for change in ({"amount_usd": "2.01"}, {"hard": False}, {"period": "month"}):
        status, data = await org_admin.call("PATCH", path, change)
        if change == {"period": "month"}:
            assert status == 200  # already monthly: nothing loosened
        else:
            assert status == 403, (change, data)
    await org_admin.ok("PATCH", path, {"amount_usd": "1.50"})


async def test_bad_input_is_a_400_naming_the_field(gw: RunningGateway, db_url: str) -> None:
    admin = Client(gw, await bootstrap(db_url))
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "x", "metadata": {f"k{i}": i for i in range(33)}}, "metadata"),
        ({"name": "x", "limits": {"requests": "lots"}}, "limits"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": 5}, "name"),
    ]
    for body, param in cases:
        status, data = await admin.call("POST", "/orgs", body)
        assert status == 400, (body, data)
        assert data["error"]["type"] == "invalid_request"
        assert data["error"]["param"] == param, (body, data)
    status, data = await admin.call("POST", "/keys", {"name": "k", "expires_at": "2001-01-01"})
    assert (status, data["error"]["param"]) == (400, "expires_at")
    status, data = await admin.call("POST", "/orgs", raw=b"{not json")
    assert status == 400
    status, data = await admin.call("POST", "/orgs", raw=b'{"name": "' + b"x" * 70_000 + b'"}')
    assert status == 413
    status, data = await admin.call("GET", "/orgs?limit=0")
    assert (status, data["error"]["param"]) == (400, "limit")


async def test_hostile_names_are_stored_and_returned_as_data(
    gw: RunningGateway, db_url: str
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    org = await admin.ok(
        "POST", "/orgs", {"name": HOSTILE, "metadata": {HOSTILE[:60]: HOSTILE}}, 201
    )
    user = await admin.ok("POST", "/users", {"org_id": org["id"], "name": HOSTILE}, 201)
    assert (await admin.ok("GET", f"/orgs/{org['id']}"))["name"] == HOSTILE
    assert (await admin.ok("GET", f"/users/{user['id']}"))["name"] == HOSTILE
    assert (await admin.ok("GET", f"/orgs/{org['id']}"))["metadata"] == {HOSTILE[:60]: HOSTILE}


async def test_openapi_lists_every_route(gw: RunningGateway) -> None:
    from tokenrelay.admin_http import OPERATIONS, PREFIX

    async with aiohttp.ClientSession() as http, http.get(gw.url + PREFIX + "/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    served = {(op.method.lower(), PREFIX + op.path) for op in OPERATIONS}
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert served == documented
    assert {"Org", "User", "Key", "Budget", "AuditEntry", "Error"} <= set(
        doc["components"]["schemas"]
    )


# --- enforcement --------------------------------------------------------------------------------


async def test_what_a_key_carries_is_enforced(gw: RunningGateway, db_url: str) -> None:
    admin = Client(gw, await bootstrap(db_url))
    org = await admin.ok("POST", "/orgs", {"name": "O"}, 201)
    made = await admin.ok(
        "POST",
        "/keys",
        {"name": "k", "org_id": org["id"], "models": ["oa"], "limits": {"requests": "2/minute"}},
        201,
    )
    secret = made["secret"]
    assert (await ask(gw, secret, "oa"))[0] == 200
    status, body = await ask(gw, secret, "an")
    assert status == 403 and "may not use model" in body["error"]["message"]
    status, _ = await ask(gw, secret, "oa")  # the 3rd request this minute (the 403 counted)
    assert status == 429
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    expiring = await admin.ok("POST", "/keys", {"name": "e", "expires_at": soon}, 201)
    assert (await ask(gw, expiring["secret"]))[0] == 200
    await asyncio.sleep(2.2)
    status, body = await ask(gw, expiring["secret"])
    assert status == 401 and "expired" in body["error"]["message"]
    # Rotation: the old secret works through the overlap, the new one at once.
    fresh = await admin.ok("POST", "/keys", {"name": "r"}, 201)
    rotated = await admin.ok("POST", f"/keys/{fresh['key']['id']}/rotate", {"overlap_seconds": 60})
    assert (await ask(gw, rotated["secret"]))[0] == 200
    assert (await ask(gw, fresh["secret"]))[0] == 200


async def test_a_change_on_one_instance_is_enforced_by_another(
    simulator: RunningSimulator, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = environ(simulator.url, db_url)
    async with gateway_server(env) as one, gateway_server(env) as two:
        admin = Client(one, await bootstrap(db_url))
        org = await admin.ok("POST", "/orgs", {"name": "O"}, 201)
        keys = [
            (await admin.ok("POST", "/keys", {"name": f"k{i}", "org_id": org["id"]}, 201))
            for i in range(2)
        ]
        revoked, spender = keys
        for key in keys:
            assert (await ask(two, key["secret"]))[0] == 200  # cached as valid on two
        # A budget on the key, then spend past a lowered amount.
        budget = await admin.ok(
            "POST",
            "/budgets",
            {"scope": "key", "subject_id": spender["key"]["id"], "amount_usd": "100"},
            201,
        )

        async def refused_within(secret: str, want: int, change: Any) -> float:
            await change()
            started = time.monotonic()
            while time.monotonic() - started < 10 * TTL:
                if (await ask(two, secret))[0] == want:
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
            raise AssertionError("not enforced in time")

        revoke = await refused_within(
            revoked["secret"],
            401,
            lambda: admin.ok("POST", f"/keys/{revoked['key']['id']}/revoke"),
        )
        async with await open_database(db_url) as db:  # spend is in the ledger by now
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = await db.fetch_one(
                    "SELECT COUNT(*) AS n FROM ledger WHERE key_id = ?", (spender["key"]["id"],)
                )
                if row and row["n"]:
                    break
                await asyncio.sleep(0.05)
        lower = await refused_within(
            spender["secret"],
            402,
            lambda: admin.ok("PATCH", f"/budgets/{budget['id']}", {"amount_usd": "0.000000001"}),
        )
        await admin.ok("PATCH", f"/budgets/{budget['id']}", {"amount_usd": "100"})
        await asyncio.sleep(TTL + 0.2)
        other = await admin.ok("POST", "/keys", {"name": "k3", "org_id": org["id"]}, 201)
        assert (await ask(two, other["secret"]))[0] == 200
        disable = await refused_within(
            other["secret"],
            403,
            lambda: admin.ok("PATCH", f"/orgs/{org['id']}", {"disabled": True}),
        )
    with capsys.disabled():
        print(
            f"\n[{db_url.split(':')[0]}] enforced by a second instance (key cache TTL {TTL:g} s): "
            f"revoke {revoke:.2f} s, lowered budget {lower:.2f} s, disabled org {disable:.2f} s"
        )
    for delay in (revoke, lower, disable):
        assert delay <= TTL * 3 + 1  # the TTL, plus a refresh and a request in flight


async def test_the_admin_key_is_never_written_anywhere(
    simulator: RunningSimulator, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root = await bootstrap(db_url)
    env = environ(simulator.url, db_url, TOKENRELAY_AUDIT__ENABLED="true")
    async with gateway_server(env) as gw:
        admin = Client(gw, root)
        made = await admin.ok("POST", "/keys", {"name": "k"}, 201)
        await admin.ok("GET", "/audit")
        await Client(gw, root[:-1] + "x").call("GET", "/me")  # a wrong one: logged nowhere
        assert (await ask(gw, root))[0] == 200  # the admin key used on the relay too
        assert (await ask(gw, made["secret"]))[0] == 200
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as r:
            metrics = await r.text()
        await asyncio.sleep(0.5)
    async with await open_database(db_url) as db:
        ledger = await db.fetch_all("SELECT * FROM ledger")
        audit = await db.fetch_all("SELECT * FROM admin_audit")
    assert ledger and audit
    for secret in (root, made["secret"]):
        body = secret[12:]  # past the display prefix, which listings may show
        assert body not in caplog.text
        assert body not in metrics
        assert body not in repr(ledger)
        assert body not in repr(audit)
