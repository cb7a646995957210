"""In-process seams for tests: a ``Provider`` whose streams are scripted, as httpx's
``MockTransport`` scripts responses. Failover and routing run against it as they run against a
real upstream (the same ``stream``, ``build_body`` and ``build_headers`` calls), without a
socket or a server, so a test of the failover table takes milliseconds.

A script is one attempt's stream: event batches, as the network would deliver them, and
``Delay`` / ``Hang`` steps between them. Each call of ``stream`` plays the next script (the
last one again once they run out)::

    primary = FakeProvider("primary", [error(529)], [text("hi"), done()])
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenrelay.breaker import BreakerSettings, CircuitBreaker
from tokenrelay.dialects.responses.hosted import HostedPolicy
from tokenrelay.failover import Failover, Route
from tokenrelay.http_client import UpstreamPool
from tokenrelay.latency import LocalLatencyStats
from tokenrelay.model import Error, ErrorType, Event, Finish, Message, Request, TextDelta, TextPart
from tokenrelay.model import Untranslatable as Untranslatable
from tokenrelay.providers import Endpoint, Provider
from tokenrelay.settings import ProviderSettings, RouteSettings, TargetSettings


@dataclass(frozen=True, slots=True)
class Delay:
    """Nothing for ``seconds``, then the rest of the script."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Hang:
    """Nothing until ``until`` is set (never, without one): an upstream that stops answering."""

    until: asyncio.Event | None = None


Step = list[Event] | Delay | Hang
Script = Sequence[Step]


def text(*pieces: str) -> list[Event]:
    """One batch of answer text."""
    return [TextDelta(piece) for piece in pieces]


def done(reason: Any = "stop") -> list[Event]:
    return [Finish(reason)]


def error(
    status: int, kind: ErrorType | None = None, retry_after: float | None = None
) -> list[Event]:
    """A batch holding an upstream's error, of the type its status usually means."""
    kinds: dict[int, ErrorType] = {
        401: "authentication",
        403: "permission",
        429: "rate_limit",
        504: "timeout",
    }
    kind = kind or kinds.get(status) or ("invalid_request" if status < 500 else "overloaded")
    return [Error(kind, f"scripted {status}", status, retry_after)]


@dataclass(slots=True)
class Call:
    """One ``stream`` call as the provider saw it, and how it ended."""

    body: bytes
    headers: Mapping[str, str]
    endpoint: Endpoint | None
    finished: bool = False  # the script ran to its end
    closed: bool = False  # closed or cancelled before its end (a lost race, a deadline)


class FakeProvider(Provider):
    """A provider that plays ``scripts`` instead of calling an upstream. ``refuse``: the
    message of an ``Untranslatable`` its dialect raises for every request (a target that
    cannot carry it); ``calls`` records each stream."""

    def __init__(
        self, name: str, *scripts: Script, kind: str = "openai", refuse: str | None = None
    ) -> None:
        settings = ProviderSettings(kind=kind, base_url=f"http://{name}.invalid")
        super().__init__(name, settings, UpstreamPool(), idle_timeout=60.0)
        self.scripts = list(scripts) or [[text("ok"), done()]]
        self.refuse = refuse
        self.calls: list[Call] = []

    def build_body(
        self, request: Request, target: TargetSettings, hosted_tools: HostedPolicy = "refuse"
    ) -> tuple[bytes, list[str]]:
        if self.refuse is not None:
            raise Untranslatable(self.refuse, param="tools")
        return super().build_body(request, target, hosted_tools)

    async def stream(
        self, body: bytes, headers: Mapping[str, str], endpoint: Endpoint | None = None
    ) -> AsyncGenerator[list[Event], None]:
        script = self.scripts[min(len(self.calls), len(self.scripts) - 1)]
        call = Call(body, headers, endpoint)
        self.calls.append(call)
        try:
            for step in script:
                if isinstance(step, Delay):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Hang):
                    await (step.until.wait() if step.until else asyncio.Future())
                else:
                    yield step
            call.finished = True
        finally:
            call.closed = not call.finished


def request(model: str = "fast", prompt: str = "hello") -> Request:
    return Request(dialect="openai", model=model, messages=[Message("user", [TextPart(prompt)])])


def route(*providers: FakeProvider, name: str = "fast", **settings: Any) -> Route:
    """A route over ``providers``, one target each (model ``m``), with ``settings`` (the
    fields of ``RouteSettings``) on top of fast test defaults."""
    settings = {"first_token_timeout": 0.2, "retry_backoff": 0.001, "budget": 2.0, **settings}
    targets = [TargetSettings(provider=p.name, model="m") for p in providers]
    return Route(
        name, RouteSettings(targets=targets, **settings), list(zip(targets, providers, strict=True))
    )


@dataclass(slots=True)
class Harness:
    """The shared state a gateway keeps between requests: a breaker and latency history."""

    breaker: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(BreakerSettings(failures=3, cooldown=60.0))
    )
    latency: LocalLatencyStats = field(default_factory=LocalLatencyStats)

    def failover(self, on: Route, asked: Request | None = None) -> Failover:
        return Failover(on, asked or request(on.name), {}, self.breaker, self.latency)
