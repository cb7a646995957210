"""Provider kinds: what differs between upstream APIs in transport (URL shape, authentication),
beside ``tokenrelay.dialects``, which owns their wire formats. The registry below maps a kind's
name in settings to its ``Transport`` (``base.py``); adding a kind is its module and one line
here. A kind's module is imported on first use."""

from __future__ import annotations

import importlib

from tokenrelay.transports.base import ProviderSettings, Transport

_KINDS = {
    "anthropic": "tokenrelay.transports.anthropic:Anthropic",
    "openai": "tokenrelay.transports.openai:OpenAI",
    "bedrock": "tokenrelay.transports.bedrock:Bedrock",
    "vertex": "tokenrelay.transports.vertex:Vertex",
    "azure": "tokenrelay.transports.azure:Azure",
    "gemini": "tokenrelay.transports.gemini:Gemini",
}
NAMES = tuple(_KINDS)
_loaded: dict[str, Transport] = {}


def get(kind: str) -> Transport:
    """The transport of ``kind``; a ``ValueError`` naming the known kinds for any other."""
    transport = _loaded.get(kind)
    if transport is None:
        if kind not in _KINDS:
            known = ", ".join(repr(name) for name in NAMES)
            raise ValueError(f"unknown provider kind {kind!r}; known kinds: {known}")
        module, _, name = _KINDS[kind].partition(":")
        transport = _loaded[kind] = getattr(importlib.import_module(module), name)()
    return transport


def header_owner(name: str) -> Transport | None:
    """The kind whose upstreams alone a client header of this name is meant for, if any."""
    for kind in NAMES:
        transport = get(kind)
        if transport.HEADER_PREFIX and name.startswith(transport.HEADER_PREFIX):
            return transport
    return None


def check(settings: ProviderSettings) -> None:
    """Refuse a provider's settings its kind cannot use, naming the setting to change."""
    transport = get(settings.kind)
    transport.check(settings)
    if settings.api not in transport.APIS:
        fits = " or ".join(repr(kind) for kind in NAMES if settings.api in get(kind).APIS)
        raise ValueError(f"api = {settings.api!r} is for a provider of kind {fits}")
