"""Input items as a stored response keeps and lists them: ``input`` in its list form (a string
is one user message, a message's string content one text part), and, for
``GET /v1/responses/{id}/input_items``, with the ids OpenAI gives items that came without one."""

from __future__ import annotations

from typing import Any

_ID_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}


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
