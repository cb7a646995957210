"""Google's error shape: ``{"error": {code, message, status, details}}``, both ways."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects import retry_after_seconds
from tokenrelay.dialects.gemini.wire import (
    _DURATION,
    _HTTP_TYPES,
    _STATUS_TYPES,
    _TYPE_STATUS,
    _decode,
    _encode,
)
from tokenrelay.model import (
    Error,
    GatewayError,
)

# --- errors ------------------------------------------------------------------------------------


def _error_json(error: Error | GatewayError) -> dict[str, Any]:
    out: dict[str, Any] = {
        "code": error.status,
        "message": error.message,
        "status": "UNAVAILABLE" if error.status == 503 else _TYPE_STATUS[error.type],
    }
    if error.retry_after is not None:
        seconds = max(0.0, error.retry_after)
        out["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{seconds:g}s",
            }
        ]
    return out


def encode_error(error: GatewayError) -> bytes:
    body = _error_json(error)
    if error.param is not None:
        body.setdefault("details", []).append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": error.param, "description": error.message}],
            }
        )
    return _encode({"error": body})


def _error_from(error: Any, status: int, retry_after: float | None) -> Error:
    if not isinstance(error, dict):
        return Error("api_error", str(error)[:500], status, retry_after)
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600 and status == 500:
        status = code
    word = str(error.get("status") or "")
    kind = _STATUS_TYPES.get(word) or _HTTP_TYPES.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request"
    for detail in error.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        found = _DURATION.match(delay) if isinstance(delay, str) else None
        if found and retry_after is None:
            retry_after = float(found.group(1))
    message = str(error.get("message") or f"Gemini answered HTTP {status}")
    return Error(kind, message, status, retry_after)


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    """Google's ``{"error": {code, message, status, details}}``; a ``RetryInfo`` detail's
    ``retryDelay`` is the retry-after when no header gives one. The HTTP status is kept."""
    retry_after = retry_after_seconds(headers)
    try:
        data = _decode(body)
        if isinstance(data, list) and data:  # a streamed array's error
            data = data[0]
        error = data["error"]
    except (msgspec.DecodeError, KeyError, TypeError):
        text = body.decode("utf-8", "replace")[:500]
        kind = _HTTP_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request")
        message = f"Gemini answered HTTP {status}" + (f": {text}" if text else "")
        return Error(kind, message, status, retry_after)
    found = _error_from(error, status, retry_after)
    return Error(found.type, found.message, status, found.retry_after)
