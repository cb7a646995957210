"""Hosted tools (``web_search``, ``tool_search``, ``file_search``, ``mcp``, ...) of a Responses
request bound for an upstream of another API: translated where that API has an equivalent,
else refused with a 400 naming the tool, or dropped when the route says so.

The tools are run by the provider, not by the client, so nothing of them comes back as a tool
call the client must answer. ``web_search`` becomes Anthropic's server web search tool, or Chat
Completions' ``web_search_options`` on a search model; nothing else has an equivalent. A
Responses upstream takes them all as sent and never reaches this module.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tokenrelay.model import Request, Untranslatable

__all__ = ["HostedPolicy", "Plan", "plan"]

HostedPolicy = Literal["refuse", "drop"]

ANTHROPIC_WEB_SEARCH = "web_search_20250305"  # Anthropic's generally available version
_WEB_SEARCH = frozenset(
    {"web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"}
)
_LOCATION = ("city", "region", "country", "timezone")
_ONLY_RESPONSES = ": it is a tool only the OpenAI Responses API runs or knows"
_API_NAMES = {"anthropic": "an Anthropic model", "openai": "a Chat Completions model"}


class Plan(msgspec.Struct, frozen=True):
    """What becomes of one request's hosted tools on one target."""

    request: Request  # without the hosted tools
    added: dict[str, Any]  # body fields the target's encoder does not write (the translations)
    dropped: list[str]  # the dropped tools' types, in order


def plan(request: Request, dialect: str, model: str, policy: HostedPolicy) -> Plan | None:
    """``None`` when ``request`` holds no hosted tool (the usual case: nothing is copied)."""
    tools = request.extra.get("tools")
    if request.dialect != "responses" or not isinstance(tools, list):
        return None
    added: dict[str, Any] = {}
    dropped: list[str] = []
    for index, tool in enumerate(tools):
        kind = tool.get("type")
        if kind in ("function", "custom"):
            continue  # already in request.tools
        where = f"tools[{index}] ({kind})"
        translated = _translate(tool, dialect, model)
        if isinstance(translated, dict):
            if dialect == "anthropic":
                added.setdefault("tools", []).append(translated)
            else:
                added["web_search_options"] = translated
        elif policy == "drop":
            dropped.append(str(kind))
        else:
            raise Untranslatable(
                f"{where} cannot be sent to {_API_NAMES.get(dialect, dialect)}{translated}; "
                "remove it, use a route served by the Responses API, or set the route's "
                "hosted_tools = 'drop'",
                param=f"tools[{index}]",
            )
    extra = {key: value for key, value in request.extra.items() if key != "tools"}
    return Plan(msgspec.structs.replace(request, extra=extra), added, dropped)


def _translate(tool: dict[str, Any], dialect: str, model: str) -> dict[str, Any] | str:
    """The tool in ``dialect``'s terms, or why not (a clause of the refusal)."""
    if tool.get("type") not in _WEB_SEARCH:
        return _ONLY_RESPONSES
    if tool.get("external_web_access") is False:
        return " with external_web_access false (a cached-only search no other API offers)"
    location = tool.get("user_location")
    if dialect == "anthropic":
        out: dict[str, Any] = {"type": ANTHROPIC_WEB_SEARCH, "name": "web_search"}
        domains = (tool.get("filters") or {}).get("allowed_domains")
        if domains:
            out["allowed_domains"] = domains
        if isinstance(location, dict):
            out["user_location"] = _location(location)
        return out
    if dialect == "openai":
        if "search" not in model:
            return f": Chat Completions searches the web only with a search model, not {model!r}"
        if (tool.get("filters") or {}).get("allowed_domains"):
            return ": Chat Completions' web search has no domain filter"
        options: dict[str, Any] = {}
        if tool.get("search_context_size"):
            options["search_context_size"] = tool["search_context_size"]
        if isinstance(location, dict):
            place = {key: location[key] for key in _LOCATION if location.get(key)}
            options["user_location"] = {"type": "approximate", "approximate": place}
        return options
    return _ONLY_RESPONSES


def _location(location: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "approximate"}
    out.update({key: location[key] for key in _LOCATION if location.get(key)})
    return out
