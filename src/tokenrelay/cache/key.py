"""The cache key of a request: a sha256 over a canonical encoding of everything that shapes the
answer, and of the tenant it belongs to, so one tenant never reads another's answer.

What goes in: the route, its resolved targets (provider, model, body params, headers), the
system prompt as the route applied it, the messages, tools, tool choice, sampling settings,
max tokens, the fields only one dialect models (``extra``: response format, ``n``, ...), the
dialect hints that reach an upstream of the same dialect, and the client headers the route
forwards upstream (betas, the simulator's faults). What stays out: the front and the stream
flag (how the answer is written, so one entry serves every front, streamed or not), metadata.

The *partition* is the same minus the conversation, and the conversation as text, for the
semantic index: two conversations are only compared when everything else is equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from tokenrelay.model import Request, TextPart, ToolResultPart

if TYPE_CHECKING:
    from tokenrelay.cache.settings import CacheScope
    from tokenrelay.gate.identity import Identity
    from tokenrelay.settings import TargetSettings

KEY_VERSION = 1  # bump when what goes in changes: old entries then never match
_encode = msgspec.msgpack.Encoder(order="sorted").encode


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where a request's answer is kept: ``key`` (exact), and for the semantic index the tenant
    ``scope``, the ``partition`` and the conversation's ``text``."""

    key: str
    scope: str
    partition: str
    text: str
    turns: int = 0  # the conversation's messages (a message's text may span lines)


def scope_of(identity: Identity | None, scope: CacheScope) -> str:
    """Whose entries a request reads and writes: its org, else its key or user, else its
    address (``scope = "org"``); its key or user, else its address (``"key"``); everyone's
    (``"global"``, which an operator must ask for)."""
    if scope == "global":
        return "global"
    if identity is None:
        return "none"
    if scope == "org" and identity.org:
        return f"org:{identity.org}"
    if identity.key_id:
        return f"key:{identity.key_id}"
    if identity.user:
        return f"user:{identity.user}"
    return f"ip:{identity.network or identity.ip}"


def forwarded(headers: Mapping[str, str], prefixes: Iterable[str]) -> list[tuple[str, str]]:
    """The client headers a route sends upstream (they can change the answer), sorted."""
    wanted = tuple(prefix.lower() for prefix in prefixes)
    if not wanted:
        return []
    return sorted((k, v) for k, v in headers.items() if k.lower().startswith(wanted))


def conversation_text(request: Request) -> str:
    """The conversation as text, one ``role: text`` line per message, for an embedding."""
    lines = []
    for message in request.messages:
        parts = [
            part.text if isinstance(part, TextPart) else part.content
            for part in message.content
            if isinstance(part, TextPart | ToolResultPart)
        ]
        lines.append(f"{message.role}: {' '.join(parts)}")
    return "\n".join(lines)


def cache_key(
    route: str,
    targets: Iterable[TargetSettings],
    request: Request,
    scope: str,
    client_headers: list[tuple[str, str]],
    *,
    with_text: bool = False,
) -> CacheKey:
    """The key of ``request`` (with the route's policy applied) on ``route`` for ``scope``;
    the conversation's text only ``with_text`` (a route with a semantic cache)."""
    hints = {k: v for k, v in request.front_options.items() if k.endswith("_hints")}
    settings: tuple[Any, ...] = (
        KEY_VERSION,
        route,
        [(t.provider, t.model, t.params, t.headers) for t in targets],
        request.system,
        request.system_blocks,
        request.tools,
        request.tool_choice,
        request.temperature,
        request.top_p,
        request.stop,
        request.max_tokens,
        request.extra,
        hints,
        client_headers,
    )
    common = _encode(settings)
    conversation = _encode(request.messages)
    scoped = scope.encode()
    exact = hashlib.sha256(b"%d:%b\0%b\0%b" % (len(scoped), scoped, common, conversation))
    partition = hashlib.sha256(common)
    text = conversation_text(request) if with_text else ""
    return CacheKey(exact.hexdigest(), scope, partition.hexdigest(), text, len(request.messages))
