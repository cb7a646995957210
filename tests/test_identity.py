"""Who a request is: the client IP behind proxies, JWTs from the application in front, API keys
(with their cache, revocation and route limits), and anonymous callers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenrelay.dialects import anthropic, generate, openai
from tokenrelay.gate import jwt_auth
from tokenrelay.gate.identity import (
    Authenticator,
    AuthSettings,
    Identity,
    client_ip,
    parse_networks,
    request_headers,
)
from tokenrelay.gate.jwt_auth import JWTSettings, JWTVerifier
from tokenrelay.gate.keys import KeyStore
from tokenrelay.model import GatewayError
from tokenrelay.store import Database, DatabaseError, open_database

# --- client IP -----------------------------------------------------------------------------------

PROXIES = parse_networks(["10.0.0.0/8", "192.168.1.1", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # No trusted peer: X-Forwarded-For is the client's own say, ignored.
        ("203.0.113.7", "1.2.3.4", "203.0.113.7"),
        ("203.0.113.7", None, "203.0.113.7"),
        # A trusted proxy: the right-most hop that is not a proxy.
        ("10.0.0.2", "203.0.113.7", "203.0.113.7"),
        ("10.0.0.2", "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # a spoofed left hop is ignored
        ("10.0.0.2", "6.6.6.6, 203.0.113.7, 10.1.2.3", "203.0.113.7"),  # proxy chain
        ("10.0.0.2", "6.6.6.6,203.0.113.7,192.168.1.1", "203.0.113.7"),
        ("10.0.0.2", "10.9.9.9, 10.1.1.1", "10.9.9.9"),  # every hop trusted: the left-most
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        # Garbage stops the walk at the last trusted address; it never becomes the key.
        ("10.0.0.2", "garbage", "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4, unknown", "10.0.0.2"),
        ("10.0.0.2", "203.0.113.7, 10.0.0.9, not-an-ip", "10.0.0.2"),
        ("10.0.0.2", "nonsense, 203.0.113.7", "203.0.113.7"),
        # Ports, brackets, quotes, IPv6, IPv4-mapped IPv6.
        ("10.0.0.2", "203.0.113.7:4711", "203.0.113.7"),
        ("10.0.0.2", '"[2001:db8::1]:4711"', "2001:db8::1"),
        ("10.0.0.2", "2001:DB8:0::1", "2001:db8::1"),
        ("fd00::5", "2001:db8::2", "2001:db8::2"),
        ("[fd00::5]:443", "2001:db8::2", "2001:db8::2"),
        ("::ffff:10.0.0.2", "203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.7", "1.1.1.1", "203.0.113.7"),
        ("203.0.113.7:5555", None, "203.0.113.7"),
        # No usable peer (a Unix socket): one shared key, never a forwarded value.
        (None, "1.2.3.4", "unknown"),
        ("", None, "unknown"),
        ("not an ip", "1.2.3.4", "unknown"),
    ],
)
def test_client_ip(peer: str | None, forwarded: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded, PROXIES) == expected


def test_client_ip_ignores_forwarded_for_by_default() -> None:
    assert client_ip("127.0.0.1", "1.2.3.4", ()) == "127.0.0.1"


def test_repeated_headers_are_joined_in_order() -> None:
    raw = [(b"X-Forwarded-For", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.7"), (b"A", b"b")]
    headers = request_headers(raw)
    assert headers == {"x-forwarded-for": "6.6.6.6, 203.0.113.7", "a": "b"}
    assert client_ip("10.0.0.1", headers["x-forwarded-for"], PROXIES) == "203.0.113.7"


def test_trusted_proxies_are_validated_when_settings_load() -> None:
    with pytest.raises(msgspec.ValidationError, match="not an IP address or CIDR"):
        msgspec.convert({"trusted_proxies": ["10.0.0.0/33"]}, AuthSettings)


# --- JWT -----------------------------------------------------------------------------------------

SECRET = "a-shared-secret-of-at-least-32-bytes!"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "user-1", "org": "acme", "iat": now, "exp": now + 300, **extra}


def rejection(verifier: JWTVerifier, token: str) -> str:
    with pytest.raises(GatewayError) as failure:
        verifier.verify(token)
    assert failure.value.status == 401 and failure.value.type == "authentication"
    return failure.value.message


def test_hs256(tmp_path: Path) -> None:
    verifier = JWTVerifier(JWTSettings(secret=SECRET))
    assert verifier.algorithms == ("HS256",)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verifier.subject(verifier.verify(token)) == ("user-1", "acme")


def test_rs256_with_a_pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "public.pem"
    path.write_text(_pem(rsa_key))
    verifier = JWTVerifier(JWTSettings(public_key=str(path), audience="gateway"))
    assert verifier.algorithms == ("RS256",)
    token = jwt.encode(claims(aud="gateway"), rsa_key, algorithm="RS256")
    assert verifier.subject(verifier.verify(token)) == ("user-1", "acme")


def test_es256_with_pem_text(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = JWTVerifier(JWTSettings(public_key=_pem(ec_key), issuer="https://app"))
    assert verifier.algorithms == ("ES256",)
    token = jwt.encode(claims(iss="https://app"), ec_key, algorithm="ES256")
    assert verifier.subject(verifier.verify(token)) == ("user-1", "acme")
    assert "issuer" in rejection(verifier, jwt.encode(claims(iss="evil"), ec_key, "ES256"))


def test_claims_map_to_user_and_org() -> None:
    verifier = JWTVerifier(JWTSettings(secret=SECRET, user_claim="email", org_claim="tenant"))
    token = jwt.encode(claims(email="a@b.c", tenant=42), SECRET, algorithm="HS256")
    assert verifier.subject(verifier.verify(token)) == ("a@b.c", "42")
    no_org = jwt.encode({**claims(email="a@b.c")}, SECRET, algorithm="HS256")
    assert verifier.subject(verifier.verify(no_org)) == ("a@b.c", None)
    with pytest.raises(GatewayError, match="'email' claim"):
        verifier.subject(verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256")))


def test_expired_token() -> None:
    verifier = JWTVerifier(JWTSettings(secret=SECRET, leeway=30))
    expired = jwt.encode(claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256")
    assert "expired" in rejection(verifier, expired)
    within_leeway = jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")
    assert verifier.verify(within_leeway)["sub"] == "user-1"


def test_wrong_audience() -> None:
    verifier = JWTVerifier(JWTSettings(secret=SECRET, audience="gateway"))
    message = rejection(verifier, jwt.encode(claims(aud="billing"), SECRET, algorithm="HS256"))
    assert "audience" in message and "gateway" in message
    assert "'aud'" in rejection(verifier, jwt.encode(claims(), SECRET, algorithm="HS256"))
    open_verifier = JWTVerifier(JWTSettings(secret=SECRET))
    token = jwt.encode(claims(aud="billing"), SECRET, algorithm="HS256")
    assert "expects none" in rejection(open_verifier, token)


def test_bad_signature(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JWTVerifier(JWTSettings(secret=SECRET, public_key=_pem(rsa_key)))
    forged = jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
    assert "signature" in rejection(verifier, forged)
    assert "signature" in rejection(verifier, jwt.encode(claims(), other_rsa_key, "RS256"))
    token = jwt.encode(claims(sub="mallory"), SECRET, algorithm="HS256")
    head, _, signature = token.split(".")
    tampered_body = base64.urlsafe_b64encode(json.dumps(claims(sub="admin")).encode()).rstrip(b"=")
    assert "signature" in rejection(verifier, f"{head}.{tampered_body.decode()}.{signature}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def test_algorithm_confusion_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    """An HS256 token whose "secret" is the RSA public key (which anyone may have)."""
    public_pem = _pem(rsa_key)
    forged = _hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), public_pem.encode())
    only_public = JWTVerifier(JWTSettings(public_key=public_pem))
    assert "accepts RS256" in rejection(only_public, forged)
    # Even with HS256 also accepted (a secret configured), the public key never verifies it.
    both = JWTVerifier(JWTSettings(secret=SECRET, public_key=public_pem))
    assert set(both.algorithms) == {"HS256", "RS256"}
    assert "signature" in rejection(both, forged)
    # And the public key cannot be configured as the secret.
    with pytest.raises(ValueError, match="PEM"):
        JWTSettings(secret=public_pem)


def test_alg_none_is_refused() -> None:
    verifier = JWTVerifier(JWTSettings(secret=SECRET))
    header = _b64(json.dumps({"alg": "none"}).encode())
    unsigned = f"{header}.{_b64(json.dumps(claims()).encode())}."
    assert "'none'" in rejection(verifier, unsigned)
    with pytest.raises(ValueError, match="'none' is not accepted"):
        JWTSettings(secret=SECRET, algorithms=["none"])


def test_required_claims_and_malformed_tokens() -> None:
    verifier = JWTVerifier(JWTSettings(secret=SECRET))
    no_exp = jwt.encode({"sub": "user-1"}, SECRET, algorithm="HS256")
    assert "'exp'" in rejection(verifier, no_exp)
    assert "well-formed" in rejection(verifier, "a.b.c")
    relaxed = JWTVerifier(JWTSettings(secret=SECRET, require=[]))
    assert relaxed.verify(no_exp)["sub"] == "user-1"


def test_settings_are_checked(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="needs a secret"):
        JWTSettings()
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ValueError, match="private key"):
        JWTVerifier(JWTSettings(public_key=private))
    with pytest.raises(ValueError, match="cannot read"):
        JWTVerifier(JWTSettings(public_key=str(tmp_path / "missing.pem")))
    with pytest.raises(ValueError, match="no configured key can verify"):
        JWTVerifier(JWTSettings(secret=SECRET, algorithms=["RS256"]))


class FakeTime:
    """Stands in for the ``time`` module in ``jwt_auth``: both clocks move together."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset


