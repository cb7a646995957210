"""``GET /v1/models`` and ``GET /v1/models/{id}``: the routes, and any name a request could use
(a route, or a provider model ``[provider_models]`` admits), in the shape of the SDK asking.

The OpenAI SDK reads ``{"id", "object": "model", "created", "owned_by"}``; the Anthropic SDK,
which sends ``anthropic-version`` (and its key as ``x-api-key``), reads
``{"type": "model", "id", "display_name", "created_at"}`` and a list with ``has_more``. A route
has no release date, so ``created`` is the epoch, which Anthropic documents for "unknown".
An unknown name is a 404 in the asker's error shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from tokenrelay import dialects
from tokenrelay.model import GatewayError
from tokenrelay.router import check_name

if TYPE_CHECKING:
    from starlette.requests import Request

    from tokenrelay.failover import Route
    from tokenrelay.gateway import Gateway

EPOCH = "1970-01-01T00:00:00Z"
OWNER = "tokenrelay"  # of a route; a provider model is owned by its provider


def speaks_anthropic(request: Request) -> bool:
    """Whether the asker is an Anthropic client: ``anthropic-version``, or its key as
    ``x-api-key`` with no ``Authorization``."""
    headers = request.headers
    return "anthropic-version" in headers or (
        "x-api-key" in headers and "authorization" not in headers
    )


def _entry(route: Route, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {"type": "model", "id": route.name, "display_name": route.name, "created_at": EPOCH}
    owner = OWNER if route.configured else route.targets[0][1].name
    return {"id": route.name, "object": "model", "created": 0, "owned_by": owner}


def _json(data: Any, status: int = 200) -> Response:
    import msgspec

    return Response(msgspec.json.encode(data), status, media_type="application/json")


async def list_models(gateway: Gateway, request: Request) -> Response:
    """The configured routes (provider models are patterns, so they are not listed)."""
    anthropic = speaks_anthropic(request)
    data = [_entry(route, anthropic) for route in gateway.router.routes.values()]
    if not anthropic:
        return _json({"object": "list", "data": data})
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    return _json({"data": data, "has_more": False, "first_id": first, "last_id": last})


async def retrieve_model(gateway: Gateway, request: Request) -> Response:
    name = request.path_params["model_id"]
    anthropic = speaks_anthropic(request)
    route = gateway.router.lookup(name)
    if route is not None:
        return _json(_entry(route, anthropic))
    try:
        check_name(name)  # echoed only when it is a well-formed name
        shown = f"model {name!r}"
    except GatewayError:
        shown = "the model asked for"
    error = GatewayError(
        "not_found",
        f"{shown} is neither a route nor a provider model this gateway allows; "
        "GET /v1/models lists the routes",
        404,
        param="model",
    )
    dialect = dialects.get("anthropic" if anthropic else "openai")
    headers = {"x-tokenrelay-error-type": error.type}
    return Response(dialect.encode_error(error), 404, headers, "application/json")
