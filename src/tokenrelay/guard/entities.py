"""What the guard can find: the entity types, the default set, and one found span.

The types are a closed vocabulary shared by the detectors, the masking (placeholder names), the
ledger and metrics (counts per type, never values) and the external detector's mapping.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

EntityType = Literal[
    "email", "phone", "card", "iban", "ip", "api_key", "jwt", "aws_key", "us_ssn", "custom"
]
ENTITY_TYPES: frozenset[str] = frozenset(get_args(EntityType))

# National identifiers are opt-in: an operator enables the ones of the countries they serve.
NATIONAL_IDS: frozenset[str] = frozenset({"us_ssn"})
DEFAULT_ENTITIES: frozenset[str] = ENTITY_TYPES - NATIONAL_IDS

CUSTOM_PREFIX = "custom:"

# The longest text each built-in type can match (longer matches are dropped, so the bound holds):
# what an output guard must keep as look-behind to catch a value split across stream events.
MAX_CHARS: dict[str, int] = {
    "email": 254,  # RFC 5321's limit for a whole address
    "phone": 32,
    "card": 37,  # 19 digits with a separator between each
    "iban": 42,  # 34 characters in groups of four
    "ip": 45,  # an IPv4-mapped IPv6 address written in full
    "api_key": 256,
    "jwt": 4096,
    "aws_key": 40,
    "us_ssn": 11,
}


class Found(NamedTuple):
    """One value found in a text: ``text[start:end]`` is an ``entity`` (or ``custom:<name>``)."""

    start: int
    end: int
    entity: str


def check_entities(entities: object) -> frozenset[str]:
    """The entity names given, checked against the vocabulary (a ValueError names a stranger)."""
    if isinstance(entities, str):
        raise ValueError(f"entities must be a list of names, not the string {entities!r}")
    names: frozenset[str] = frozenset(entities)  # type: ignore[call-overload]
    unknown = sorted(str(name) for name in names - ENTITY_TYPES)
    if unknown:
        known = ", ".join(sorted(ENTITY_TYPES))
        raise ValueError(f"unknown PII entity type {', '.join(unknown)} (known: {known})")
    return names
