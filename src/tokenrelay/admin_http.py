"""The admin API over HTTP, under ``/admin/v1/``: JSON in and out, a bearer admin credential
(never a cookie, so there is no CSRF surface), errors as ``{"error": {"type", "message",
"param"}}``. ``tokenrelay.admin`` does the work and decides who may do what; this module reads
requests (bounded bodies, strictly decoded, query parameters checked) and writes answers.

``OPERATIONS`` is the one table of routes: Starlette's routes and the OpenAPI document
(``tokenrelay.admin_openapi``) are both made from it, so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenrelay.admin import schema, trail
from tokenrelay.admin.roles import ROLES, Caller, require
from tokenrelay.admin.rows import page_size
from tokenrelay.admin.service import AdminService
from tokenrelay.admin.views import key_limits, key_requests
from tokenrelay.gate.identity import credential
from tokenrelay.model import GatewayError

if TYPE_CHECKING:
    from tokenrelay.gateway import Gateway
    from tokenrelay.store import Database

PREFIX = "/admin/v1"
# status -> the error type the admin API names (GatewayError types are the gateway's own)
_TYPES = {
    400: "invalid_request",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "request_too_large",
}
_SERVICES: weakref.WeakKeyDictionary[Database, AdminService] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class Call:
    """One admin request as the operations see it."""

    service: AdminService
    caller: Caller
    path: dict[str, str]
    query: dict[str, str]
    body: Any  # the decoded body Struct, or None
    gateway: Gateway


Handler = Callable[[Call], Awaitable[msgspec.Struct | None]]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str  # under PREFIX, Starlette's syntax
    summary: str
    handler: Handler
    body: type[msgspec.Struct] | None = None
    response: type[msgspec.Struct] | None = None  # None: 204
    status: int = 200
    query: tuple[str, ...] = ()


# --- query parameters ----------------------------------------------------------------------------


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, 400, param=param)


def _int(call: Call, name: str) -> int | None:
    text = call.query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise _invalid(f"{name} must be a whole number, not {text[:40]!r}", name) from None


def _bool(call: Call, name: str) -> bool:
    text = call.query.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise _invalid(f"{name} must be true or false", name)
    return text in ("true", "1")


def _choice(call: Call, name: str, choices: tuple[str, ...], required: bool = False) -> str | None:
    value = call.query.get(name) or None
    if value is None and required:
        raise _invalid(f"{name} is required: one of {', '.join(choices)}", name)
    if value is not None and value not in choices:
        raise _invalid(f"{name} must be one of {', '.join(choices)}", name)
    return value


def _text(call: Call, name: str, required: bool = False) -> str | None:
    value = call.query.get(name) or None
    if value is None and required:
        raise _invalid(f"{name} is required", name)
    if value is not None and len(value) > 200:
        raise _invalid(f"{name} is too long", name)
    return value


def _limit(call: Call) -> int:
    return page_size(_int(call, "limit"))


_SCOPES = ("key", "user", "org")

# --- operations ----------------------------------------------------------------------------------


async def me(call: Call) -> schema.Me:
    c = call.caller
    return schema.Me(role=c.role, org_id=c.org_id, key_id=c.key_id)


async def create_org(call: Call) -> schema.Org:
    return await call.service.tenants.create_org(call.caller, call.body)


async def list_orgs(call: Call) -> schema.OrgPage:
    return await call.service.tenants.list_orgs(call.caller, _text(call, "cursor"), _limit(call))


async def get_org(call: Call) -> schema.Org:
    return await call.service.tenants.get_org(call.caller, call.path["id"])


async def update_org(call: Call) -> schema.Org:
    return await call.service.tenants.update_org(call.caller, call.path["id"], call.body)


async def create_user(call: Call) -> schema.User:
    return await call.service.tenants.create_user(call.caller, call.body)


async def list_users(call: Call) -> schema.UserPage:
    tenants = call.service.tenants
    return await tenants.list_users(
        call.caller, _text(call, "org_id"), _text(call, "cursor"), _limit(call)
    )


async def get_user(call: Call) -> schema.User:
    return await call.service.tenants.get_user(call.caller, call.path["id"])


async def update_user(call: Call) -> schema.User:
    return await call.service.tenants.update_user(call.caller, call.path["id"], call.body)


async def create_key(call: Call) -> schema.KeySecret:
    return await call.service.key_admin.create(call.caller, call.body)


async def list_keys(call: Call) -> schema.KeyPage:
    return await call.service.key_admin.list(
        call.caller,
        org_id=_text(call, "org_id"),
        user_id=_text(call, "user_id"),
        include_revoked=_bool(call, "include_revoked"),
        cursor=_text(call, "cursor"),
        limit=_int(call, "limit"),
    )


async def get_key(call: Call) -> schema.Key:
    return await call.service.key_admin.get(call.caller, call.path["id"])


async def update_key(call: Call) -> schema.Key:
    return await call.service.key_admin.update(call.caller, call.path["id"], call.body)


async def revoke_key(call: Call) -> schema.Key:
    return await call.service.key_admin.revoke(call.caller, call.path["id"])


async def rotate_key(call: Call) -> schema.KeyRotated:
    body = call.body if call.body is not None else schema.KeyRotate()
    return await call.service.key_admin.rotate(call.caller, call.path["id"], body)


async def key_requests_view(call: Call) -> schema.RequestPage:
    record = await call.service.key_admin.record(call.caller, call.path["id"])
    return await key_requests(call.service.db, call.caller, record, _int(call, "limit"))


async def key_limits_view(call: Call) -> schema.KeyLimits:
    record = await call.service.key_admin.record(call.caller, call.path["id"])
    return await key_limits(call.caller, record, call.gateway.gate.limiter)


async def create_budget(call: Call) -> schema.Budget:
    return await call.service.budgets.create(call.caller, call.body)


async def list_budgets(call: Call) -> schema.BudgetPage:
    return await call.service.budgets.list(
        call.caller,
        _choice(call, "scope", _SCOPES),
        _text(call, "subject_id"),
        _text(call, "cursor"),
        _limit(call),
    )


async def get_budget(call: Call) -> schema.Budget:
    return await call.service.budgets.get(call.caller, call.path["id"])


async def update_budget(call: Call) -> schema.Budget:
    return await call.service.budgets.update(call.caller, call.path["id"], call.body)


async def delete_budget(call: Call) -> None:
    await call.service.budgets.delete(call.caller, call.path["id"])


async def spend(call: Call) -> schema.Spend:
    scope = _choice(call, "scope", _SCOPES, required=True)
    subject = _text(call, "subject_id", required=True)
    assert scope is not None and subject is not None
    return await call.service.budgets.spend(call.caller, scope, subject)


async def audit(call: Call) -> schema.AuditPage:
    require(call.caller, "audit.read", "read the audit trail")
    return await trail.entries(
        call.service.db,
        call.caller,
        limit=_int(call, "limit"),
        before=_text(call, "before"),
        org_id=_text(call, "org_id"),
    )


_PAGE = ("cursor", "limit")
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/me", "The caller's role and org", me, response=schema.Me),
    Operation("POST", "/orgs", "Create an org", create_org, schema.OrgCreate, schema.Org, 201),
    Operation("GET", "/orgs", "List orgs", list_orgs, None, schema.OrgPage, query=_PAGE),
    Operation("GET", "/orgs/{id}", "Get an org", get_org, None, schema.Org),
    Operation("PATCH", "/orgs/{id}", "Update an org", update_org, schema.OrgPatch, schema.Org),
    Operation("POST", "/users", "Create a user", create_user, schema.UserCreate, schema.User, 201),
    Operation(
        "GET", "/users", "List users", list_users, None, schema.UserPage, query=("org_id", *_PAGE)
    ),
    Operation("GET", "/users/{id}", "Get a user", get_user, None, schema.User),
    Operation("PATCH", "/users/{id}", "Update a user", update_user, schema.UserPatch, schema.User),
    Operation(
        "POST",
        "/keys",
        "Create a key (its secret is shown only now)",
        create_key,
        schema.KeyCreate,
        schema.KeySecret,
        201,
    ),
    Operation(
        "GET",
        "/keys",
        "List keys",
        list_keys,
        None,
        schema.KeyPage,
        query=("org_id", "user_id", "include_revoked", *_PAGE),
    ),
    Operation("GET", "/keys/{id}", "Get a key", get_key, None, schema.Key),
    Operation("PATCH", "/keys/{id}", "Update a key", update_key, schema.KeyPatch, schema.Key),
    Operation("POST", "/keys/{id}/revoke", "Revoke a key", revoke_key, None, schema.Key),
    Operation(
        "POST",
        "/keys/{id}/rotate",
        "Rotate a key: a new secret, the old one kept for an overlap",
        rotate_key,
        schema.KeyRotate,
        schema.KeyRotated,
    ),
    Operation(
        "GET",
        "/keys/{id}/requests",
        "A key's recent requests (no prompt text)",
        key_requests_view,
        None,
        schema.RequestPage,
        query=("limit",),
    ),
    Operation(
        "GET",
        "/keys/{id}/limits",
        "A key's rate-limit state",
        key_limits_view,
        None,
        schema.KeyLimits,
    ),
    Operation(
        "POST",
        "/budgets",
        "Create a budget",
        create_budget,
        schema.BudgetCreate,
        schema.Budget,
        201,
    ),
    Operation(
        "GET",
        "/budgets",
        "List budgets",
        list_budgets,
        None,
        schema.BudgetPage,
        query=("scope", "subject_id", *_PAGE),
    ),
    Operation("GET", "/budgets/{id}", "Get a budget", get_budget, None, schema.Budget),
    Operation(
        "PATCH",
        "/budgets/{id}",
        "Update a budget",
        update_budget,
        schema.BudgetPatch,
        schema.Budget,
    ),
    Operation("DELETE", "/budgets/{id}", "Delete a budget", delete_budget, None, None, 204),
    Operation(
        "GET",
        "/spend",
        "Spend against every budget of a subject",
        spend,
        None,
        schema.Spend,
        query=("scope", "subject_id"),
    ),
    Operation(
        "GET",
        "/audit",
        "The admin audit trail, newest first",
        audit,
        None,
        schema.AuditPage,
        query=("limit", "before", "org_id"),
    ),
)


# --- the HTTP side -------------------------------------------------------------------------------


def refusal(error: GatewayError) -> Response:
    """``error`` as the admin API answers it."""
    kind = _TYPES.get(error.status, "api_error")
    body = {"error": {"type": kind, "message": error.message, "param": error.param}}
    headers = {"cache-control": "no-store"}
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    return Response(
        msgspec.json.encode(body), error.status, media_type="application/json", headers=headers
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes without reading further."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError("request_too_large", f"the body is over {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError("request_too_large", f"the body is over {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, kind: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = None
        if " - at `$." in message:
            message, _, where = message.partition(" - at `$.")
            param = where.rstrip("`").split("[")[0].split(".")[0] or None
            message = f"{where.rstrip('`')}: {message}"
        elif "Object contains unknown field" in message:
            param = message.rpartition("`")[0].rpartition("`")[2] or None
        raise _invalid(message, param) from None
    except msgspec.DecodeError as exc:
        raise _invalid(f"the body is not valid JSON: {exc}") from None


async def service(gateway: Gateway) -> AdminService:
    """The service over the gateway's database, sharing the gate's key store (so a change is
    seen by this instance's gate at once)."""
    try:
        db = await gateway.gate.database()
        keys = await gateway.gate.authenticator.key_store()
    except Exception:
        raise GatewayError(
            "api_error", "the database is not open yet; try again shortly", 503
        ) from None
    found = _SERVICES.get(db)
    if found is None or found.keys is not keys:
        found = _SERVICES[db] = AdminService(db, keys, _bootstrap_digest(gateway))
    return found


def _bootstrap_digest(gateway: Gateway) -> str | None:
    name = gateway.settings.admin.bootstrap_key_env
    secret = os.environ.get(name, "") if name else ""
    if len(secret) < 32:
        return None
    return hashlib.sha256(secret.encode()).hexdigest()


async def _caller(gateway: Gateway, admin: AdminService, request: Request) -> Caller:
    headers = {name.lower(): value for name, value in request.headers.items()}
    if "authorization" not in headers:  # a bearer header only: x-api-key is for the relay
        headers.pop("x-api-key", None)
        headers.pop("x-goog-api-key", None)
    jwt = gateway.settings.auth.jwt is not None
    token = credential({"authorization": headers.get("authorization", "")}, jwt=jwt)
    role_claim = gateway.settings.admin.jwt_role_claim
    if token is not None and role_claim and token.count(".") == 2:
        found = gateway.gate.authenticator.jwt_claims(token)
        if found is not None:
            claims, user, org = found
            role = claims.get(role_claim)
            if role not in ROLES:
                raise GatewayError(
                    "permission", f"the token's {role_claim!r} claim names no admin role", 403
                )
            if role == "org_admin" and org is None:
                raise GatewayError("permission", "an org_admin token needs an org claim", 403)
            await gateway.gate.authenticator.refuse_disabled(user, org)
            return Caller(key_id=f"jwt:{user}", role=role, org_id=None if role == "admin" else org)
    return await admin.caller(token)


def endpoint(gateway: Gateway, operation: Operation) -> Callable[[Request], Awaitable[Response]]:
    settings = gateway.settings.admin

    async def handle(request: Request) -> Response:
        from tokenrelay.store import DatabaseError

        try:
            admin = await service(gateway)
            caller = await _caller(gateway, admin, request)
            body = None
            if request.method in ("POST", "PATCH"):
                raw = await _read_body(request, settings.max_body_bytes)
                if operation.body is not None:
                    body = _decode(raw, operation.body)
            call = Call(
                admin,
                caller,
                dict(request.path_params),
                dict(request.query_params),
                body,
                gateway,
            )
            result = await operation.handler(call)
        except GatewayError as error:
            return refusal(error)
        except DatabaseError as exc:
            return refusal(GatewayError("api_error", f"the database failed: {exc}", 503))
        headers = {"cache-control": "no-store"}
        if result is None:
            return Response(status_code=204, headers=headers)
        return Response(
            msgspec.json.encode(result),
            operation.status,
            media_type="application/json",
            headers=headers,
        )

    return handle


def routes(gateway: Gateway) -> list[Route]:
    """Every admin route, and the OpenAPI document (public: it holds no data)."""
    if not gateway.settings.admin.enabled:
        return []
    by_path: dict[str, dict[str, Operation]] = {}
    for operation in OPERATIONS:
        by_path.setdefault(operation.path, {})[operation.method] = operation
    found = []
    for path, methods in by_path.items():
        handlers = {method: endpoint(gateway, op) for method, op in methods.items()}

        async def dispatch(request: Request, handlers: dict[str, Any] = handlers) -> Response:
            response: Response = await handlers[request.method](request)
            return response

        found.append(Route(PREFIX + path, dispatch, methods=list(methods)))

    async def openapi(request: Request) -> Response:
        from tokenrelay.admin_openapi import document

        return Response(document(OPERATIONS, PREFIX), media_type="application/json")

    found.append(Route(PREFIX + "/openapi.json", openapi, methods=["GET"]))
    return found
