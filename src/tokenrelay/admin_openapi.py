"""The admin API's OpenAPI 3.1 document, generated from ``admin_http.OPERATIONS`` and the
msgspec schemas of ``admin.schema``, so it lists exactly the routes that are served."""

from __future__ import annotations

import functools
import re
from typing import Any, Protocol

import msgspec

from tokenrelay import __version__


class Operation(Protocol):
    """What the document reads of an ``admin_http.Operation``."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def body(self) -> type[msgspec.Struct] | None: ...
    @property
    def response(self) -> type[msgspec.Struct] | None: ...
    @property
    def status(self) -> int: ...
    @property
    def query(self) -> tuple[str, ...]: ...


_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": [
                        "invalid_request",
                        "authentication_error",
                        "permission_error",
                        "not_found",
                        "conflict",
                        "request_too_large",
                        "api_error",
                    ],
                },
                "message": {"type": "string"},
                "param": {"type": ["string", "null"]},
            },
            "required": ["type", "message", "param"],
        }
    },
    "required": ["error"],
}
_REF = "#/components/schemas/{name}"


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


@functools.cache
def document(operations: tuple[Operation, ...], prefix: str) -> bytes:
    """The document of ``operations`` served under ``prefix``, as JSON bytes (built once)."""
    kinds: list[Any] = []
    for op in operations:
        kinds += [kind for kind in (op.body, op.response) if kind is not None]
    _, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    components["Error"] = _ERROR
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item = paths.setdefault(prefix + op.path, {})
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in op.query
        ]
        responses: dict[str, Any] = {
            str(status): {"description": text, "content": _json(_ref_error())}
            for status, text in (
                ("400", "invalid request: the message names what to change"),
                ("401", "no valid admin credential"),
                ("403", "the role may not do this on its own scope"),
                ("404", "not found, or outside the caller's org"),
            )
        }
        if op.response is None:
            responses[str(op.status)] = {"description": "done"}
        else:
            responses[str(op.status)] = {"description": "OK", "content": _json(_ref(op.response))}
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()}{re.sub(r'[^A-Za-z]+', '_', op.path)}",
            "parameters": params,
            "responses": responses,
        }
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.method == "POST",
                "content": _json(_ref(op.body)),
            }
        item[op.method.lower()] = operation
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "tokenrelay admin API",
            "version": __version__,
            "description": "Orgs, users, keys, budgets and the audit trail; see docs/admin-api.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }
    return msgspec.json.encode(doc)


def _ref_error() -> dict[str, str]:
    return {"$ref": _REF.format(name="Error")}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
