"""Errors in the dialect of the path they answer, for the errors no front dialect writes itself:
an unknown path or method, an oversized or slow request head, a request uvicorn cannot parse.

An SDK reads an error by its dialect's shape (the Anthropic SDK looks for ``error.type`` under
``{"type": "error"}``, the OpenAI SDK for ``error.message``), so a 404 on ``/v1/messages/foo``
must look like Anthropic's own 404, not like a generic one.
"""

from __future__ import annotations

from tokenrelay import dialects
from tokenrelay.model import GatewayError


def dialect_for(path: str) -> str:
    """The dialect a client of ``path`` speaks: Anthropic under ``/v1/messages``, OpenAI under
    the rest of ``/v1``, useChat's plain text under ``/api/chat``, and the ``/api/generate``
    shape (``{"error": {"type", "message"}}``) everywhere else."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    if path == "/api/chat" or path.startswith("/api/chat/"):
        return "uichat"
    return "generate"


def render(path: str, error: GatewayError) -> tuple[bytes, bytes]:
    """``error`` as ``path``'s dialect writes it: its content type and body."""
    name = dialect_for(path)
    dialect = dialects.get(name)
    if name == "openai" and error.type == "not_found":
        # OpenAI answers an unknown URL with invalid_request_error and no code; its
        # "model_not_found" code (what our not_found becomes) would send the reader astray.
        error = GatewayError("invalid_request", error.message, error.status)
    content_type = getattr(dialect, "ERROR_CONTENT_TYPE", "application/json")
    return content_type.encode(), dialect.encode_error(error)
