"""Field checks shared by our own JSON protocols (``/api/generate``, ``/api/chat``): each returns
the value or raises a 422 that names the field and says what it must be, so both endpoints
word their errors alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tokenrelay.model import GatewayError


def invalid(message: str, param: str | None = None, status: int = 422) -> GatewayError:
    return GatewayError(
        "unprocessable" if status == 422 else "invalid_request", message, status, param=param
    )


def known_fields(data: Mapping[str, Any], fields: Iterable[str], endpoint: str) -> None:
    """Refuse the first unknown field (sorted, so the error does not depend on dict order)."""
    allowed = tuple(fields)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise invalid(
            f"unknown field {unknown[0]!r}; {endpoint} takes {', '.join(allowed)}",
            param=unknown[0],
        )


def optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"'{name}' must be a string", param=name)
    return value


def optional_positive_int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise invalid(f"'{name}' must be a positive integer", param=name)
    return value


def optional_number(
    data: Mapping[str, Any], name: str, low: float = 0.0, high: float = 2.0
) -> float | None:
    """A number from ``low`` to ``high`` (a temperature's range by default, OpenAI's and the
    widest any provider takes); an integer too large for a float is out of range, not a 500."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"'{name}' must be a number from {low:g} to {high:g}", param=name)
    return float(value)


def route_name(data: Mapping[str, Any], default: str, alias: str | None = None) -> str:
    """The ``route`` field (or its alias), a non-empty string naming a route."""
    value = data.get("route", data.get(alias, default) if alias else default)
    if not isinstance(value, str) or not value:
        raise invalid("'route' must be a non-empty string naming a route", param="route")
    return value
