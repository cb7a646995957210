"""The limiter the gate calls: request windows before the upstream call, a stream slot around the
stream, token usage checked before and charged after.

Several request rules (IP, key, route …) are test-then-hit: every window is read first and a
request refused by any of them consumes none of them. In process that is exact (nothing awaits
between the test and the hits). In Redis the two steps are two round trips, and each hit is
itself an atomic check-and-push, so no window ever exceeds its limit; what a race can cost is
that when two instances take the last unit of one window at the same instant, the loser's hits
on the *other* windows stay counted. We accept that: it errs towards limiting, only under
contention at the limit, and keeps the library's tested scripts instead of one of our own.

Redis errors and timeouts (``redis_timeout`` bounds each operation as a whole) fail open or
closed as configured: open answers allowed with ``degraded=True`` and counts ``failures_open``;
closed answers ``unavailable=True`` (the caller sends 503) and counts ``failures_closed``. A log
line says so at most every ten seconds. After a failure Redis is left alone for
``redis_retry_interval`` seconds, then the next call tries it again, so the limits come back by
themselves when Redis does. A failure seen by the shared state's own client within that interval
counts too (``RedisHealth``), so a request never waits for a hung Redis twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Coroutine, Iterable, Sequence
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tokenrelay.ratelimit.base import Store
from tokenrelay.ratelimit.decide import (
    key_id,
    request_decision,
    token_decision,
    token_windows,
    windows_of,
)
from tokenrelay.ratelimit.memory import MemoryStore
from tokenrelay.ratelimit.model import (
    Decision,
    LimitSettings,
    Rule,
    Subject,
    WindowState,
    policy_name,
)

if TYPE_CHECKING:
    from tokenrelay.ratelimit.shared import RedisHealth

log = logging.getLogger("tokenrelay.ratelimit")

T = TypeVar("T")
_LOG_EVERY = 10.0  # seconds between two "Redis unreachable" lines


class _Down(Enum):
    DOWN = "down"


DOWN = _Down.DOWN


class Lease:
    """A stream's concurrency slot. Release it when the stream ends (``async with`` does);
    releasing twice frees one slot. ``degraded``: Redis was unreachable and the limiter failed
    open, so no slot was taken (and none is released)."""

    __slots__ = ("_limiter", "_released", "decision", "degraded", "id", "key")

    def __init__(
        self, limiter: RateLimiter, key: str, decision: Decision, degraded: bool = False
    ) -> None:
        self._limiter = limiter
        self._released = False
        self.key = key
        self.id = secrets.token_hex(8)
        self.decision = decision  # its headers advertise the cap and the slots left
        self.degraded = degraded

    @property
    def released(self) -> bool:
        return self._released

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._limiter._release(self)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


class RateLimiter:
    def __init__(
        self, settings: LimitSettings, store: Store, health: RedisHealth | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self._health = health  # a shared store's Redis, as this process's clients see it
        self.failures_open = 0  # decisions made without Redis and let through (a metric)
        self.failures_closed = 0  # decisions made without Redis and refused
        self.charges_lost = 0  # token charges that did not reach Redis
        self._skip_until = 0.0
        self._down_since: float | None = None
        self._counts_when_down = (0, 0)
        self._next_log = 0.0
        self._live: dict[str, Lease] = {}  # Redis leases to keep refreshed
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, settings: LimitSettings) -> RateLimiter:
        """In process unless ``redis_url`` is set. Nothing connects yet."""
        if settings.redis_url:
            # redis and limits load here
            from tokenrelay.ratelimit.shared import RedisStore, redis_health

            store: Store = RedisStore(
                settings.redis_url, settings.redis_timeout, settings.key_prefix
            )
            return cls(settings, store, redis_health(settings.redis_url))
        return cls(settings, MemoryStore())

    async def check_requests(self, rules: Sequence[Rule]) -> Decision:
        """Count this request against every rule, or against none when one refuses."""
        if not rules:
            return Decision.unlimited()
        if len(rules) == 1:
            rule = rules[0]
            windows = windows_of("req", rule.subject, rule.limit, rule.scope, "requests")
        else:
            found = {  # by key: the same rule twice must not count twice
                window.key: window
                for rule in rules
                for window in windows_of("req", rule.subject, rule.limit, rule.scope, "requests")
            }
            windows = list(found.values())
        if not self.store.shared:  # the hot path: no guard needed, nothing can fail
            taken, usage = await self.store.take(windows)
            return request_decision(taken, windows, usage)
        result = await self._guard(self.store.take(windows))
        if result is DOWN:
            return self._degraded()
        taken, usage = result
        return request_decision(taken, windows, usage)

    async def check_tokens(
        self, subjects: Iterable[Subject | Rule], limit: str | None = None, scope: str = "*"
    ) -> Decision:
        """Before a request: refused when a subject's tokens in the window already reach the
        limit. A ``Subject`` is held to ``limit``; a ``Rule`` brings its own (a user and an
        org with different budgets in one call)."""
        windows = token_windows(subjects, limit, scope)
        if not windows:
            return Decision.unlimited()
        result = await self._guard(self.store.tokens(windows))
        if result is DOWN:
            return self._degraded()
        return token_decision(windows, result)

    async def charge_tokens(
        self,
        subjects: Iterable[Subject | Rule],
        tokens: int,
        limit: str | None = None,
        scope: str = "*",
    ) -> None:
        """After the stream: add the tokens it actually used, whatever the limit (a sliding
        window counter per subject, so one charge is one increment however large)."""
        windows = token_windows(subjects, limit, scope)
        if tokens <= 0 or not windows:
            return
        if await self._guard(self.store.charge(windows, tokens)) is DOWN:
            self.charges_lost += 1

    async def acquire_stream(
        self, subject: Subject, max_concurrent: int, scope: str = "*"
    ) -> Lease | Decision:
        """A slot among ``max_concurrent`` for the subject's streams, or the refusal (429,
        ``retry-after: 1``: when a stream ends cannot be known)."""
        key = f"{scope}/{subject.kind}/{key_id(subject)}"
        policy = policy_name("concurrent-requests", subject.kind, scope)
        lease = Lease(self, key, Decision.unlimited())
        result = await self._guard(
            self.store.acquire(key, max_concurrent, lease.id, self.settings.lease_ttl)
        )
        if result is DOWN:
            decision = self._degraded()
            if decision.unavailable:
                return decision
            lease.decision, lease.degraded = decision, True
            return lease
        granted, held = result
        if not granted:
            return Decision(False, max_concurrent, 0, 1.0, 1.0, policy, unit="concurrent-requests")
        lease.decision = Decision(
            True,
            max_concurrent,
            max_concurrent - held,
            0.0,
            None,
            policy,
            unit="concurrent-requests",
        )
        if self.store.shared:
            self._live[lease.id] = lease
            if self._refresher is None or self._refresher.done():
                self._refresher = asyncio.create_task(self._refresh(), name="ratelimit-leases")
        return lease

    async def peek_requests(self, rule: Rule) -> list[WindowState] | None:
        """Each window of a request rule as it stands, counting nothing (for the admin views,
        never the hot path); ``None`` when Redis cannot say."""
        windows = windows_of("req", rule.subject, rule.limit, rule.scope, "requests")
        usage = await self._guard(self.store.peek(windows))
        if usage is DOWN:
            return None
        return [
            WindowState(
                "requests",
                w.policy,
                w.limit,
                w.seconds,
                u.used,
                max(0, w.limit - u.used),
                max(0.0, u.reset_after),
            )
            for w, u in zip(windows, usage, strict=True)
        ]

    async def peek_tokens(self, rule: Rule) -> list[WindowState] | None:
        """Each window of a token rule: the sliding-window estimate used, what is left, and
        when it frees up (as a refusal would say); ``None`` when Redis cannot say."""
        windows = token_windows([rule], None, "*")
        usage = await self._guard(self.store.tokens(windows))
        if usage is DOWN:
            return None
        states = []
        for w, u in zip(windows, usage, strict=True):
            decision = token_decision([w], [u])
            used = math.floor(u.previous * u.closes_in / w.seconds + u.current)
            states.append(
                WindowState(
                    "tokens",
                    w.policy,
                    w.limit,
                    w.seconds,
                    used,
                    decision.remaining,
                    decision.reset_after if used else 0.0,
                )
            )
        return states

    async def peek_streams(
        self, subject: Subject, max_concurrent: int, scope: str = "*"
    ) -> WindowState | None:
        """The subject's stream slots in use under a cap, taking none; ``None`` when Redis
        cannot say."""
        held = await self._guard(self.store.held(f"{scope}/{subject.kind}/{key_id(subject)}"))
        if held is DOWN:
            return None
        policy = policy_name("concurrent-requests", subject.kind, scope)
        remaining = max(0, max_concurrent - held)
        return WindowState("concurrent-requests", policy, max_concurrent, 0, held, remaining, 0.0)

    async def close(self) -> None:
        """Stop refreshing and disconnect. Slots still held are not released: they expire
        after ``lease_ttl``, as they would if this instance had crashed."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        self._live.clear()
        await self.store.close()

    async def _release(self, lease: Lease) -> None:
        self._live.pop(lease.id, None)
        if not lease.degraded:
            await self._guard(self.store.release(lease.key, lease.id))  # else it expires

    async def _refresh(self) -> None:
        """Keep live Redis slots from expiring: every third of ``lease_ttl``, all in one call.
        A slot found gone (Redis restarted empty, or was away longer than the TTL) is put back,
        since its stream still runs; the cap may then be exceeded until streams end."""
        ttl = self.settings.lease_ttl
        while self._live:
            await asyncio.sleep(ttl / 3)
            leases = [(lease.key, lease.id) for lease in self._live.values()]
            if not leases:
                return
            restored = await self._guard(self.store.refresh(leases, ttl))
            if restored is DOWN:
                continue
            if restored:
                log.warning("rate limiter: put back %d stream slots that had expired", restored)
            # A lease released while the refresh was on its way may have been put back by it.
            for key, lease_id in leases:
                if lease_id not in self._live:
                    await self._guard(self.store.release(key, lease_id))

    async def _guard(self, call: Coroutine[Any, Any, T]) -> T | Literal[_Down.DOWN]:
        """``call``'s result, or ``DOWN`` when Redis failed, timed out or is being left alone."""
        if not self.store.shared:
            return await call
        now = time.monotonic()
        if now < self._skip_until:
            call.close()
            return DOWN
        health = self._health
        if health is not None and health.down_within(self.settings.redis_retry_interval):
            call.close()
            self._failed(ConnectionError("it just failed another client in this process"))
            return DOWN
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                result = await call
        except self.store.errors as exc:
            if health is not None:
                health.failed()
            self._failed(exc)
            return DOWN
        if health is not None:
            health.answered()
        if self._down_since is not None:
            log.warning(
                "rate limiter: Redis at %s is back after %.1f s; limits are enforced again "
                "(%d requests let through and %d refused meanwhile)",
                _redact(self.settings.redis_url),
                time.monotonic() - self._down_since,  # not ``now``: others failed meanwhile
                self.failures_open - self._counts_when_down[0],
                self.failures_closed - self._counts_when_down[1],
            )
            self._down_since = None
        return result

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()  # after the attempt, which may have used the whole timeout
        self._skip_until = now + self.settings.redis_retry_interval
        if self._down_since is None:
            self._down_since = now
            self._counts_when_down = (self.failures_open, self.failures_closed)
        if now < self._next_log:
            return
        self._next_log = now + _LOG_EVERY
        if self.settings.fail == "open":
            consequence = "failing OPEN: rate limits are NOT enforced"
            count = self.failures_open - self._counts_when_down[0]
            done = "let through unchecked"
        else:
            consequence = "failing CLOSED: requests are refused with 503"
            count = self.failures_closed - self._counts_when_down[1]
            done = "refused"
        down_for = now - self._down_since
        log.error(
            "rate limiter: Redis at %s unreachable (%s: %s); %s until it is back%s",
            _redact(self.settings.redis_url),
            type(exc).__name__,
            str(exc) or "no answer within redis_timeout",
            consequence,
            f" (down {down_for:.0f} s, {count} requests {done} so far)" if down_for > 0.5 else "",
        )

    def _degraded(self) -> Decision:
        if self.settings.fail == "open":
            self.failures_open += 1
            return Decision(True, 0, 0, 0.0, None, "", degraded=True)
        self.failures_closed += 1
        return Decision(False, 0, 0, 0.0, 1.0, "", unavailable=True)


def _redact(url: str | None) -> str:
    from tokenrelay.store.urls import redact_url  # the one URL masker (password, ?password=)

    return redact_url(url or "")
