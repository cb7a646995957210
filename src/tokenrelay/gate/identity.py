"""Who is asking: an API key, a JWT from the application in front, or an anonymous client IP.

Credentials arrive as ``Authorization: Bearer <token>`` (the OpenAI SDK) or ``x-api-key``
(the Anthropic SDK). A token with two dots is a JWT when JWTs are configured; one starting
``trk_`` is one of our keys. Any other token (the ``api_key="unused"`` an SDK insists on) is
ignored on a route open to anonymous callers, so SDKs work unchanged; a bad key or JWT of ours is
always a 401, so a typo is not silently served as anonymous.

An anonymous caller is its IP, and for IPv6 its network (``auth.ipv6_prefix``, a /64 by default):
one subscriber or host usually holds a whole /64, so a limit per /128 would be no limit at all.
``X-Forwarded-For`` counts only when the peer is a configured
proxy, and then the client is the right-most hop that is not a proxy: the hops to its left are
whatever the client chose to send (the article's ``split(',')[0]`` lets anyone pick their own
rate-limit key).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec

from tokenrelay.gate.jwt_auth import JWTSettings, JWTVerifier
from tokenrelay.gate.keys import KEY_PREFIX, PREFIX_LENGTH, KeyRecord, KeyStore
from tokenrelay.gate.policy import NO_POLICY, KeyPolicy
from tokenrelay.model import GatewayError

log = logging.getLogger("tokenrelay.identity")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN_IP = "unknown"  # no usable peer address (a Unix socket): such callers share one key


class AuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Identity settings. The database the keys live in is the top-level ``database_url``,
    shared with the ledger (``tokenrelay.store.DEFAULT_DATABASE_URL``)."""

    trusted_proxies: list[str] = msgspec.field(default_factory=list)  # CIDRs or addresses
    jwt: JWTSettings | None = None
    allow_anonymous: bool = True  # the default of routes that do not say
    # Seconds a key lookup (or a verified JWT) is reused: a revocation reaches every instance
    # within this time. An unknown key is remembered as unknown for key_negative_ttl.
    key_cache_ttl: float = 5.0
    key_negative_ttl: float = 1.0
    # Seconds after a key was last confirmed valid during which it is still accepted while the
    # database cannot be reached (callers keep service through a database outage); 0: never.
    key_stale_ttl: float = 300.0
    # Seconds between writes of when keys were last used (one UPDATE per batch, never one per
    # request; a crash loses at most this much); 0: not recorded.
    key_last_used_interval: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    # Anonymous IPv6 callers share their limits per network of this prefix length (a /64 is
    # what one subscriber, host or VM usually gets); 128: per address.
    ipv6_prefix: Annotated[int, msgspec.Meta(ge=32, le=128)] = 64

    def __post_init__(self) -> None:
        parse_networks(self.trusted_proxies)
        if self.key_cache_ttl < 0 or self.key_negative_ttl < 0 or self.key_stale_ttl < 0:
            raise ValueError("key cache TTLs cannot be negative")


