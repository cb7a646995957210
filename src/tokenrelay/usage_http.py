"""The usage endpoints over HTTP: ``GET /v1/usage`` (reports), ``GET /usage`` (the dashboard's
page) and ``GET /v1/usage/dashboard`` (its data), and the admin authentication they share.

``tokenrelay.metering.reports`` and ``tokenrelay.metering.dashboard`` query the ledger and
render what they find; this module knows the requests: query parameters, credentials (read by
``gate.identity.credential``, the parser the relay uses, so both refuse the same requests),
statuses and headers.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from tokenrelay.gate.identity import AuthSettings, credential
from tokenrelay.gate.keys import KeyRecord, KeyStore
from tokenrelay.metering import dashboard
from tokenrelay.metering.reports import FILTERS, FORMATS, RENDER, make_query, usage
from tokenrelay.model import GatewayError

if TYPE_CHECKING:
    from tokenrelay.store import Database

ADMIN_KEY_HINT = (
    "an admin API key as 'Authorization: Bearer <key>' "
    "(create one with 'tokenrelay keys create --admin')"
)
_DASHBOARD = "the usage dashboard"
WEB = Path(__file__).resolve().parent / "web"
_MEDIA = {"json": "application/json", "csv": "text/csv", "table": "text/plain"}
# One key store per open database, so its lookup cache outlives a request; the database owns
# it and both go away together.
_KEY_STORES: weakref.WeakKeyDictionary[Database, KeyStore] = weakref.WeakKeyDictionary()
_HAS_KEYS: weakref.WeakSet[Database] = weakref.WeakSet()  # a key once made is never deleted
T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]


class _Gate(Protocol):
    async def database(self) -> Database: ...


class _Settings(Protocol):
    @property
    def auth(self) -> AuthSettings: ...


class UsageSource(Protocol):
    """What the usage endpoints need of the gateway: the database its gate opens (the ledger
    and the keys), and the identity settings (the key cache's lifetimes, whether JWTs count)."""

    @property
    def gate(self) -> _Gate: ...

    @property
    def settings(self) -> _Settings: ...


def _refusal(error: GatewayError) -> Response:
    """``error`` as these endpoints have always answered it, in no client's dialect (an admin's
    script reads them): ``{"error": {"type", "message"}}``, and a 401 asks for a Bearer token."""
    body = {"error": {"type": error.type, "message": error.message}}
    headers = {"www-authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(body, status_code=error.status, headers=headers)


def _unauthorized(message: str) -> GatewayError:
    return GatewayError("authentication", message, 401)


async def admin_database(
    source: UsageSource, headers: Mapping[str, str], what: str, *, open_without_keys: bool = False
) -> tuple[Database, KeyRecord | None]:
    """The ledger's database and the admin key (``Authorization: Bearer`` or ``x-api-key``)
    that opened it, else a ``GatewayError``: 401 without a valid key, 403 for a key that is not
    an admin's, 503 when the database cannot be read. With ``open_without_keys``, a database
    holding no key at all (a fresh or demo deployment) is open to anyone: no key then, and
    whatever credential came is not looked at."""
    auth = source.settings.auth
    jwt = auth.jwt is not None
    if not open_without_keys and credential(headers, jwt=jwt) is None:
        raise _unauthorized(f"{what} needs {ADMIN_KEY_HINT}")
    try:
        db = await source.gate.database()
    except Exception:  # not open yet, or failed to open (its log says why): nothing to decide with
        raise GatewayError(
            "api_error",
            "the database is not open yet (the gateway opens it just after start-up, and "
            "retries while it is down); try again shortly",
            503,
        ) from None
    try:
        if open_without_keys and not await _has_keys(db):
            return db, None
        token = credential(headers, jwt=jwt)
        if token is None:
            raise _unauthorized(f"{what} needs {ADMIN_KEY_HINT}")
        store = _KEY_STORES.get(db)
        if store is None:
            store = _KEY_STORES[db] = KeyStore(
                db, ttl=auth.key_cache_ttl, negative_ttl=auth.key_negative_ttl
            )
        key = await store.lookup(token)
    except GatewayError:
        raise
    except Exception:  # the database failed: nothing to decide with
        raise GatewayError(
            "api_error", "cannot read the API keys right now; try again shortly", 503
        ) from None
    if key is None:
        raise _unauthorized("the API key is unknown or revoked")
    if not key.admin:
        raise GatewayError("permission", f"API key {key.prefix}… is not an admin key", 403)
    return db, key


async def _has_keys(db: Database) -> bool:
    """Whether any key, even a revoked one, was ever made here; once true, stays true."""
    if db in _HAS_KEYS:
        return True
    if await db.fetch_one("SELECT 1 AS one FROM api_keys LIMIT 1") is None:
        return False
    _HAS_KEYS.add(db)
    return True


async def read_ledger(query: Awaitable[T]) -> T:
    """``query``'s answer; a database failure becomes a 503 saying so."""
    from tokenrelay.store import DatabaseError

    try:
        return await query
    except DatabaseError as exc:
        raise GatewayError("api_error", f"cannot read the ledger right now: {exc}", 503) from None


def _invalid(exc: ValueError) -> GatewayError:
    return GatewayError("invalid_request", str(exc), 400)


# --- GET /v1/usage -------------------------------------------------------------------------------


def usage_endpoint(source: UsageSource) -> Endpoint:
    """``GET /v1/usage?since=7d&until=&by=day&format=json&org=&user=&key=&route=&model=``, for
    an admin key (``tokenrelay keys create --admin``) as ``Authorization: Bearer`` or
    ``x-api-key``: 401 without a valid key, 403 for a key that is not an admin's."""

    async def endpoint(request: Request) -> Response:
        try:
            db, _ = await admin_database(source, request.headers, "GET /v1/usage")
            params = request.query_params
            fmt = params.get("format", "json")
            try:
                if fmt not in FORMATS:
                    raise ValueError(f"format must be one of {', '.join(FORMATS)}")
                query = make_query(
                    params.get("since", "7d"),
                    params.get("until"),
                    params.get("by", "day"),
                    {name: params.get(name) for name in FILTERS},
                    now=time.time(),
                )
            except ValueError as exc:
                raise _invalid(exc) from None
            report = await read_ledger(usage(db, query))
        except GatewayError as error:
            return _refusal(error)
        text = RENDER[fmt](report)
        return Response(text, media_type=f"{_MEDIA[fmt]}; charset=utf-8")

    return endpoint


# --- the dashboard -------------------------------------------------------------------------------


async def dashboard_page(request: Request) -> Response:
    """The page itself is public (it holds no data); it asks for a key when the data needs one."""
    return FileResponse(WEB / "usage.html", headers={"cache-control": "no-cache"})


def dashboard_endpoint(source: UsageSource) -> Endpoint:
    """``GET /v1/usage/dashboard?since=7d&until=&by=model&format=json|csv`` (and the report's
    ``org``, ``user``, ``key``, ``route``, ``model`` filters). Access follows ``GET /v1/usage``,
    except while the database holds no key at all and no JWT authentication is configured:
    then anyone who can reach the gateway may look."""

    async def endpoint(request: Request) -> Response:
        try:
            # Open while no key exists, unless callers are known by JWT: then the ledger
            # already names real users, and only an admin key shows it.
            keyless = source.settings.auth.jwt is None
            db, key = await admin_database(
                source, request.headers, _DASHBOARD, open_without_keys=keyless
            )
            params = request.query_params
            fmt = params.get("format", "json")
            try:
                if fmt not in ("json", "csv"):
                    raise ValueError("format must be json or csv")
                query, by = dashboard.dashboard_query(params, now=time.time())
            except ValueError as exc:
                raise _invalid(exc) from None
            found = await read_ledger(dashboard.collect(db, query, by))
        except GatewayError as error:
            return _refusal(error)
        headers = {"cache-control": "no-store"}  # every caller's spend: never kept by a cache
        if fmt == "csv":
            name = dashboard.csv_name(found)
            headers["content-disposition"] = f'attachment; filename="{name}"'
            text = dashboard.render_csv(found)
            return Response(text, media_type="text/csv; charset=utf-8", headers=headers)
        body = dashboard.shape(found)
        # "open": no key exists yet, so anyone reaching the gateway sees this; the page says so
        body["access"] = "open" if key is None else "admin"
        return JSONResponse(body, headers=headers)

    return endpoint
