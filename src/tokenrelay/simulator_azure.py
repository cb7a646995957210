"""What the simulator's Azure OpenAI flavor adds to OpenAI's wire format: the request checks
(``api-version`` on dated URLs, ``api-key`` or an Entra bearer token), Azure's error bodies, and
the content-filter annotations of its answers (``prompt_filter_results`` first, then
``content_filter_results`` on every choice). Kept apart so ``simulator`` stays about the APIs
they share; loaded with the simulator's app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

# Azure's own faults, beside the shared ones: a prompt its filter refuses (400), an answer it
# cuts (``finish_reason: "content_filter"`` after ``fault_after`` tokens), a missing deployment.
FAULTS = ("content_filter", "content_filter_finish", "deployment_not_found")

_SAFE = {"filtered": False, "severity": "safe"}
_CLEAN = {name: _SAFE for name in ("hate", "self_harm", "sexual", "violence")}
_FLAGGED = {**_CLEAN, "violence": {"filtered": True, "severity": "high"}}
_PROMPT_FILTER = msgspec.json.encode(
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _CLEAN}],
    }
)

_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)
_NO_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment "
    "within the last 5 minutes, please wait a moment and try again."
)


def refusal(
    headers: Mapping[str, str], query: Mapping[str, str], key: str | None, dated: bool
) -> tuple[int, bytes] | None:
    """The status and body Azure answers a request it refuses before reading it: a dated URL
    without ``api-version``, a missing or wrong credential; None for one it serves."""
    if dated and not query.get("api-version"):
        return 404, _error("404", "Resource not found")
    given = headers.get("api-key") or _bearer(headers.get("authorization", ""))
    if not given or (key is not None and given != key):
        return 401, _error("401", _ACCESS_DENIED)
    return None


def fault(name: str | None) -> tuple[int, bytes] | None:
    """The answer of an Azure fault that refuses the request at once."""
    if name == "content_filter":
        body = {
            "error": {
                "message": _FILTERED,
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": _FLAGGED,
                },
            }
        }
        return 400, msgspec.json.encode(body)
    if name == "deployment_not_found":
        return 404, _error("DeploymentNotFound", _NO_DEPLOYMENT)
    return None


def _error(code: str, message: str) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message}})


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class FilteredWriter:
    """An OpenAI stream writer's chunks as Azure sends them: the prompt's filter results in a
    chunk of their own before the first, and each choice's filter results inside it."""

    __slots__ = ("_filtered", "_started", "_writer")

    def __init__(self, writer: Any, filtered: bool) -> None:
        self._writer = writer
        self._started = False
        self._filtered = filtered  # the finish is the filter's (content_filter_finish)

    def write(self, event: Any) -> bytes:
        data = annotate_stream(self._writer.write(event), self._filtered)
        if not self._started and data:
            self._started = True
            data = b"data: " + _PROMPT_FILTER + b"\n\n" + data
        return data

    def close(self) -> bytes:
        return bytes(self._writer.close())


def annotate_stream(data: bytes, filtered: bool = False) -> bytes:
    """SSE ``data:`` chunks with ``content_filter_results`` added to every choice."""
    if not data:
        return data
    out = []
    for block in data.split(b"\n\n"):
        if block.startswith(b"data: {"):
            chunk = msgspec.json.decode(block[6:])
            for choice in chunk.get("choices") or ():
                flagged = filtered and choice.get("finish_reason") == "content_filter"
                choice["content_filter_results"] = _FLAGGED if flagged else _CLEAN
            block = b"data: " + msgspec.json.encode(chunk)
        out.append(block)
    return b"\n\n".join(out)


def annotate_whole(body: bytes) -> bytes:
    """A whole Chat Completion with Azure's filter results."""
    answer = msgspec.json.decode(body)
    answer["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _CLEAN}]
    for choice in answer.get("choices") or ():
        flagged = choice.get("finish_reason") == "content_filter"
        choice["content_filter_results"] = _FLAGGED if flagged else _CLEAN
    return msgspec.json.encode(answer)
