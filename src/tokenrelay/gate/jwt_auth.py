"""JWTs minted by the application in front: its users and organizations, without a key each.

Every key is bound to the algorithm family it can verify (a shared secret to HS*, an RSA key to
RS*/PS*, an EC key to ES*, an Ed25519 key to EdDSA), and a token is checked only against keys of
its own ``alg``'s family, with ``algorithms=[alg]``. So ``alg: none`` is never accepted, and an
HS256 token can never be "verified" with an RSA public key used as the HMAC secret (the classic
algorithm confusion). PyJWT (and ``cryptography``) are imported only when JWTs are configured.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from tokenrelay.model import GatewayError

if TYPE_CHECKING:
    import jwt

log = logging.getLogger("tokenrelay.jwt")

DEFAULT_ALGORITHMS = ("HS256", "RS256", "ES256")
# algorithm -> the JWK key type that verifies it
FAMILIES: dict[str, str] = {
    **{f"HS{bits}": "oct" for bits in (256, 384, 512)},
    **{f"RS{bits}": "RSA" for bits in (256, 384, 512)},
    **{f"PS{bits}": "RSA" for bits in (256, 384, 512)},
    **{f"ES{bits}": "EC" for bits in (256, 384, 512)},
    "EdDSA": "OKP",
}
JWKS_CHECK_INTERVAL = 5.0  # seconds between checks of the JWKS file for a rotation


class JWTSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to verify tokens: at least one of ``secret``, ``public_key`` and ``jwks_file``."""

    secret: str | None = None  # HS*: the secret shared with the application
    public_key: str | None = None  # RS*/PS*/ES*/EdDSA: PEM text or a path to a PEM file
    jwks_file: str | None = None  # a JWKS document on disk; the token's ``kid`` picks the key
    algorithms: list[str] | None = None  # None: HS256, RS256, ES256, those a key can verify
    audience: str | list[str] | None = None  # ``aud`` must name it (one of them)
    issuer: str | None = None  # ``iss`` must equal it
    user_claim: str = "sub"
    org_claim: str = "org"
    leeway: float = 30.0  # seconds of clock skew allowed on exp, nbf and iat
    require: list[str] = msgspec.field(default_factory=lambda: ["exp"])  # claims that must exist

    def __post_init__(self) -> None:
        if not (self.secret or self.public_key or self.jwks_file):
            raise ValueError("jwt needs a secret, a public_key or a jwks_file")
        if self.secret and "-----BEGIN" in self.secret:
            raise ValueError("jwt.secret holds a PEM key; put public keys in jwt.public_key")
        for algorithm in self.algorithms or ():
            if algorithm not in FAMILIES:
                known = ", ".join(FAMILIES)
                raise ValueError(f"jwt.algorithms: {algorithm!r} is not accepted; use {known}")


class _Key(NamedTuple):
    family: str  # a FAMILIES value
    key: Any  # bytes (a secret) or a cryptography public key
    kid: str | None = None
    alg: str | None = None  # a JWK's own ``alg``: the only algorithm it may verify


def _rejected(reason: str) -> GatewayError:
    return GatewayError("authentication", f"JWT rejected: {reason}", 401)


def _load_public_key(value: str) -> _Key:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    try:
        pem = value if "-----BEGIN" in value else Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"jwt.public_key: cannot read {value}: {exc.strerror}") from None
    if "PRIVATE KEY" in pem:
        raise ValueError("jwt.public_key holds a private key: give the gateway the public key")
    try:
        if "CERTIFICATE" in pem:
            key: Any = x509.load_pem_x509_certificate(pem.encode()).public_key()
        else:
            key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError(f"jwt.public_key is not a PEM public key or certificate: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return _Key("RSA", key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _Key("EC", key)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _Key("OKP", key)
    raise ValueError(f"jwt.public_key: unsupported key type {type(key).__name__}")


def _load_jwks(path: str) -> list[_Key]:
    import jwt

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"jwt.jwks_file: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"jwt.jwks_file {path} is not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'jwt.jwks_file {path} has no "keys" list')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("jwt.jwks_file %s: skipping key %s: %s", path, entry.get("kid"), exc)
            continue
        keys.append(_Key(str(entry["kty"]), jwk.key, entry.get("kid"), entry.get("alg")))
    if not keys:
        raise ValueError(f"jwt.jwks_file {path} holds no usable signing key")
    return keys


