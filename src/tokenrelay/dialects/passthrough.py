"""Type checks for the fields a dialect does not model but knows: they travel in ``Request.extra``
to an upstream of the same dialect, and a wrong type must be the client's 400 here, naming the
field, not the upstream's (or a translation's crash) later.

Each check returns what the value must be when it is wrong, else ``None``; ``null`` is accepted
everywhere, as the APIs treat it as absent. Values are not checked against enumerations the APIs
keep growing (``reasoning_effort``, ``service_tier``): those pass through to the same dialect
and are refused by a translation that does not know them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], str | None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else "a string"


def obj(value: Any) -> str | None:
    return None if isinstance(value, dict) else "an object"


def strings(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    return None if ok else "a list of strings"


def integer(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if _is_int(value) and (low is None or value >= low) and (high is None or value <= high):
            return None
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        return "an integer" if low is None else f"an integer of at least {low}"

    return check


def number(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        ok = _is_number(value) and low <= value <= high
        return None if ok else f"a number from {low:g} to {high:g}"

    return check


def string_map(value: Any) -> str | None:
    ok = isinstance(value, dict) and all(isinstance(item, str) for item in value.values())
    return None if ok else "an object of string values"


def number_map(value: Any) -> str | None:
    ok = isinstance(value, dict) and all(_is_number(item) for item in value.values())
    return None if ok else "an object mapping token ids to numbers"


def string_or_object(value: Any) -> str | None:
    return None if isinstance(value, str | dict) else "a string or an object"


def objects(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(item, dict) for item in value)
    return None if ok else "a list of objects"


def response_format(value: Any) -> str | None:
    """OpenAI's: ``{"type": "text" | "json_object"}`` or a ``json_schema`` with its schema."""
    shape = '{"type": "text" | "json_object" | "json_schema", ...}'
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return shape
    if value["type"] == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}'
        if spec.get("schema") is not None and not isinstance(spec["schema"], dict):
            return "an object whose json_schema.schema is a JSON Schema object"
    return None


def thinking(value: Any) -> str | None:
    """Anthropic's: ``{"type": "enabled", "budget_tokens": n}`` or ``{"type": "disabled"}``."""
    shape = '{"type": "enabled", "budget_tokens": <integer>} or {"type": "disabled"}'
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return shape
    if value["type"] == "enabled" and not (
        _is_int(value.get("budget_tokens")) and value["budget_tokens"] >= 1
    ):
        return shape
    return None


OPENAI: Mapping[str, Check] = {
    "n": integer(1, 128),
    "logprobs": boolean,
    "top_logprobs": integer(0, 20),
    "response_format": response_format,
    "reasoning_effort": string,
    "parallel_tool_calls": boolean,
    "frequency_penalty": number(-2, 2),
    "presence_penalty": number(-2, 2),
    "logit_bias": number_map,
    "seed": integer(),
    "service_tier": string,
    "store": boolean,
    "metadata": string_map,
    "modalities": strings,
    "audio": obj,
    "prediction": obj,
    "web_search_options": obj,
    "verbosity": string,
    "prompt_cache_key": string,
    "safety_identifier": string,
}

ANTHROPIC: Mapping[str, Check] = {
    "top_k": integer(0),
    "thinking": thinking,
    "service_tier": string,
    "output_config": obj,
    "output_format": obj,
    "container": string_or_object,
    "mcp_servers": objects,
    "context_management": obj,
}


def first_wrong(data: Mapping[str, Any], checks: Mapping[str, Check]) -> tuple[str, str] | None:
    """The first known field (in ``checks`` order) whose value is wrong, with what it must be."""
    for name, check in checks.items():
        value = data.get(name)
        if value is not None:
            wanted = check(value)
            if wanted is not None:
                return name, wanted
    return None