def test_verified_tokens_are_cached_until_their_ttl_or_exp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeTime()
    monkeypatch.setattr(jwt_auth, "time", clock)
    verifier = JWTVerifier(JWTSettings(secret=SECRET, leeway=0), cache_ttl=60)
    calls = 0
    verify = verifier.verify

    def counting(token: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return verify(token)

    verifier.verify = counting  # type: ignore[method-assign]
    short = jwt.encode(claims(exp=int(time.time()) + 10), SECRET, algorithm="HS256")
    assert verifier.authenticate(short) == ("user-1", "acme")
    assert verifier.authenticate(short) == ("user-1", "acme")
    assert calls == 1
    clock.offset = 11  # past exp, though within the cache TTL: the cache lets go of it
    verifier.authenticate(short)  # (PyJWT's own clock has not moved: it passes again)
    assert calls == 2
    bad = jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
    for _ in range(2):  # rejections are not cached
        with pytest.raises(GatewayError, match="signature"):
            verifier.authenticate(bad)
    assert calls == 4


def _jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig"}


def test_jwks_file_picks_the_key_by_kid(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(rsa_key, "one"), _jwk(ec_key, "two")]}))
    verifier = JWTVerifier(JWTSettings(jwks_file=str(path)))
    one = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "one"})
    two = jwt.encode(claims(sub="u2"), ec_key, algorithm="ES256", headers={"kid": "two"})
    assert verifier.verify(one)["sub"] == "user-1"
    assert verifier.verify(two)["sub"] == "u2"
    rotated = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": "three"})
    assert "kid 'three'" in rejection(verifier, rotated)
    # Signed by another key under a known kid: the signature fails.
    wrong = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": "one"})
    assert "signature" in rejection(verifier, wrong)

    # Rotation: the file gains key three and loses key one; the verifier picks it up.
    monkeypatch.setattr(jwt_auth, "JWKS_CHECK_INTERVAL", 0.0)
    verifier._jwks_next_check = 0.0
    path.write_text(json.dumps({"keys": [_jwk(other_rsa_key, "three")]}))
    future = time.time() + 5
    os.utime(path, (future, future))
    assert verifier.verify(rotated)["sub"] == "user-1"
    assert "kid 'one'" in rejection(verifier, one)


