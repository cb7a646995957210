"""One credential parser: the usage endpoints read ``Authorization: Bearer`` and ``x-api-key``
as the relay does (``gate.identity.credential``), so a request carrying two different keys is
refused alike everywhere, and an SDK's placeholder beside a key is ignored alike everywhere.
Real HTTP against a gateway over the simulator, with an admin key and a plain one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.gate.keys import KeyStore
from tokenrelay.store import open_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

TWO_TOKENS = "the request carries different tokens in Authorization and x-api-key; send one"
ADMIN_PATHS = ("/v1/usage?since=1d", "/v1/usage/dashboard?since=1d")
PROMPT = [{"role": "user", "content": "hi"}]
RELAYS: dict[str, dict[str, Any]] = {
    "/v1/messages": {"model": "an", "max_tokens": 20, "messages": PROMPT},
    "/v1/chat/completions": {"model": "oa", "messages": PROMPT},
}


class Keyed:
    def __init__(self, gw: RunningGateway, admin: str, plain: str) -> None:
        self.gw, self.admin, self.plain = gw, admin, plain


@pytest_asyncio.fixture(loop_scope="session")
async def keyed(simulator: Any, tmp_path: Path) -> AsyncIterator[Keyed]:
    url = f"sqlite:///{tmp_path}/keys.db"
    async with await open_database(url) as db:
        store = KeyStore(db)
        _, admin = await store.create("ops", "acme", admin=True)
        _, plain = await store.create("alice", "acme")
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": url}
    async with gateway_server(env) as gw:
        yield Keyed(gw, admin, plain)


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _message(body: bytes) -> str:
    """The error message, in the Anthropic, OpenAI or usage endpoints' shape alike."""
    message: str = json.loads(body)["error"]["message"]
    return message


async def admin_get(
    http: aiohttp.ClientSession, gw: RunningGateway, path: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    async with http.get(gw.url + path, headers=headers) as response:
        return response.status, await response.read()


async def relay(
    http: aiohttp.ClientSession, gw: RunningGateway, path: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    sent = {"anthropic-version": "2023-06-01", **headers}
    async with http.post(gw.url + path, json=RELAYS[path], headers=sent) as response:
        return response.status, await response.read()


async def test_two_different_keys_are_refused_alike(
    keyed: Keyed, http: aiohttp.ClientSession
) -> None:
    """The admin key in one header and another key in the other: the relay refuses to guess,
    and so do the usage endpoints (they used to take the Bearer one, an admin's)."""
    for bearer, api_key in ((keyed.admin, keyed.plain), (keyed.plain, keyed.admin)):
        headers = {"authorization": f"Bearer {bearer}", "x-api-key": api_key}
        for path in ADMIN_PATHS:
            status, body = await admin_get(http, keyed.gw, path, headers)
            assert (status, _message(body)) == (401, TWO_TOKENS), (path, body)
            assert json.loads(body)["error"]["type"] == "authentication"
        for path in RELAYS:
            status, body = await relay(http, keyed.gw, path, headers)
            assert (status, _message(body)) == (401, TWO_TOKENS), (path, body)


async def test_a_placeholder_beside_a_key_is_ignored_alike(
    keyed: Keyed, http: aiohttp.ClientSession
) -> None:
    """A token that is not ours (``api_key="unused"``) beside a key of ours: the key counts,
    in either header, on the relay and on the usage endpoints."""
    for key, admin_status in ((keyed.admin, 200), (keyed.plain, 403)):
        for headers in (
            {"authorization": "Bearer unused", "x-api-key": key},
            {"authorization": f"Bearer {key}", "x-api-key": "unused"},
            {"authorization": f"Bearer {key}", "x-api-key": key},  # the same key twice
        ):
            for path in ADMIN_PATHS:
                status, body = await admin_get(http, keyed.gw, path, headers)
                assert status == admin_status, (path, headers, body)
            for path in RELAYS:
                status, body = await relay(http, keyed.gw, path, headers)
                assert status == 200, (path, headers, body)
