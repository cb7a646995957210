"""The ASGI callable's types, one spelling for every module that speaks ASGI.

They are Starlette's (``starlette.types``) written out, so an app of ours is a Starlette
``ASGIApp`` and the other way round, without importing Starlette on the relay's path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A key of an ``http.response.start`` message: its body's first part follows at once, so a
# server may write the head with it in one ``write`` (``tokenrelay.edge`` does; any other
# server ignores the key). Only for responses whose first part is ready: the head of one that
# is not would wait for it.
BODY_FOLLOWS = "tokenrelay.body_follows"

# A key of an ``http`` scope's ``extensions`` (``tokenrelay.edge`` offers it): a function taking a
# callback that it calls once, from the event loop, when the client's connection is lost before
# the response completed; so an app need not keep a task waiting in ``receive()`` to learn it.
ON_DISCONNECT = "tokenrelay.on_disconnect"