# --- the Authenticator ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path}/keys.db")
    try:
        yield database
    finally:
        await database.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def failure(auth: Authenticator, headers: dict[str, str], **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await identify(auth, headers, **kwargs)
    return caught.value


async def identify(
    auth: Authenticator,
    headers: dict[str, str],
    *,
    route: str = "default",
    anonymous: bool = False,
    peer: str = "203.0.113.7",
) -> Identity:
    return await auth.identify(headers, peer, route, anonymous)


async def test_keys_via_bearer_and_x_api_key(db: Database) -> None:
    store = KeyStore(db)
    key_id, secret = await store.create("alice", "acme", rpm=30)
    auth = Authenticator(AuthSettings(), store)
    expected = Identity(
        "key", "203.0.113.7", user="alice", org="acme", key_id=key_id, routes=None, rpm=30
    )
    assert await identify(auth, bearer(secret)) == expected
    assert await identify(auth, {"authorization": f"bearer   {secret} "}) == expected
    assert await identify(auth, {"x-api-key": secret}) == expected
    assert await identify(auth, {"x-api-key": secret, **bearer(secret)}) == expected
    # An SDK's placeholder in the other header does not hide the key.
    assert await identify(auth, {"x-api-key": "unused", **bearer(secret)}) == expected
    assert await identify(auth, {"x-api-key": secret, **bearer("sk-placeholder")}) == expected
    both = await failure(auth, {"x-api-key": secret, **bearer("trk_" + "x" * 40)})
    assert both.status == 401 and "send one" in both.message


async def test_unknown_and_revoked_keys_are_401_even_where_anonymous_is_allowed(
    db: Database,
) -> None:
    clock = Clock()
    here = KeyStore(db, ttl=5.0, clock=clock)
    elsewhere = KeyStore(db)  # another gateway instance, sharing the database
    key_id, secret = await elsewhere.create("alice")
    auth = Authenticator(AuthSettings(), here)
    assert (await identify(auth, bearer(secret))).key_id == key_id

    await elsewhere.revoke(key_id)
    # Cached on this instance: still accepted until the TTL runs out...
    assert (await identify(auth, bearer(secret))).key_id == key_id
    clock.now += 5.1
    # ...then refused, anonymous route or not.
    for anonymous in (False, True):
        error = await failure(auth, bearer(secret), anonymous=anonymous)
        assert error.status == 401 and error.type == "authentication"
        assert "unknown or revoked" in error.message and secret[:12] in error.message
        assert secret not in error.message
    unknown = await failure(auth, bearer("trk_" + "A" * 40), anonymous=True)
    assert unknown.status == 401


async def test_route_restriction_is_403(db: Database) -> None:
    store = KeyStore(db)
    _, secret = await store.create("alice", routes=["fast", "cheap"])
    auth = Authenticator(AuthSettings(), store)
    assert (await identify(auth, bearer(secret), route="fast")).routes == frozenset(
        {"fast", "cheap"}
    )
    error = await failure(auth, bearer(secret), route="default")
    assert error.status == 403 and error.type == "permission"
    assert "'default'" in error.message and "cheap, fast" in error.message


async def test_anonymous_callers(db: Database) -> None:
    auth = Authenticator(AuthSettings(trusted_proxies=["10.0.0.0/8"]), KeyStore(db))
    headers = {"x-forwarded-for": "6.6.6.6, 198.51.100.4"}
    anonymous = await identify(auth, headers, anonymous=True, peer="10.0.0.3")
    assert anonymous == Identity("anonymous", "198.51.100.4")
    assert anonymous.subject == "ip:198.51.100.4"
    # An SDK's placeholder key is not a credential of ours: anonymous where that is allowed.
    for junk in (bearer("unused"), {"x-api-key": "sk-ant-xyz"}, {"authorization": "Basic Zm9v"}):
        assert (await identify(auth, junk, anonymous=True)).kind == "anonymous"

    refused = await failure(auth, {})
    assert refused.status == 401 and refused.type == "authentication"
    assert "Authorization: Bearer" in refused.message and "x-api-key" in refused.message
    assert "not a tokenrelay API key" in (await failure(auth, bearer("unused"))).message
    assert "no JWTs" in (await failure(auth, bearer("a.b.c"))).message


async def test_jwt_identities() -> None:
    auth = Authenticator(AuthSettings(jwt=JWTSettings(secret=SECRET, audience="gw")))
    token = jwt.encode(claims(aud="gw"), SECRET, algorithm="HS256")
    assert await identify(auth, bearer(token)) == Identity(
        "jwt", "203.0.113.7", user="user-1", org="acme"
    )
    assert (await identify(auth, {"x-api-key": token})).user == "user-1"
    expired = jwt.encode(claims(aud="gw", exp=int(time.time()) - 600), SECRET, algorithm="HS256")
    error = await failure(auth, bearer(expired), anonymous=True)
    assert error.status == 401 and "expired" in error.message
    # JWT configured, no key store: keys are refused clearly.
    no_keys = await failure(auth, bearer("trk_" + "A" * 40))
    assert "not enabled" in no_keys.message


async def test_key_lookups_are_cached_and_shared(db: Database) -> None:
    clock = Clock()
    store = KeyStore(db, ttl=5.0, negative_ttl=1.0, clock=clock)
    _, secret = await store.create("alice")
    fetches = 0
    fetch = store._fetch

    async def counting(digest: str) -> Any:
        nonlocal fetches
        fetches += 1
        return await fetch(digest)

    store._fetch = counting  # type: ignore[method-assign]
    results = await asyncio.gather(*(store.lookup(secret) for _ in range(50)))
    assert fetches == 1 and all(result is not None for result in results)
    await store.lookup(secret)
    assert fetches == 1
    clock.now += 5.1
    await store.lookup(secret)
    assert fetches == 2

    bad = "trk_" + "B" * 40
    for _ in range(100):  # a flood of one bad key: one query per negative TTL
        assert await store.lookup(bad) is None
    assert fetches == 3
    clock.now += 1.1
    assert await store.lookup(bad) is None
    assert fetches == 4
    assert await store.lookup("sk-not-ours") is None  # not our format: no query at all
    assert fetches == 4


async def test_a_database_outage_serves_recent_keys_then_fails_clearly(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path}/keys.db")
    clock = Clock()
    store = KeyStore(db, ttl=5.0, stale_if_error=60.0, clock=clock)
    _, secret = await store.create("alice")
    auth = Authenticator(AuthSettings(), store)
    assert (await identify(auth, bearer(secret))).user == "alice"
    await db.close()
    clock.now += 30  # expired, but within stale_if_error: still served
    assert (await identify(auth, bearer(secret))).user == "alice"
    clock.now += 60
    error = await failure(auth, bearer(secret))
    assert error.status == 503 and "try again" in error.message
    with pytest.raises(DatabaseError):
        await store.lookup(secret)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            GatewayError("authentication", "no key", 401),
            ("authentication_error", "invalid_api_key"),
        ),
        (GatewayError("permission", "route", 403), ("permission_error", None)),
    ],
)
def test_errors_map_in_every_dialect(error: GatewayError, expected: tuple[str, Any]) -> None:
    anthropic_body = json.loads(anthropic.encode_error(error))
    assert anthropic_body["error"]["type"] == expected[0]
    openai_body = json.loads(openai.encode_error(error))
    assert openai_body["error"]["type"] == "invalid_request_error"
    assert openai_body["error"]["code"] == expected[1]
    assert json.loads(generate.encode_error(error))["error"]["type"] == error.type