class JWTVerifier:
    """Verifies tokens against the configured keys; builds fail fast, naming the bad setting.

    ``authenticate`` remembers a verified token for ``cache_ttl`` seconds (never past its
    ``exp``): an application sends the same token with many requests, and PyJWT takes about
    100 µs to check one, a cache hit under 1 µs. Rejections are not cached."""

    def __init__(
        self, settings: JWTSettings, *, cache_ttl: float = 5.0, max_entries: int = 4096
    ) -> None:
        import jwt

        self._jwt = jwt
        self.settings = settings
        self.cache_ttl = cache_ttl
        self.max_entries = max_entries
        self._verified: dict[str, tuple[float, tuple[str, str | None]]] = {}
        self._static: list[_Key] = []
        if settings.secret:
            if len(settings.secret.encode()) < 32:
                log.warning("jwt.secret is shorter than 32 bytes; HS256 wants at least 256 bits")
            self._static.append(_Key("oct", settings.secret.encode()))
        if settings.public_key:
            self._static.append(_load_public_key(settings.public_key))
        self._jwks: list[_Key] = []
        self._jwks_mtime: int | None = None
        self._jwks_next_check = 0.0
        if settings.jwks_file:
            self._reload_jwks(time.monotonic(), required=True)
        wanted = settings.algorithms or DEFAULT_ALGORITHMS
        # A JWKS file may gain keys of any family when it is rotated.
        families = {key.family for key in self._static}
        if settings.jwks_file:
            families |= set(FAMILIES.values())
        self.algorithms = tuple(alg for alg in wanted if FAMILIES[alg] in families)
        if not self.algorithms:
            have = ", ".join(sorted(families))
            raise ValueError(
                f"jwt: no configured key can verify {', '.join(wanted)} (keys: {have}); "
                "set jwt.secret for HS*, or jwt.public_key / jwt.jwks_file for RS*, ES*"
            )

    def _reload_jwks(self, now: float, *, required: bool = False) -> None:
        path = self.settings.jwks_file
        assert path is not None
        self._jwks_next_check = now + JWKS_CHECK_INTERVAL
        try:
            mtime = os.stat(path).st_mtime_ns
            if mtime == self._jwks_mtime:
                return
            self._jwks = _load_jwks(path)
            self._jwks_mtime = mtime
        except (OSError, ValueError) as exc:
            if required:
                raise ValueError(str(exc)) from None
            log.warning("jwt.jwks_file %s: keeping the keys loaded before: %s", path, exc)

    def _candidates(self, alg: str, kid: Any) -> list[_Key]:
        family = FAMILIES[alg]
        keys = [
            key
            for key in (*self._static, *self._jwks)
            if key.family == family and key.alg in (None, alg)
        ]
        if kid is None:
            return keys
        return [key for key in keys if key.kid == kid] or [key for key in keys if key.kid is None]

    def authenticate(self, token: str) -> tuple[str, str | None]:
        """``(user, org)`` of a valid token, or a 401 ``GatewayError`` saying what is wrong."""
        now = time.monotonic()
        hit = self._verified.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        claims = self.verify(token)
        subject = self.subject(claims)
        until = now + self.cache_ttl
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            until = min(until, now + exp + self.settings.leeway - time.time())
        cache = self._verified
        cache.pop(token, None)
        while len(cache) >= self.max_entries:
            del cache[next(iter(cache))]  # the oldest first
        cache[token] = (until, subject)
        return subject

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or a 401 ``GatewayError`` saying what is wrong with it."""
        jwt = self._jwt
        if self.settings.jwks_file and time.monotonic() >= self._jwks_next_check:
            self._reload_jwks(time.monotonic())
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _rejected(f"not a well-formed token ({exc})") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            accepted = ", ".join(self.algorithms)
            raise _rejected(f"it is signed with {alg!r}; this gateway accepts {accepted}")
        kid = header.get("kid")
        keys = self._candidates(alg, kid)
        if not keys:
            which = f"with kid {kid!r} " if kid is not None else ""
            raise _rejected(f"no configured key {which}verifies {alg}")
        settings = self.settings
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=settings.audience,
                    issuer=settings.issuer,
                    leeway=settings.leeway,
                    options={"require": settings.require},
                )
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
                continue  # the next key of the family may be the signer (rotation)
            except jwt.PyJWTError as exc:
                raise self._explain(exc) from None
            return claims
        raise _rejected("its signature does not verify")

    def _explain(self, exc: jwt.PyJWTError) -> GatewayError:
        jwt = self._jwt
        settings = self.settings
        if isinstance(exc, jwt.ExpiredSignatureError):
            return _rejected("it has expired (exp); get a fresh token")
        if isinstance(exc, jwt.ImmatureSignatureError):
            return _rejected("it is not valid yet (nbf or iat is in the future)")
        if isinstance(exc, jwt.InvalidAudienceError):
            if settings.audience is None:
                return _rejected("it names an audience (aud) and this gateway expects none")
            return _rejected(f"its audience (aud) is not {settings.audience!r}")
        if isinstance(exc, jwt.InvalidIssuerError):
            return _rejected(f"its issuer (iss) is not {settings.issuer!r}")
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return _rejected(f"it has no {exc.claim!r} claim")
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return _rejected(f"its algorithm is not accepted ({exc})")
        if isinstance(exc, jwt.DecodeError):
            return _rejected(f"not a well-formed token ({exc})")
        return _rejected(str(exc) or type(exc).__name__)

    def subject(self, claims: dict[str, Any]) -> tuple[str, str | None]:
        """``(user, org)`` from the configured claims; a token without a user is refused."""
        user = claims.get(self.settings.user_claim)
        if not isinstance(user, str | int) or isinstance(user, bool) or user == "":
            raise _rejected(f"it has no {self.settings.user_claim!r} claim naming the user")
        org = claims.get(self.settings.org_claim)
        if org is not None and (not isinstance(org, str | int) or isinstance(org, bool)):
            raise _rejected(f"its {self.settings.org_claim!r} claim is not a string")
        return str(user), (str(org) if org is not None and org != "" else None)
