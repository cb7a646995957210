"""The response cache in the relay: for one request on a route whose cache is on, look it up
after the gate admitted it, serve a hit as an ``OpenStream`` the relay writes like a live answer
(through the client's own dialect, streamed or whole), and on a miss capture the upstream's
event batches so that a stream that completed is stored after its last byte.

Nothing here runs for a route whose cache is off (``CachedCall.begin`` returns None at once),
and on a miss the capture costs one generator step and one list append per batch."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tokenrelay.cache.entry import has_error
from tokenrelay.cache.replay import nothing, replay
from tokenrelay.failover import Events, OpenStream, Route
from tokenrelay.model import Completion, Event, Request
from tokenrelay.records import CACHE_PROVIDER, Attempt, Outcome

if TYPE_CHECKING:
    from tokenrelay.cache.service import Plan, ResponseCache
    from tokenrelay.gate.identity import Identity


class CachedCall:
    """The cache's part in one relayed request."""

    __slots__ = ("_began", "batches", "cache", "hit", "plan", "served")

    def __init__(self, cache: ResponseCache, plan: Plan) -> None:
        self.cache = cache
        self.plan = plan
        self.hit = False
        self.batches: list[tuple[float, list[Event]]] | None = None  # a miss's, captured
        self.served: tuple[str, str] | None = None  # provider and model of the captured answer
        self._began = 0.0

    @classmethod
    def begin(
        cls,
        cache: ResponseCache | None,
        route: Route,
        request: Request,
        identity: Identity | None,
        headers: Mapping[str, str],
    ) -> CachedCall | None:
        """None unless the route has a cache; ``GatewayError`` 400 for a bad cache header."""
        settings = route.settings.cache
        if cache is None or settings.mode == "off":
            return None
        forward = [*route.settings.forward_client_headers]
        for _, provider in route.targets:
            forward.extend(provider.settings.forward_headers)
        plan = cache.plan(
            route.name,
            settings,
            [target for target, _ in route.targets],
            forward,
            request,
            identity,
            headers,
            label=route.limit_key,
        )
        return None if plan is None else cls(cache, plan)

    @property
    def header(self) -> tuple[bytes, bytes]:
        return self.plan.header

    @property
    def similarity(self) -> float | None:
        return self.plan.similarity

    async def open(self, route: Route) -> OpenStream | None:
        """A hit as a stream whose first batch is in hand, or None (look upstream)."""
        started = time.perf_counter()
        found = await self.cache.lookup(self.plan)
        if found is None:
            return None
        entry = found.entry
        served = next(
            (
                (target, provider)
                for target, provider in route.targets
                if provider.name == entry.provider and target.model == entry.model
            ),
            None,
        )
        if served is None or not entry.batches:  # the route no longer has that target
            self.plan.result, self.plan.similarity = "miss", None
            return None
        self.hit = True
        target, provider = served
        ms = (time.perf_counter() - started) * 1000
        if self.plan.settings.replay == "paced":
            pending, rest = list(entry.batches[0][1]), replay(entry)
        else:  # every event at once: the relay writes them (each its own event) in one send
            pending, rest = list(entry.events), nothing()
        return OpenStream(
            provider=provider,
            target=target,
            events=rest,
            pending=pending,
            attempts=[Attempt(CACHE_PROVIDER, entry.model, "cache_hit", 200, ms)],
            first_event_at=time.monotonic(),
        )

    def capture(self, opened: OpenStream) -> None:
        """Keep a copy of the upstream's batches as they pass, when the answer may be stored."""
        if self.hit or not self.plan.write:
            return
        self._began = time.monotonic()
        self.batches = [(0.0, list(opened.pending))]
        self.served = (opened.provider.name, opened.target.model)
        opened.events = self._through(opened.events)

    async def _through(self, events: Events) -> Events:
        batches = self.batches
        assert batches is not None
        began = self._began
        try:
            async for batch in events:
                batches.append((time.monotonic() - began, batch))
                yield batch
        finally:
            await events.aclose()

    def finish(self, outcome: Outcome, completion: Completion) -> None:
        """After the last byte: store a stream that completed with a finish, no error and no
        refusal (never an aborted, failed, cut or interrupted one)."""
        batches, served = self.batches, self.served
        if batches is None or served is None or outcome != "completed":
            return
        if completion.error is not None or completion.finish is None:
            return
        if completion.finish.reason == "content_filter" or has_error(batches):
            return
        self.cache.store(self.plan, served[0], served[1], batches)
