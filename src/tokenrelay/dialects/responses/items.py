"""Input items as a stored response keeps and lists them: ``input`` in its list form (a string
is one user message, a message's string content one text part), and, for
``GET /v1/responses/{id}/input_items``, with the ids OpenAI gives items that came without one;
and the items an ``item_reference`` can name, as it is replaced by one."""

from __future__ import annotations

import re
from typing import Any

_ID_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}
# The ids this gateway gives items: ``<prefix>_<response hex>_<output index>`` for a response's
# output items (the stream writer) and ``..._in<input index>`` for input items sent without one
# (``listed``), so an item's id names the stored response that holds it.
_OWN_ID = re.compile(r"[a-z]+_([0-9a-f]+)_(?:in)?[0-9]+")


def input_items(value: str | list[Any]) -> list[Any]:
    """``input`` as a list of items; messages always carry ``type`` and a list of parts."""
    if isinstance(value, str):
        return [_message("user", value)]
    return [_item(item) for item in value]


def _message(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    part: dict[str, Any] = {"type": kind, "text": text}
    if role == "assistant":
        part["annotations"] = []
    return {"type": "message", "role": role, "content": [part]}


def _item(item: Any) -> Any:
    if not isinstance(item, dict) or item.get("type", "message" if "role" in item else None) != (
        "message"
    ):
        return item
    content = item.get("content")
    if isinstance(content, str):
        return {**item, **_message(str(item.get("role")), content)}
    return {**item, "type": "message"}


def listed(items: list[Any], base: str) -> list[dict[str, Any]]:
    """``items`` as the list endpoint shows them: each with an id (``msg_<base>_in<i>`` and the
    like for those sent without one; stable, so ``after`` can page) and messages with a
    status."""
    out = []
    for index, item in enumerate(items):
        shown = dict(item) if isinstance(item, dict) else {"type": "unknown", "value": item}
        kind = shown.get("type")
        if not isinstance(shown.get("id"), str) or not shown["id"]:
            shown["id"] = f"{_ID_PREFIXES.get(str(kind), 'item')}_{base}_in{index}"
        if kind == "message":
            shown.setdefault("status", "completed")
        out.append(shown)
    return out


def holder(item_id: str) -> str | None:
    """The id of the stored response that holds the item ``item_id``; None for an id this
    gateway never gave."""
    found = _OWN_ID.fullmatch(item_id)
    return "resp_" + found[1] if found else None


def referable(response: dict[str, Any], items: list[Any], base: str) -> dict[str, Any]:
    """A stored response's items by the ids its client knows them by (its input items as
    ``listed``, its output items), each as it is sent in place of a reference (``resent``)."""
    found: dict[str, Any] = {}
    for shown, item in zip(listed(items, base), items, strict=True):
        found[shown["id"]] = item
    for item in response.get("output") or ():
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            found[item["id"]] = item
    return found


def resent(item: Any) -> Any | None:
    """A stored item as it goes on in place of a reference: without its id, which no upstream
    issued (the gateway gives its own), and None for reasoning without its encrypted content,
    which no model can take back (an earlier turn's reasoning is never needed)."""
    if not isinstance(item, dict):
        return item
    if item.get("type") == "reasoning" and not item.get("encrypted_content"):
        return None
    return {key: value for key, value in item.items() if key != "id"}