# --- identity on the headers alone, the route's say after ----------------------------------------


async def test_the_caller_is_known_before_the_route_and_the_route_refuses_after() -> None:
    auth = Authenticator(AuthSettings())
    # No credentials, or a token that is not ours: anonymous until a route says otherwise.
    caller = await auth.identify_caller({}, "2001:db8:7:7::42")
    assert caller.kind == "anonymous" and caller.ip == "2001:db8:7:7::42"
    assert caller.subject == "ip:2001:db8:7:7::/64"
    auth.check_route(caller, {}, "open", allow_anonymous=True)
    for headers, words in [
        ({}, "needs credentials"),
        (bearer("a.b.c"), "accepts no JWTs"),
        (bearer("sk-placeholder"), "not a tokenrelay API key"),
    ]:
        anonymous = await auth.identify_caller(headers, "203.0.113.7")
        with pytest.raises(GatewayError) as refused:
            auth.check_route(anonymous, headers, "closed", allow_anonymous=False)
        assert refused.value.status == 401 and words in refused.value.message


async def test_ipv6_prefix_is_a_setting() -> None:
    per_address = Authenticator(AuthSettings(ipv6_prefix=128))
    assert (await per_address.identify_caller({}, "2001:db8::1")).subject == "ip:2001:db8::1"
    per_48 = Authenticator(AuthSettings(ipv6_prefix=48))
    assert (await per_48.identify_caller({}, "2001:db8:1:2::1")).subject == "ip:2001:db8:1::/48"
    v4 = await per_48.identify_caller({}, "203.0.113.7")
    assert v4 == Identity("anonymous", "203.0.113.7")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"ipv6_prefix": 16}, AuthSettings)
