"""The admin API's key and tenant paths the first passes left out, over a real gateway and the
simulator on SQLite and PostgreSQL: rotation (the overlap, then the old key refused; revoked or
expired keys not rotated), expiry set by PATCH and enforced on /api/generate, PATCH validation
naming the field, list filters and cursor pages, and the org and user update paths."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import aiohttp
import pytest

from tests.servers import RunningGateway
from tests.test_admin_api import (  # noqa: F401  (db_url, gw, pg_database: fixtures)
    Client,
    bootstrap,
    db_url,
    gw,
    pg_database,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def generate(gw: RunningGateway, key: str, route: str = "oa") -> tuple[int, str]:  # noqa: F811
    """A real streamed request through ``/api/generate``: its status and body."""
    body = {"prompt": "hi", "route": route, "maxTokens": 5}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/api/generate", json=body, headers={"authorization": f"Bearer {key}"}
        ) as response,
    ):
        return response.status, await response.text()


def at(seconds_from_now: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def epoch(iso_time: str) -> float:
    return datetime.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


async def refused(client: Client, method: str, path: str, body: Any, status: int) -> Any:
    got, data = await client.call(method, path, body)
    assert got == status, (method, path, body, got, data)
    return data["error"]


# --- rotation -----------------------------------------------------------------------------------


async def test_the_old_key_works_through_the_overlap_then_is_refused(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    org = await admin.ok("POST", "/orgs", {"name": "O"}, 201)
    made = await admin.ok(
        "POST",
        "/keys",
        {
            "name": "r",
            "org_id": org["id"],
            "models": ["oa"],
            "limits": {"requests": "50/minute"},
            "metadata": {"team": "x"},
        },
        201,
    )
    old_id, old_secret = made["key"]["id"], made["secret"]
    rotated = await admin.ok("POST", f"/keys/{old_id}/rotate", {"overlap_seconds": 2})
    new = rotated["key"]
    assert new["id"] != old_id and new["rotated_from"] == old_id
    assert (new["org_id"], new["models"], new["metadata"]) == (org["id"], ["oa"], {"team": "x"})
    assert new["limits"]["requests"] == "50/minute"
    ends = rotated["old_key_expires_at"]
    assert (await admin.ok("GET", f"/keys/{old_id}"))["expires_at"] == ends
    # Both secrets work during the overlap; the grants came along (model "an" still refused).
    assert (await generate(gw, old_secret))[0] == 200
    assert (await generate(gw, rotated["secret"]))[0] == 200
    assert (await generate(gw, rotated["secret"], "an"))[0] == 403
    # Refused as soon as the time the API gave has passed (not up to a second later).
    await asyncio.sleep(max(0.0, epoch(ends) - time.time()) + 0.2)
    status, text = await generate(gw, old_secret)
    assert status == 401 and "expired" in text, text
    assert (await generate(gw, rotated["secret"]))[0] == 200
    # An expired key is not rotated again: 409, typed "conflict".
    error = await refused(admin, "POST", f"/keys/{old_id}/rotate", {}, 409)
    assert error["type"] == "conflict" and "revoked or expired" in error["message"]


async def test_the_overlap_never_outlives_the_key(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    expires = at(3600)
    made = await admin.ok("POST", "/keys", {"name": "e", "expires_at": expires}, 201)
    rotated = await admin.ok(
        "POST", f"/keys/{made['key']['id']}/rotate", {"overlap_seconds": 86400}
    )
    assert rotated["old_key_expires_at"] == expires
    assert rotated["key"]["expires_at"] == expires  # the new key keeps the old expiry
    # overlap_seconds 0 ends the old key at once.
    fresh = await admin.ok("POST", "/keys", {"name": "z"}, 201)
    await admin.ok("POST", f"/keys/{fresh['key']['id']}/rotate", {"overlap_seconds": 0})
    assert (await generate(gw, fresh["secret"]))[0] == 401
    error = await refused(
        admin, "POST", f"/keys/{fresh['key']['id']}/rotate", {"overlap_seconds": -1}, 400
    )
    assert error["param"] == "overlap_seconds"


async def test_revoked_keys_and_other_orgs_keys_are_not_rotated(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    a = await admin.ok("POST", "/orgs", {"name": "A"}, 201)
    b = await admin.ok("POST", "/orgs", {"name": "B"}, 201)
    org_admin = Client(
        gw,
        (
            await admin.ok(
                "POST", "/keys", {"name": "oa", "role": "org_admin", "org_id": a["id"]}, 201
            )
        )["secret"],
    )
    kb = await admin.ok("POST", "/keys", {"name": "kb", "org_id": b["id"]}, 201)
    error = await refused(org_admin, "POST", f"/keys/{kb['key']['id']}/rotate", {}, 404)
    assert error["type"] == "not_found"
    assert (await admin.ok("GET", f"/keys/{kb['key']['id']}"))["expires_at"] is None
    listed = await admin.ok("GET", f"/keys?org_id={b['id']}")
    assert [k["id"] for k in listed["data"]] == [kb["key"]["id"]]  # no new key made
    assert (await generate(gw, kb["secret"]))[0] == 200

    revoked = await admin.ok("POST", f"/keys/{kb['key']['id']}/revoke")
    assert revoked["revoked_at"] is not None
    assert (await admin.ok("POST", f"/keys/{kb['key']['id']}/revoke")) == revoked  # idempotent
    error = await refused(admin, "POST", f"/keys/{kb['key']['id']}/rotate", {}, 409)
    assert (await refused(admin, "POST", "/keys/key_nope/rotate", {}, 404))["type"] == "not_found"
    assert error["type"] == "conflict"
    status, text = await generate(gw, kb["secret"])
    assert status == 401 and "revoked" in text


# --- expiry and PATCH validation ----------------------------------------------------------------


async def test_patched_expiry_is_enforced_and_checked(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    made = await admin.ok("POST", "/keys", {"name": "k"}, 201)
    path, secret = f"/keys/{made['key']['id']}", made["secret"]
    for bad in ("2001-01-01T00:00:00Z", at(-5), "tomorrow", "2030-13-45"):
        error = await refused(admin, "PATCH", path, {"expires_at": bad}, 400)
        assert (error["type"], error["param"]) == ("invalid_request", "expires_at"), (bad, error)
    assert (await admin.ok("GET", path))["expires_at"] is None  # nothing changed
    soon = at(2)
    assert (await admin.ok("PATCH", path, {"expires_at": soon}))["expires_at"] == soon
    assert (await generate(gw, secret))[0] == 200
    await asyncio.sleep(max(0.0, epoch(soon) - time.time()) + 0.2)
    status, text = await generate(gw, secret)
    assert status == 401 and "expired" in text, text
    # Clearing the expiry brings the key back, at once on this instance.
    assert (await admin.ok("PATCH", path, {"expires_at": None}))["expires_at"] is None
    assert (await generate(gw, secret))[0] == 200
    # An offset is honoured; a naive time is read as UTC.
    later = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(days=1)
    shown = later.isoformat().replace("+00:00", "Z")
    offset = later.astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat()
    assert (await admin.ok("PATCH", path, {"expires_at": offset}))["expires_at"] == shown
    naive = later.replace(tzinfo=None).isoformat()
    assert (await admin.ok("PATCH", path, {"expires_at": naive}))["expires_at"] == shown


async def test_patched_routes_models_and_limits(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    made = await admin.ok("POST", "/keys", {"name": "k"}, 201)
    path, secret = f"/keys/{made['key']['id']}", made["secret"]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"limits": {"requests": "lots"}}, "limits"),
        ({"limits": {"tokens": "5/fortnight"}}, "limits"),
        ({"limits": {"concurrent_streams": 0}}, "limits"),
        ({"limits": {"colour": 1}}, "limits"),
        ({"routes": "oa"}, "routes"),
        ({"models": [""]}, "models"),
        ({"role": "owner"}, "role"),
        ({"name": ""}, "name"),
    ]
    for body, param in bad:
        error = await refused(admin, "PATCH", path, body, 400)
        assert (error["type"], error["param"]) == ("invalid_request", param), (body, error)
    unchanged = await admin.ok("GET", path)
    assert await admin.ok("PATCH", path, {}) == unchanged

    key = await admin.ok("PATCH", path, {"models": ["oa", "an", "oa"], "routes": ["oa"]})
    assert (key["models"], key["routes"]) == (["an", "oa"], ["oa"])
    assert (await generate(gw, secret, "oa"))[0] == 200
    assert (await generate(gw, secret, "an"))[0] == 403  # the route is not granted
    key = await admin.ok("PATCH", path, {"routes": None, "models": ["an"]})
    assert (key["routes"], key["models"]) == (None, ["an"])
    assert (await generate(gw, secret, "an"))[0] == 200
    status, text = await generate(gw, secret, "oa")
    assert status == 403 and "may not use model" in text

    key = await admin.ok("PATCH", path, {"models": None, "limits": {"requests": "1/minute"}})
    assert key["limits"]["requests"] == "1/minute"
    assert (await generate(gw, secret))[0] == 200
    assert (await generate(gw, secret))[0] == 429
    key = await admin.ok("PATCH", path, {"limits": None, "metadata": {"why": "lifted"}})
    assert (key["limits"]["requests"], key["metadata"]) == (None, {"why": "lifted"})
    assert (await generate(gw, secret))[0] == 200


async def test_patched_roles_stay_consistent_with_the_key(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    org = await admin.ok("POST", "/orgs", {"name": "O"}, 201)
    global_key = await admin.ok("POST", "/keys", {"name": "g"}, 201)
    org_key = await admin.ok("POST", "/keys", {"name": "o", "org_id": org["id"]}, 201)
    g, o = f"/keys/{global_key['key']['id']}", f"/keys/{org_key['key']['id']}"
    error = await refused(admin, "PATCH", g, {"role": "org_admin"}, 400)
    assert error["param"] == "role"
    error = await refused(admin, "PATCH", o, {"role": "admin"}, 400)
    assert error["param"] == "role"
    # A global reader reads the admin API; promoted, the key does at once.
    reader = Client(gw, global_key["secret"])
    assert (await reader.call("GET", "/keys"))[0] == 403
    assert (await admin.ok("PATCH", g, {"role": "reader"}))["role"] == "reader"
    assert (await reader.call("GET", "/keys"))[0] == 200
    assert (await reader.call("POST", "/orgs", {"name": "n"}))[0] == 403
    # An org admin made by PATCH manages its org and cannot hand out role "admin".
    assert (await admin.ok("PATCH", o, {"role": "org_admin"}))["role"] == "org_admin"
    org_admin = Client(gw, org_key["secret"])
    error = await refused(org_admin, "PATCH", o, {"role": "admin"}, 403)
    assert error["type"] == "permission_error"
    assert (await org_admin.ok("PATCH", o, {"name": "renamed"}))["name"] == "renamed"


# --- create: tenants ----------------------------------------------------------------------------


async def test_a_keys_org_follows_its_user(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    a = await admin.ok("POST", "/orgs", {"name": "A"}, 201)
    b = await admin.ok("POST", "/orgs", {"name": "B"}, 201)
    ua = await admin.ok("POST", "/users", {"org_id": a["id"], "name": "ua"}, 201)
    ub = await admin.ok("POST", "/users", {"org_id": b["id"], "name": "ub"}, 201)
    made = await admin.ok("POST", "/keys", {"name": "k", "user_id": ua["id"]}, 201)
    assert (made["key"]["org_id"], made["key"]["user_id"]) == (a["id"], ua["id"])
    error = await refused(
        admin, "POST", "/keys", {"name": "k", "user_id": ua["id"], "org_id": b["id"]}, 400
    )
    assert error["param"] == "org_id" and "is not in org" in error["message"]
    # A global admin may name a user with no row (as the CLI always could).
    free = await admin.ok("POST", "/keys", {"name": "k", "user_id": "alice"}, 201)
    assert (free["key"]["org_id"], free["key"]["user_id"]) == (None, "alice")
    error = await refused(admin, "POST", "/keys", {"name": "k", "role": "org_admin"}, 400)
    assert error["param"] == "org_id"
    error = await refused(
        admin, "POST", "/keys", {"name": "k", "role": "admin", "org_id": a["id"]}, 400
    )
    assert error["param"] == "role"

    org_admin = Client(
        gw,
        (
            await admin.ok(
                "POST", "/keys", {"name": "oa", "role": "org_admin", "org_id": a["id"]}, 201
            )
        )["secret"],
    )
    own = await org_admin.ok("POST", "/keys", {"name": "k"}, 201)
    assert own["key"]["org_id"] == a["id"]
    for body, param in [
        ({"name": "k", "org_id": b["id"]}, "org_id"),
        ({"name": "k", "user_id": ub["id"]}, "user_id"),
        ({"name": "k", "user_id": "alice"}, "user_id"),
    ]:
        error = await refused(org_admin, "POST", "/keys", body, 400)
        assert error["param"] == param, (body, error)
    mine = await org_admin.ok("POST", "/keys", {"name": "k", "user_id": ua["id"]}, 201)
    assert mine["key"]["org_id"] == a["id"]


# --- lists --------------------------------------------------------------------------------------


async def walk(client: Client, path: str, limit: int) -> list[str]:
    """Every id of a list, page by page through ``next``."""
    sep = "&" if "?" in path else "?"
    ids: list[str] = []
    cursor = ""
    while True:
        page = await client.ok("GET", f"{path}{sep}limit={limit}{cursor}")
        assert len(page["data"]) <= limit
        ids += [row["id"] for row in page["data"]]
        if page["next"] is None:
            return ids
        assert page["next"] == ids[-1]
        cursor = f"&cursor={page['next']}"


async def test_key_lists_filter_and_page(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    a = await admin.ok("POST", "/orgs", {"name": "A"}, 201)
    b = await admin.ok("POST", "/orgs", {"name": "B"}, 201)
    ua = await admin.ok("POST", "/users", {"org_id": a["id"], "name": "ua"}, 201)
    in_a = [
        (await admin.ok("POST", "/keys", {"name": f"a{i}", "org_id": a["id"]}, 201))["key"]["id"]
        for i in range(3)
    ]
    of_ua = [
        (await admin.ok("POST", "/keys", {"name": f"u{i}", "user_id": ua["id"]}, 201))["key"]["id"]
        for i in range(2)
    ]
    in_b = (await admin.ok("POST", "/keys", {"name": "b", "org_id": b["id"]}, 201))["key"]["id"]
    gone = in_a[1]
    await admin.ok("POST", f"/keys/{gone}/revoke")

    live_a = [k for k in in_a + of_ua if k != gone]
    assert sorted(await walk(admin, f"/keys?org_id={a['id']}", 2)) == sorted(live_a)
    every_a = await walk(admin, f"/keys?org_id={a['id']}&include_revoked=true", 2)
    assert sorted(every_a) == sorted(in_a + of_ua) and len(set(every_a)) == len(every_a)
    assert sorted(await walk(admin, f"/keys?user_id={ua['id']}", 1)) == sorted(of_ua)
    assert await walk(admin, f"/keys?org_id={b['id']}", 5) == [in_b]
    everything = await walk(admin, "/keys?include_revoked=true", 3)
    assert set(in_a + of_ua + [in_b]) <= set(everything)
    assert len(set(everything)) == len(everything)

    error = await refused(admin, "GET", "/keys?cursor=key_nope", None, 400)
    assert error["param"] == "cursor"
    error = await refused(admin, "GET", "/keys?limit=201", None, 400)
    assert error["param"] == "limit"
    org_admin = Client(
        gw,
        (
            await admin.ok(
                "POST", "/keys", {"name": "oa", "role": "org_admin", "org_id": a["id"]}, 201
            )
        )["secret"],
    )
    assert (await org_admin.ok("GET", f"/keys?org_id={b['id']}")) == {"data": [], "next": None}
    seen = await walk(org_admin, "/keys", 50)
    assert in_b not in seen and set(live_a) <= set(seen)


async def test_org_and_user_lists_page(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    orgs = [(await admin.ok("POST", "/orgs", {"name": f"o{i}"}, 201))["id"] for i in range(3)]
    users = [
        (await admin.ok("POST", "/users", {"org_id": orgs[0], "name": f"u{i}"}, 201))["id"]
        for i in range(3)
    ]
    other = (await admin.ok("POST", "/users", {"org_id": orgs[1], "name": "x"}, 201))["id"]
    assert await walk(admin, "/orgs", 2) == orgs  # creation order
    assert await walk(admin, f"/users?org_id={orgs[0]}", 2) == users
    assert await walk(admin, "/users", 1) == [*users, other]
    for path in ("/orgs?cursor=org_nope", "/users?cursor=usr_nope"):
        error = await refused(admin, "GET", path, None, 400)
        assert error["param"] == "cursor"
    org_admin = Client(
        gw,
        (
            await admin.ok(
                "POST", "/keys", {"name": "oa", "role": "org_admin", "org_id": orgs[0]}, 201
            )
        )["secret"],
    )
    assert await walk(org_admin, "/users", 2) == users
    assert await walk(org_admin, "/orgs", 2) == [orgs[0]]
    assert (await refused(org_admin, "GET", f"/users?org_id={orgs[1]}", None, 404))["type"] == (
        "not_found"
    )


# --- org and user updates -----------------------------------------------------------------------


async def test_org_and_user_updates(
    gw: RunningGateway,  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    admin = Client(gw, await bootstrap(db_url))
    org = await admin.ok("POST", "/orgs", {"name": "O"}, 201)
    user = await admin.ok("POST", "/users", {"org_id": org["id"], "name": "u"}, 201)
    assert await admin.ok("PATCH", f"/orgs/{org['id']}", {}) == org  # nothing to change
    changed = await admin.ok(
        "PATCH",
        f"/orgs/{org['id']}",
        {"metadata": {"tier": "gold"}, "limits": {"requests": "5/minute", "concurrent_streams": 2}},
    )
    assert changed["metadata"] == {"tier": "gold"}
    assert changed["limits"]["concurrent_streams"] == 2
    # The org admin may lower but not raise past what the admin set, streams included.
    org_admin = Client(
        gw,
        (
            await admin.ok(
                "POST", "/keys", {"name": "oa", "role": "org_admin", "org_id": org["id"]}, 201
            )
        )["secret"],
    )
    for limits in ({"requests": "5/minute", "concurrent_streams": 3}, {"requests": "5/minute"}):
        error = await refused(org_admin, "PATCH", f"/orgs/{org['id']}", {"limits": limits}, 403)
        assert "concurrent_streams" in error["message"]
    lowered = {"requests": "5/minute", "concurrent_streams": 1}
    assert (await org_admin.ok("PATCH", f"/orgs/{org['id']}", {"limits": lowered}))["limits"][
        "concurrent_streams"
    ] == 1

    path = f"/users/{user['id']}"
    assert await admin.ok("PATCH", path, {}) == user
    changed = await org_admin.ok(
        "PATCH",
        path,
        {"email": "u@example.com", "metadata": {"a": 1}, "limits": {"tokens": "1000/hour"}},
    )
    assert (changed["email"], changed["metadata"]) == ("u@example.com", {"a": 1})
    assert changed["limits"]["tokens"] == "1000/hour"
    error = await refused(admin, "PATCH", path, {"limits": {"tokens": "many"}}, 400)
    assert error["param"] == "limits"
    # A user's key is refused while the user is disabled, at once on this instance.
    secret = (await admin.ok("POST", "/keys", {"name": "k", "user_id": user["id"]}, 201))["secret"]
    assert (await generate(gw, secret))[0] == 200
    assert (await org_admin.ok("PATCH", path, {"disabled": True}))["disabled"] is True
    assert (await generate(gw, secret))[0] == 403
    cleared = await org_admin.ok("PATCH", path, {"disabled": False, "email": None, "limits": None})
    assert (cleared["disabled"], cleared["email"], cleared["limits"]["tokens"]) == (
        False,
        None,
        None,
    )
    assert (await generate(gw, secret))[0] == 200

    for missing in ("/orgs/org_nope", "/users/usr_nope", "/keys/key_nope"):
        assert (await refused(admin, "PATCH", missing, {"name": "x"}, 404))["type"] == "not_found"
        assert (await refused(admin, "GET", missing, None, 404))["type"] == "not_found"
