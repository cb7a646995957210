"""A circuit breaker per target, so failover stops paying a first-token timeout on every request
to a target that is down.

A target's circuit is *closed* (requests go) until ``failures`` failures land within ``window``
seconds; then it is *open* (the target is skipped) for ``cooldown`` seconds; then *half-open*:
exactly one probe request goes, and its outcome closes the circuit or opens it for another full
cooldown. A probe that never reports (its task was cancelled) holds the slot for ``cooldown``
seconds only, after which another probe may go, so a lost probe cannot wedge a target.

What counts as a failure is the router's decision, not this module's: connection errors, 5xx,
529 (overloaded), 429 (rate limited) and first-token timeouts say the *target* is unwell and are
reported with ``failure``; 400-class client errors (400, 413, 415, 422 …) would fail the same way
on any target and are reported as neither. A client abort is not an outcome either.

The state lives behind ``BreakerStore``: in process by default (``LocalBreakerStore``), shared
by every instance through Redis when ``redis_url`` is set (``shared_state.RedisBreakerStore``).
A shared store needs a clock that instances share (``time.time``), where the in-process store is
best served by ``time.monotonic``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Literal, Protocol

import msgspec

log = logging.getLogger("tokenrelay.breaker")

StateName = Literal["closed", "open", "half_open"]
# What a report did to a circuit, so the caller can log each transition exactly once.
Transition = Literal["opened", "reopened", "closed"]


class BreakerSettings(msgspec.Struct, kw_only=True, frozen=True):
    failures: Annotated[int, msgspec.Meta(ge=1)] = 5  # failures within ``window`` that open
    window: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # seconds
    cooldown: Annotated[float, msgspec.Meta(gt=0)] = 15.0  # seconds open before one probe
    enabled: bool = True


class BreakerState(msgspec.Struct, frozen=True):
    """A circuit as seen at one moment. ``retry_at`` is when a request may next go: the end of
    the cooldown when open, the expiry of the outstanding probe's slot when half-open; ``None``
    when one may go now."""

    name: StateName
    retry_at: float | None = None


CLOSED = BreakerState("closed")


class BreakerStore(Protocol):
    """Circuit state by target key (``"anthropic:claude-sonnet-5-5"``). Each method is one atomic
    step, so a shared store can implement it as one round trip (a Redis script)."""

    async def state(self, key: str, now: float) -> BreakerState:
        """The circuit's state, without changing it."""
        ...

    async def try_acquire(self, key: str, now: float) -> bool:
        """Whether a request may go now; past the cooldown, the one ``True`` is the probe."""
        ...

    async def record_success(self, key: str, now: float) -> Transition | None:
        """A request succeeded; a half-open circuit closes."""
        ...

    async def record_failure(self, key: str, now: float) -> Transition | None:
        """A request failed; enough of them in the window open the circuit, and a failed probe
        reopens it."""
        ...


class _Circuit:
    __slots__ = ("failures", "name", "until")

    def __init__(self, limit: int) -> None:
        # Only the newest ``limit`` timestamps can decide anything, so the deque is bounded.
        self.failures: deque[float] = deque(maxlen=limit)
        self.name: StateName = "closed"
        self.until = 0.0  # open: end of the cooldown; half-open: expiry of the probe's slot


class LocalBreakerStore:
    """The state in this process. Each method runs without an ``await`` inside, so under asyncio
    it is atomic without a lock; the methods are async only to match ``BreakerStore``."""

    def __init__(self, settings: BreakerSettings) -> None:
        self._settings = settings
        self._circuits: dict[str, _Circuit] = {}

    def _circuit(self, key: str) -> _Circuit:
        circuit = self._circuits.get(key)
        if circuit is None:
            circuit = self._circuits[key] = _Circuit(self._settings.failures)
        return circuit

    async def state(self, key: str, now: float) -> BreakerState:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.name == "closed":
            return CLOSED
        if now >= circuit.until:  # cooldown over, or the probe's slot expired: a probe may go
            return BreakerState("half_open")
        return BreakerState(circuit.name, circuit.until)

    async def try_acquire(self, key: str, now: float) -> bool:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.name == "closed":
            return True
        if now < circuit.until:
            return False
        circuit.name = "half_open"
        circuit.until = now + self._settings.cooldown  # the probe's slot, should it never report
        return True

    async def record_success(self, key: str, now: float) -> Transition | None:
        circuit = self._circuits.get(key)
        # A success while open is a request sent before the circuit opened: not a probe, ignored.
        if circuit is None or circuit.name != "half_open":
            return None
        circuit.name = "closed"
        circuit.failures.clear()
        return "closed"

    def hold_open(self, key: str, until: float) -> None:
        """Open the circuit until ``until`` (on the callers' clock) without failures: how a
        shared store that loses Redis carries over the circuits it knew to be open."""
        circuit = self._circuit(key)
        circuit.name = "open"
        circuit.until = until
        circuit.failures.clear()

    async def record_failure(self, key: str, now: float) -> Transition | None:
        settings = self._settings
        circuit = self._circuit(key)
        if circuit.name == "half_open":
            circuit.name = "open"
            circuit.until = now + settings.cooldown
            return "reopened"
        if circuit.name == "open":  # sent before the circuit opened; the cooldown stands
            return None
        failures = circuit.failures
        failures.append(now)
        while failures and failures[0] <= now - settings.window:
            failures.popleft()
        if len(failures) < settings.failures:
            return None
        circuit.name = "open"
        circuit.until = now + settings.cooldown
        failures.clear()
        return "opened"


class CircuitBreaker:
    """What the router asks before trying a target (``allow``) and tells after (``success`` or
    ``failure``), with the transitions logged once each."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        store: BreakerStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings if settings is not None else BreakerSettings()
        self._store: BreakerStore = store if store is not None else LocalBreakerStore(self.settings)
        self._clock = clock
        self._keys: set[str] = set()  # the targets seen, for ``snapshot``

    async def allow(self, key: str) -> bool:
        """Whether to try the target now; ``False`` means skip it and go to the next one."""
        if not self.settings.enabled:
            return True
        self._keys.add(key)
        return await self._store.try_acquire(key, self._clock())

    async def is_open(self, key: str) -> bool:
        """Whether the target is being skipped now; a read only, so unlike ``allow`` it never
        takes a half-open circuit's probe (for calls beside the streams, which do not report)."""
        if not self.settings.enabled:
            return False
        return (await self._store.state(key, self._clock())).name == "open"

    async def success(self, key: str) -> None:
        if not self.settings.enabled:
            return
        if await self._store.record_success(key, self._clock()) == "closed":
            log.info("circuit for %s closed: the probe succeeded", key)

    async def failure(self, key: str) -> None:
        if not self.settings.enabled:
            return
        self._keys.add(key)
        settings = self.settings
        transition = await self._store.record_failure(key, self._clock())
        if transition == "opened":
            log.warning(
                "circuit for %s opened after %d failures in %gs; skipping it for %gs",
                key,
                settings.failures,
                settings.window,
                settings.cooldown,
            )
        elif transition == "reopened":
            # The same outage, still going: the warning was given when it opened.
            log.info(
                "circuit for %s: the probe failed; skipping it for %gs", key, settings.cooldown
            )

    async def snapshot(self) -> dict[str, str]:
        """Each target seen so far → ``"closed"``, ``"open"`` or ``"half_open"``."""
        now = self._clock()
        return {key: (await self._store.state(key, now)).name for key in sorted(self._keys)}
