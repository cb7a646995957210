"""The one JSON decoder for request bodies, shared by every dialect's ``parse_request``.

Whatever the bytes, it returns a value or raises a ``GatewayError`` 400 that says what is wrong
(not UTF-8, not JSON, a lone surrogate, nested too deep), so a hostile body can never surface as a
500 from inside the JSON library or later, when a deep value is encoded again for the upstream.
"""

from __future__ import annotations

import re

import msgspec

from tokenrelay.model import GatewayError

# Deeper than any real request (a tool's JSON Schema nesting 40 objects is still far inside it),
# far below the recursion limit that encoding the value again for the upstream runs into.
MAX_DEPTH = 128

_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"  # high, no low after it
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # low, no high before
)
_decode = msgspec.json.decode


def _refuse(message: str) -> GatewayError:
    return GatewayError("invalid_request", message, 400)


def decode_body(body: bytes) -> object:
    """A request body's JSON value; a 400 naming the problem for anything else."""
    try:
        value = _decode(body)
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from None
    except UnicodeDecodeError:  # invalid UTF-8 inside a string
        raise _refuse("the request body is not valid UTF-8") from None
    except RecursionError:
        raise _too_deep() from None
    # Cheap bound first: a body with fewer brackets than the limit cannot nest deeper.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise _too_deep()
    return value


def _not_json(body: bytes, exc: msgspec.DecodeError) -> GatewayError:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return _refuse("the request body is not valid UTF-8")
    found = _LONE_SURROGATE.search(body)
    if found is not None:
        escape = found.group().decode()
        return _refuse(
            f"the request body holds a lone UTF-16 surrogate escape ({escape}), which is not a "
            "character; send text as valid Unicode (a surrogate pair, or the character itself)"
        )
    return _refuse(f"the request body is not valid JSON: {exc}")


def _too_deep() -> GatewayError:
    return _refuse(f"the request body nests JSON deeper than {MAX_DEPTH} levels")


def _deeper_than(value: object, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (iterative, containers only)."""
    stack: list[tuple[dict[str, object] | list[object], int]] = []
    if isinstance(value, dict | list):
        stack.append((value, 1))
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False