class Identity(msgspec.Struct, frozen=True):
    """The caller of one request, as the rate limits, budgets and the ledger see it (a frozen
    msgspec Struct: one is built per request, several times faster than a frozen dataclass)."""

    kind: Literal["anonymous", "key", "jwt"]
    ip: str
    user: str | None = None
    org: str | None = None
    key_id: str | None = None
    routes: frozenset[str] | None = None  # None: every route
    rpm: int | None = None  # the key's own requests-per-minute limit
    # An anonymous IPv6 caller's network (``2001:db8:1:2::/64``), counted instead of its
    # address; None for IPv4 and for identified callers.
    network: str | None = None
    # A key's models and its own, its user's and its org's limits (``gate.policy``): shared
    # with the cached key record, never built per request.
    policy: KeyPolicy | None = None

    @property
    def subject(self) -> str:
        """The one string a per-caller limit counts under."""
        if self.kind == "key":
            return f"key:{self.key_id}"
        if self.kind == "jwt":
            return f"user:{self.user}"
        return f"ip:{self.network or self.ip}"


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` as networks; a bare address is a /32 (or /128)."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted_proxies: {value!r} is not an IP address or CIDR (10.0.0.0/8, ::1)"
            ) from None
    return tuple(networks)


@functools.lru_cache(maxsize=4096)  # callers repeat; a parse costs 3 µs
def parse_ip(value: str | None) -> IPAddress | None:
    """An address from a peer or a forwarded hop: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``,
    ``[::1]:443``, quoted; an IPv4-mapped IPv6 address as IPv4. ``None`` for anything else."""
    if not value:
        return None
    text = value.strip().strip('"')
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _canonical(peer: str | None) -> str:
    address = parse_ip(peer)
    return str(address) if address is not None else UNKNOWN_IP


@functools.lru_cache(maxsize=4096)
def ip_network_of(ip: str, ipv6_prefix: int) -> str | None:
    """The network an anonymous IPv6 ``ip`` is limited as (``2001:db8:1:2::/64``); None for
    IPv4, for a prefix of 128, and for anything that is not an address."""
    if ipv6_prefix >= 128 or ":" not in ip:
        return None
    try:
        network = ipaddress.IPv6Network(f"{ip}/{ipv6_prefix}", strict=False)
    except ValueError:
        return None
    return str(network)


def _trusted(address: IPAddress, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The caller's address. ``forwarded_for`` (every ``X-Forwarded-For`` header, comma-joined
    in order) is read only when ``peer`` is a trusted proxy; then hops are walked right to left,
    past trusted proxies, and the first other hop is the client. A hop that is not an address
    stops the walk at the last trusted one: garbage is never a rate-limit key."""
    if not trusted or not forwarded_for:
        return _canonical(peer)
    address = parse_ip(peer)
    if address is None or not _trusted(address, trusted):
        return _canonical(peer)
    for hop in reversed(forwarded_for.split(",")):
        hop_address = parse_ip(hop)
        if hop_address is None:
            break
        address = hop_address
        if not _trusted(address, trusted):
            break
    return str(address)  # every hop trusted: the left-most is the client


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI ``scope["headers"]`` as a lower-case dict, repeated headers comma-joined in order
    (a proxy may add its own ``X-Forwarded-For`` line rather than extend the client's)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _unauthorized(message: str) -> GatewayError:
    return GatewayError("authentication", message, 401)


def credential(headers: Mapping[str, str], *, jwt: bool = False) -> str | None:
    """The token a request carries, from ``Authorization: Bearer`` or ``x-api-key`` (or
    ``x-goog-api-key``; lower-case
    header names): the one parser of credentials, for the relay and the admin endpoints alike.
    When the headers carry two different tokens, ours wins (a key, or a JWT when ``jwt``: an
    SDK's placeholder beside it is ignored); two of ours are a 401 rather than a guess."""
    bearer = None
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            bearer = value.strip()
    # x-goog-api-key: the Gemini SDKs' header (the Gemini front, tokenrelay.gemini_front)
    api_key = (headers.get("x-api-key") or headers.get("x-goog-api-key") or "").strip() or None
    if bearer is None or api_key is None or bearer == api_key:
        return bearer or api_key
    ours = [token for token in (bearer, api_key) if _ours(token, jwt)]
    if len(ours) > 1:
        raise _unauthorized(
            "the request carries different tokens in Authorization and x-api-key; send one"
        )
    return ours[0] if ours else bearer


def _ours(token: str, jwt: bool) -> bool:
    return token.startswith(KEY_PREFIX) or (jwt and token.count(".") == 2)


class Authenticator:
    """Turns a request's headers and peer into an ``Identity``, or a 401 / 403 that says what
    to send. ``keys`` ``None`` means API keys are off (no database)."""

    def __init__(self, settings: AuthSettings, keys: KeyStore | None = None) -> None:
        self.settings = settings
        self.keys = keys
        # How to get the key store while it is not open yet (the gate opens the database
        # lazily, off the start-up path).
        self.open_keys: Callable[[], Awaitable[KeyStore]] | None = None
        self._trusted = parse_networks(settings.trusted_proxies)
        self._jwt = (
            JWTVerifier(settings.jwt, cache_ttl=settings.key_cache_ttl)
            if settings.jwt is not None
            else None
        )

    def _what_to_send(self) -> str:
        jwt = " or a JWT from your application" if self._jwt is not None else ""
        return (
            f"send an API key{jwt} as 'Authorization: Bearer <token>' or 'x-api-key: <token>' "
            f"(tokenrelay keys start with {KEY_PREFIX!r}; create one with 'tokenrelay keys create')"
        )

    async def identify(
        self,
        headers: Mapping[str, str],
        peer: str | None,
        route: str,
        allow_anonymous: bool,
    ) -> Identity:
        """``identify_caller`` then ``check_route``: the caller of a request on ``route``."""
        identity = await self.identify_caller(headers, peer)
        self.check_route(identity, headers, route, allow_anonymous)
        return identity

    async def identify_caller(self, headers: Mapping[str, str], peer: str | None) -> Identity:
        """Who is asking, from the headers alone (before any body is read, so that the caller's
        limits count every request): a key or JWT of ours is checked now, a 401 when bad;
        anything else is anonymous, and whether the route takes anonymous callers is
        ``check_route``'s to say. ``headers`` have lower-case names (``request_headers``)."""
        forwarded = headers.get("x-forwarded-for") if self._trusted else None
        ip = client_ip(peer, forwarded, self._trusted)
        token = self._credential(headers)
        if token is not None and self._jwt is not None and token.count(".") == 2:
            user, org = self._jwt.authenticate(token)
            await self.refuse_disabled(user, org)
            return Identity("jwt", ip, user=user, org=org)
        if token is not None and token.startswith(KEY_PREFIX):
            return await self._key_identity(token, ip)
        return self._anonymous(ip)

    def anonymous(self, headers: Mapping[str, str], peer: str | None) -> Identity:
        """The request's caller as an anonymous one (its address), whatever it sent: how a
        caller whose credentials were refused is counted and recorded."""
        forwarded = headers.get("x-forwarded-for") if self._trusted else None
        return self._anonymous(client_ip(peer, forwarded, self._trusted))

    def _anonymous(self, ip: str) -> Identity:
        return Identity("anonymous", ip, network=ip_network_of(ip, self.settings.ipv6_prefix))

    def check_route(
        self, identity: Identity, headers: Mapping[str, str], route: str, allow_anonymous: bool
    ) -> None:
        """Refuse ``identity`` on ``route``: a 401 for an anonymous caller where the route needs
        credentials (saying what to send), a 403 for a key that may not use it."""
        if identity.kind == "key":
            if identity.routes is not None and route not in identity.routes:
                allowed = ", ".join(sorted(identity.routes)) or "none"
                token = self._credential(headers) or ""
                raise GatewayError(
                    "permission",
                    f"API key {token[:PREFIX_LENGTH]}… may not use route {route!r} "
                    f"(allowed: {allowed})",
                    403,
                )
            return
        if identity.kind != "anonymous" or allow_anonymous:
            return
        credential = self._credential(headers)
        if credential is None:
            raise _unauthorized(f"route {route!r} needs credentials: {self._what_to_send()}")
        if credential.count(".") == 2:
            raise _unauthorized(f"this gateway accepts no JWTs; {self._what_to_send()}")
        raise _unauthorized(f"the token is not a tokenrelay API key; {self._what_to_send()}")

    def jwt_claims(self, token: str) -> tuple[dict[str, Any], str, str | None] | None:
        """A JWT's claims with its ``(user, org)`` when JWTs are configured (a 401 when it is
        not valid); ``None`` for anything that is not a JWT here. For the admin API's roles."""
        if self._jwt is None or token.count(".") != 2:
            return None
        claims = self._jwt.verify(token)
        user, org = self._jwt.subject(claims)
        return claims, user, org

    async def refuse_disabled(self, user: str | None, org: str | None) -> None:
        """A 403 when the org or user a JWT names (or the user's org) is disabled through the
        admin API, as for a key (``gate.tenants``: cached for ``key_cache_ttl``). Without a
        database, or while it cannot be opened, nothing is disabled."""
        keys = self.keys
        if keys is None:
            if self.open_keys is None:
                return
            try:
                keys = await self._key_store()
            except GatewayError:
                return
        which = await keys.tenants.disabled(user, org)
        if which is not None:
            whose = "organization" if which == "org" else "user"
            raise GatewayError(
                "permission",
                f"the {whose} of this token is disabled; ask your administrator to enable it",
                403,
            )

    async def key_store(self) -> KeyStore:
        """The key store the gate checks keys with (opened now if need be)."""
        return await self._key_store()

    def _credential(self, headers: Mapping[str, str]) -> str | None:
        return credential(headers, jwt=self._jwt is not None)

    async def _key_store(self) -> KeyStore:
        """The key store; while the database is still opening (off the start-up path) the
        first requests with a key wait for it, briefly."""
        if self.keys is not None:
            return self.keys
        if self.open_keys is None:
            raise _unauthorized("API keys are not enabled on this gateway (no database)")
        try:
            async with asyncio.timeout(5):
                keys = await self.open_keys()
        except Exception:
            raise GatewayError(
                "api_error", "cannot check the API key right now; try again shortly", 503
            ) from None
        # The gate builds the store with the cache TTLs; how long a key outlives an outage of
        # the database is an identity setting too, and is applied here.
        keys.stale_if_error = self.settings.key_stale_ttl
        self.keys = keys
        return keys

    async def _key_identity(self, token: str, ip: str) -> Identity:
        keys = await self._key_store()
        try:
            key = await keys.lookup(token)
        except Exception as exc:
            from tokenrelay.store.database import DatabaseError  # loaded with the key store

            if not isinstance(exc, DatabaseError):
                raise
            # The key store logs the outage once; a line per refused request would flood.
            log.debug("API key lookup failed: %s", exc)
            # A 503, never a 401: the key may well be good, the database could not say.
            raise GatewayError(
                "api_error",
                "cannot check the API key right now (the key database is unreachable); "
                "try again shortly",
                503,
                retry_after=keys.retry_interval,
            ) from None
        if key is None:
            shown = token[:PREFIX_LENGTH]
            raise _unauthorized(
                f"the API key {shown}… is unknown or revoked; {self._what_to_send()}"
            )
        refuse_unusable(key, token[:PREFIX_LENGTH])
        keys.last_used.mark(key.id)
        return Identity(
            "key",
            ip,
            user=key.user,
            org=key.org,
            key_id=key.id,
            routes=key.routes,
            rpm=key.rpm,
            policy=None if key.policy == NO_POLICY else key.policy,
        )


def refuse_unusable(key: KeyRecord, shown: str) -> None:
    """A 401 for an expired key, a 403 for one whose user or organization is disabled."""
    policy = key.policy
    if policy.expires_at is not None and key.expired(time.time()):
        raise _unauthorized(
            f"the API key {shown}… expired at {_iso(policy.expires_at)}; ask your administrator "
            "for a new one"
        )
    if policy.org_disabled or policy.user_disabled:
        whose = "organization" if policy.org_disabled else "user"
        raise GatewayError(
            "permission",
            f"the {whose} of API key {shown}… is disabled; ask your administrator to enable it",
            403,
        )


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
