"""Vertex AI's service-account tokens: minted by google-auth against a loopback OAuth token
endpoint (the key file's ``token_uri``) from a locally generated RSA key, refreshed before they
expire, one refresh at a time, without a request waiting or failing; and the configuration a
vertex provider refuses at start-up, naming the setting."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.servers import gateway_environ, gateway_server
from tests.test_vertex import MODEL, PATH
from tokenrelay.settings import ConfigError, load
from tokenrelay.simulator import RunningSimulator

GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"


class TokenEndpoint:
    """OAuth's JWT-bearer grant, as Google's token endpoint answers it: checks the assertion's
    signature against the service account's public key, issues ``sim-expires-<t>`` tokens the
    simulator refuses from ``t`` on."""

    def __init__(self, public_key: Any, lifetime: float, delay: float = 0.0) -> None:
        self.public_key = public_key
        self.lifetime = lifetime
        self.delay = delay  # for every token after the first
        self.refuse = False
        self.issued: list[tuple[float, float]] = []  # (issued at, expires at)
        self.in_flight = 0
        self.most_in_flight = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def token(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            form = urllib.parse.parse_qs((await request.read()).decode())
            assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            claims = jwt.decode(  # google-auth names Google's endpoint, whatever token_uri says
                form["assertion"][0], self.public_key, algorithms=["RS256"], audience=GOOGLE_TOKEN
            )
            assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
            if self.refuse:
                body: dict[str, Any] = {"error": "invalid_grant", "error_description": "Bad JWT"}
                return web.json_response(body, status=400)
            if self.issued and self.delay:
                await asyncio.sleep(self.delay)
            now = time.time()
            expires = now + self.lifetime
            self.issued.append((now, expires))
            body = {
                "access_token": f"sim-expires-{expires:.3f}",
                "expires_in": self.lifetime,
                "token_type": "Bearer",
            }
            return web.json_response(body)
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/token"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_file(tmp: Path, key: rsa.RSAPrivateKey, token_uri: str) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "relay@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = tmp / "service-account.json"
    path.write_text(json.dumps(info))
    return str(path)


@pytest_asyncio.fixture(loop_scope="session")
async def endpoint(
    request: pytest.FixtureRequest, key: rsa.RSAPrivateKey
) -> AsyncIterator[TokenEndpoint]:
    lifetime, delay = getattr(request, "param", (2.0, 0.0))
    running = TokenEndpoint(key.public_key(), lifetime, delay)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def vertex_environ(sim_url: str, credentials: str, **extra: str) -> dict[str, str]:
    vertex = "TOKENRELAY_PROVIDERS__VERTEX__"
    return {
        **gateway_environ(sim_url),
        vertex + "KIND": "vertex",
        vertex + "BASE_URL": sim_url + "/v1",
        vertex + "PROJECT": "test-project",
        vertex + "REGION": "us-east5",
        vertex + "CREDENTIALS_FILE": credentials,
        "TOKENRELAY_ROUTES__VX__TARGETS": f"vertex:{MODEL}",
        "TOKENRELAY_ROUTES__VXOA__TARGETS": f"vertex:{MODEL},openai:gpt-5.5",
        **extra,
    }


async def ask(http: aiohttp.ClientSession, url: str, route: str = "vx") -> tuple[int, Any, float]:
    body = {"model": route, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    async with http.post(url + "/v1/messages", json=body, headers={"x-sim-tokens": "3"}) as r:
        answer = await r.json()
        return r.status, answer, time.monotonic() - started


async def test_an_expiring_token_is_refreshed_before_it_expires_without_a_failed_request(
    simulator: RunningSimulator, endpoint: TokenEndpoint, key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """Tokens live 2 s; three clients ask without pause for 5 s, across two expiries."""
    environ = vertex_environ(simulator.url, key_file(tmp_path, key, endpoint.url))
    simulator.reset_stats()
    failures: list[Any] = []
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:

        async def client() -> int:
            asked = 0
            until = time.monotonic() + 5
            while time.monotonic() < until:
                status, answer, _ = await ask(http, gw.url)
                asked += 1
                if status != 200:
                    failures.append(answer)
                await asyncio.sleep(0.02)
            return asked

        asked = sum(await asyncio.gather(client(), client(), client()))
    assert not failures, failures[:3]
    assert asked > 30
    assert simulator.stats()["requests"][PATH + ":streamRawPredict"] == asked
    # a token of 2 s over 5 s: at least two more, each fetched while the last was still good
    assert len(endpoint.issued) >= 3, endpoint.issued
    for (_, expired), (fetched, _) in zip(endpoint.issued, endpoint.issued[1:], strict=False):
        assert fetched < expired, "a token was fetched only after the last one had expired"
    assert endpoint.most_in_flight == 1  # never two refreshes at once, with three clients


@pytest.mark.parametrize("endpoint", [(3.0, 0.8)], indirect=True)
async def test_a_request_does_not_wait_for_a_refresh_while_its_token_is_good(
    simulator: RunningSimulator, endpoint: TokenEndpoint, key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """The token endpoint takes 0.8 s for a refresh (started with 1.5 s of the 3 s left);
    requests meanwhile are served at once with the token in hand."""
    environ = vertex_environ(simulator.url, key_file(tmp_path, key, endpoint.url))
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:
        status, _, _ = await ask(http, gw.url)  # the first token (no token yet: it waits)
        assert status == 200
        await asyncio.sleep(1.6)  # into the last half of the token's life
        slowest = 0.0
        until = time.monotonic() + 1.0  # the refresh (0.8 s) runs during this second
        while time.monotonic() < until:
            status, answer, took = await ask(http, gw.url)
            assert status == 200, answer
            slowest = max(slowest, took)
            await asyncio.sleep(0.02)
        assert len(endpoint.issued) == 2  # the refresh happened, in the background
    assert slowest < 0.6, f"a request waited {slowest:.2f}s (the refresh takes 0.8 s)"


async def test_first_requests_at_once_fetch_one_token(
    simulator: RunningSimulator, endpoint: TokenEndpoint, key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    environ = vertex_environ(simulator.url, key_file(tmp_path, key, endpoint.url))
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(ask(http, gw.url) for _ in range(8)))
    assert [status for status, _, _ in answers] == [200] * 8
    assert len(endpoint.issued) == 1 and endpoint.most_in_flight == 1


async def test_a_refused_service_account_fails_over_and_says_so_without_a_500(
    simulator: RunningSimulator, endpoint: TokenEndpoint, key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    endpoint.refuse = True
    environ = vertex_environ(simulator.url, key_file(tmp_path, key, endpoint.url))
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:
        status, answer, _ = await ask(http, gw.url, "vxoa")  # the next target serves it
        assert status == 200 and answer["type"] == "message"
        status, answer, _ = await ask(http, gw.url, "vx")  # the only target: an error
    assert status == 502 and answer["type"] == "error"
    assert "access token" in answer["error"]["message"]
    assert "invalid_grant" in answer["error"]["message"]


# --- configuration refused at start-up -------------------------------------------------------


@pytest.fixture
def sa_file(tmp_path: Path, key: rsa.RSAPrivateKey) -> Iterator[str]:
    yield key_file(tmp_path, key, "http://127.0.0.1:9/token")


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        load(environ=environ)
    return str(raised.value)


def base(sa: str, **changes: str | None) -> dict[str, str]:
    environ = vertex_environ("http://127.0.0.1:9", sa)
    for name, value in changes.items():
        key = f"TOKENRELAY_PROVIDERS__VERTEX__{name.upper()}"
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


def test_a_good_configuration_loads(sa_file: str) -> None:
    settings = load(environ=base(sa_file))
    assert settings.providers["vertex"].region == "us-east5"


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"project": None}, 'needs project = "<your Google Cloud project id>"'),
        ({"project": "Not A Project"}, "project = 'Not A Project' is not a Google Cloud project"),
        ({"region": None}, "needs region"),
        ({"region": "us_east5"}, "region = 'us_east5' is not a Vertex AI region"),
        ({"region": "mars"}, "region = 'mars' is not a Vertex AI region"),
        ({"publisher": "meta"}, 'publisher = \'meta\': use "anthropic" or "google"'),
        ({"credentials_file": None}, "needs credentials: credentials_file ="),
        ({"credentials_file": "/nonexistent/sa.json"}, "'/nonexistent/sa.json' cannot be read"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    sa_file: str, changes: dict[str, str | None], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    assert says in refusal(base(sa_file, **changes))


def test_a_key_file_that_is_not_a_service_accounts_is_refused(tmp_path: Path) -> None:
    not_json = tmp_path / "a.json"
    not_json.write_text("{nope")
    assert "is not JSON" in refusal(base(str(not_json)))
    user = tmp_path / "b.json"
    user.write_text(json.dumps({"type": "authorized_user", "client_id": "x"}))
    assert "is not a service account key" in refusal(base(str(user)))
    partial = tmp_path / "c.json"
    partial.write_text(json.dumps({"type": "service_account", "client_email": "a@b"}))
    assert "lacks private_key, token_uri" in refusal(base(str(partial)))


def test_google_application_credentials_is_read_when_no_file_is_named(
    sa_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", sa_file)
    load(environ=base(sa_file, credentials_file=None))


def test_an_access_token_needs_no_key_file(sa_file: str) -> None:
    load(environ=base(sa_file, credentials_file=None, api_key="ya29.token"))


def test_a_model_whose_publisher_cannot_be_told_is_refused(sa_file: str) -> None:
    environ = base(sa_file)
    environ["TOKENRELAY_ROUTES__VX__TARGETS"] = "vertex:llama-4-maverick"
    says = refusal(environ)
    assert "route 'vx', provider 'vertex'" in says and "publisher" in says
    environ["TOKENRELAY_PROVIDERS__VERTEX__PUBLISHER"] = "anthropic"  # the operator says it
    load(environ=environ)


def test_the_global_region_and_multi_regions_have_their_own_hosts() -> None:
    from tokenrelay.transports import vertex

    assert vertex.host("global") == "https://aiplatform.googleapis.com/v1"
    assert vertex.host("us-east5") == "https://us-east5-aiplatform.googleapis.com/v1"
    assert vertex.host("eu") == "https://aiplatform.eu.rep.googleapis.com/v1"
