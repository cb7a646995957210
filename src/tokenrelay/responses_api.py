"""``GET /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` and
``DELETE /v1/responses/{id}``: a caller's stored responses (``tokenrelay.response_store``), in
OpenAI's shapes, errors included. The caller is identified as the relay identifies it (an API
key or a JWT; an address only where anonymous responses are kept), and reads only its own: any
other id is a 404, whether it exists or not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

from tokenrelay.dialects import openai
from tokenrelay.dialects.responses.items import listed
from tokenrelay.model import GatewayError

if TYPE_CHECKING:
    from tokenrelay.gateway import Gateway
    from tokenrelay.response_store import Found

_JSON = "application/json"
MAX_LIMIT = 100


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type=_JSON)


def _error(error: GatewayError) -> Response:
    """OpenAI's error shape; a 404 has no code (the shared one, ``model_not_found``, is about
    models)."""
    body = msgspec.json.decode(openai.encode_error(error))
    if error.type == "not_found":
        body["error"]["code"] = None
    headers = {"retry-after": str(round(error.retry_after))} if error.retry_after else None
    return (
        _json(body, error.status)
        if headers is None
        else Response(
            msgspec.json.encode(body), status_code=error.status, media_type=_JSON, headers=headers
        )
    )


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError("invalid_request", message, 400, param=param)


def routes(gateway: Gateway) -> list[Route]:
    """The three endpoints, for ``endpoints.build``."""

    async def found(request: HTTPRequest) -> Found:
        """The caller's response named in the path, or a ``GatewayError`` (401, 404, 503)."""
        id = request.path_params["response_id"]
        owner = await _owner(gateway, request)
        stored = await gateway.responses.find(id, owner)
        if stored is None:
            raise GatewayError(
                "not_found", f"Response with id {id!r} not found.", 404, param="response_id"
            )
        return stored

    async def retrieve(request: HTTPRequest) -> Response:
        try:
            if request.query_params.get("stream", "false").lower() not in ("false", "0", ""):
                raise _invalid(
                    "stream",
                    "only background responses can be streamed again, and this gateway runs "
                    "none; leave 'stream' out to get the stored response",
                )
            stored = await found(request)
        except GatewayError as error:
            return _error(error)
        return _json(stored.response)

    async def input_items(request: HTTPRequest) -> Response:
        try:
            limit, descending, after = _page(request)
            stored = await found(request)
            items = listed(stored.input_items, stored.id.removeprefix("resp_"))
            if descending:
                items.reverse()
            if after is not None:
                ids = [item["id"] for item in items]
                if after not in ids:
                    raise _invalid("after", f"no input item {after!r} in response {stored.id!r}")
                items = items[ids.index(after) + 1 :]
        except GatewayError as error:
            return _error(error)
        page = items[:limit]
        return _json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

    async def delete(request: HTTPRequest) -> Response:
        id = request.path_params["response_id"]
        try:
            owner = await _owner(gateway, request)
            if not await gateway.responses.delete(id, owner):
                raise GatewayError(
                    "not_found", f"Response with id {id!r} not found.", 404, param="response_id"
                )
        except GatewayError as error:
            return _error(error)
        return _json({"id": id, "object": "response", "deleted": True})

    return [
        Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
    ]


async def _owner(gateway: Gateway, request: HTTPRequest) -> str:
    """Whose responses the caller may read: its key or JWT user (or its address, where
    anonymous responses are kept); 401 otherwise."""
    from tokenrelay.gate.identity import request_headers

    store = gateway.responses
    peer = request.client.host if request.client else None
    identity = await gateway.gate.authenticator.identify_caller(
        request_headers(request.scope["headers"]), peer
    )
    owner = store.owner(identity)
    if owner is None:  # anonymous, where anonymous responses are not kept
        raise GatewayError(
            "authentication",
            "stored responses are read with the API key that created them; send it as "
            "'Authorization: Bearer <key>'",
            401,
        )
    return owner


def _page(request: HTTPRequest) -> tuple[int, bool, str | None]:
    params = request.query_params
    text = params.get("limit", "20")
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _invalid("order", "must be 'asc' or 'desc'")
    return int(text), order == "desc", params.get("after") or None
