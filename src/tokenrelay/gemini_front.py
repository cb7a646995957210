"""The Gemini-native front: ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` and
``:generateContent``, ``GET /v1beta/models`` and ``/v1beta/models/{model}``, so the
``google-genai`` SDK and Gemini CLI can use the gateway as their base URL. The route is the model
in the path; the key is ``x-goog-api-key`` (or ``?key=``, moved into that header)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from tokenrelay.dialects.gemini import encode_error, parse_call
from tokenrelay.model import GatewayError, Request
from tokenrelay.relay import RelayEndpoint
from tokenrelay.types import Receive, Scope, Send

if TYPE_CHECKING:
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import Response

    from tokenrelay.failover import Route
    from tokenrelay.gateway import Gateway

PREFIX = "/v1beta/models/"


class GeminiRelay(RelayEndpoint):
    """Every POST under ``/v1beta/models/``: the model and streaming come from the path."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway, "gemini")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(self.caller_scope(scope), receive, send)

    def caller_scope(self, scope: Scope) -> Scope:
        """``?key=`` moved into ``x-goog-api-key``, where the gate reads it."""
        query = scope.get("query_string", b"")
        if b"key=" in query:
            keys = parse_qs(query.decode("latin-1")).get("key")
            headers = scope["headers"]
            if keys and not any(name == b"x-goog-api-key" for name, _ in headers):
                scope = dict(scope, headers=[*headers, (b"x-goog-api-key", keys[0].encode())])
        return scope

    def parse(self, scope: Scope, body: bytes) -> Request:
        path = scope["path"]
        call = parse_call(path)
        if call is None:
            raise GatewayError(
                "not_found",
                "the Gemini front serves POST /v1beta/models/{model}:generateContent and "
                ":streamGenerateContent?alt=sse only",
                404,
            )
        model, stream = call
        if stream and b"alt=sse" not in scope.get("query_string", b""):
            raise GatewayError(
                "invalid_request",
                "streamGenerateContent is served as server-sent events only: add ?alt=sse",
                400,
                param="alt",
            )
        request = self.dialect.parse_request(body)
        request.model, request.stream = model, stream
        return request


def _entry(route: Route) -> dict[str, Any]:
    return {
        "name": f"models/{route.name}",
        "version": "tokenrelay",
        "displayName": route.name,
        "description": "a tokenrelay route" if route.configured else "a provider model",
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
    }


def _json(data: Any, status: int = 200) -> Response:
    import msgspec
    from starlette.responses import Response

    return Response(msgspec.json.encode(data), status, media_type="application/json")


async def list_models(gateway: Gateway, request: HTTPRequest) -> Response:
    """``GET /v1beta/models``: the configured routes, in Gemini's ``ListModelsResponse``."""
    return _json({"models": [_entry(route) for route in gateway.router.routes.values()]})


async def retrieve_model(gateway: Gateway, request: HTTPRequest) -> Response:
    from starlette.responses import Response

    name = request.path_params["model_id"].removeprefix("models/")
    route = gateway.router.lookup(name)
    if route is not None:
        return _json(_entry(route))
    error = GatewayError(
        "not_found",
        "the model asked for is neither a route nor a provider model this gateway allows; "
        "GET /v1beta/models lists the routes",
        404,
        param="model",
    )
    headers = {"x-tokenrelay-error-type": error.type}
    return Response(encode_error(error), 404, headers, "application/json")
