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
