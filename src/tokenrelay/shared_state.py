"""Circuit-breaker state and time-to-first-token statistics shared by every gateway instance that
points at the same Redis (``redis_url``), so that when one instance sees a provider fail, all of
them stop sending it traffic within half a second, and hedging's percentile pools every
instance's answers instead of each learning alone.

The rate limits are shared by ``ratelimit.shared``; this module is the rest of the issue and uses
its own client (its own small pool, the same ``limits.redis_timeout`` and
``limits.redis_retry_interval``), so a slow limiter call never queues a breaker decision.

Redis data, under ``limits.key_prefix`` (``tokenrelay``):

- ``tokenrelay:breaker:{provider:model}``, a hash: ``state`` (``closed`` / ``open`` /
  ``half_open``), ``until`` (end of the cooldown, or expiry of the outstanding probe's slot, in
  Unix seconds) and, while closed, ``failures`` (the recent failures' Unix times, at most
  ``breaker.failures - 1`` of them). No key means closed with no recent failure. A closed hash
  expires ``window`` seconds after its last failure, an open or half-open one ``RETENTION``
  seconds after its deadline; a probe's success deletes it. The braces are a Redis Cluster hash
  tag, harmless on a single server.
- ``tokenrelay:ttft:{provider:model}``, a list: the last 256 times to first token (seconds, newest
  first) of every instance, expiring a day after the last one.

Each breaker step (the ``BreakerStore`` protocol) is one Lua script, so one round trip and atomic
across instances. Times are the callers' wall clocks (``time.time``), so instances need
synchronised clocks (NTP), as the rate limits' windows do; a skew of s seconds moves that
instance's view of a cooldown's end by s seconds.

What the request path pays: a closed circuit is remembered for at most ``MAX_STALE`` (0.5 s), so
``allow`` and ``success`` are a dict lookup nearly always and one round trip per target per half
second otherwise; an open circuit is remembered until its cooldown ends (nothing can close it
earlier: only a probe closes, and none goes before then). A failure is always one round trip, and
it answers whether it opened the circuit. TTFT observations are sent in a batch every 100 ms and
the pooled samples read back every second by a background task, so ``observe`` and ``quantile``
never wait for Redis. Measured with a loopback Redis: a memo hit adds under 1 µs to the
breaker and statistics calls, a round trip is 0.2-0.3 ms, and on average a request pays 25 µs
more than in process at 50 requests/s, 2 µs more at 1000/s.

When Redis fails or does not answer within ``redis_timeout``, the shared state falls back to this
process, loudly (one ERROR line per outage) and without raising into any request: the breaker
goes on with a ``LocalBreakerStore`` that starts with the circuits known to be open, and the
percentile with this instance's own observations. The background task pings Redis every
``redis_retry_interval``; when it answers, sharing resumes and what was learnt locally during the
outage is discarded (it concerned one instance only; the shared state is the truth again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tokenrelay.breaker import (
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    LocalBreakerStore,
    StateName,
    Transition,
)
from tokenrelay.latency import LocalLatencyStats, median_of_last, quantile_of
from tokenrelay.ratelimit.shared import redis_client, redis_health

if TYPE_CHECKING:
    from tokenrelay.settings import Settings

log = logging.getLogger("tokenrelay.shared_state")

T = TypeVar("T")

MAX_STALE = 0.5  # seconds a closed circuit is believed without asking Redis
RETENTION = 3600.0  # seconds an open circuit nobody asks about outlives its deadline
FLUSH_EVERY = 0.1  # seconds between two batches of TTFT observations sent
REFRESH_EVERY = 1.0  # seconds between two reads of the pooled TTFT samples
TTFT_TTL = 86_400  # seconds a target's samples outlive its last observation
MAX_CONNECTIONS = 32  # per instance; the memo and the single flight keep the need small
_MAX_KEYS = 4096  # targets remembered locally; beyond, the memo starts afresh
_STATES: dict[str, StateName] = {"closed": "closed", "open": "open", "half_open": "half_open"}
_TRANSITIONS: dict[str, Transition] = {"opened": "opened", "reopened": "reopened"}


# What a try_acquire call on its way tells the calls that wait for it (see ``try_acquire``).
_Verdict = Literal["closed", "refused", "down", "lost"]


class _Down(Enum):
    DOWN = "down"


DOWN = _Down.DOWN

# Shared by the scripts: '%.17g' keeps a float exact through the string (Lua numbers returned to
# Redis would be truncated to integers, so times travel as strings).
_LUA_OPEN = """
local function fmt(x) return string.format('%.17g', x) end
local function open(key, now, cooldown, retention, transition)
    local till = fmt(now + cooldown)
    redis.call('HSET', key, 'state', 'open', 'until', till)
    redis.call('HDEL', key, 'failures')
    redis.call('PEXPIRE', key, math.ceil((cooldown + retention) * 1000))
    return {transition, 'open', till}
end
"""

# KEYS[1]: the circuit. ARGV: now. Returns {state, until or ''}, changing nothing.
_STATE = """
local s = redis.call('HMGET', KEYS[1], 'state', 'until')
if not s[1] or s[1] == 'closed' then return {'closed', ''} end
if tonumber(ARGV[1]) >= tonumber(s[2]) then return {'half_open', ''} end
return {s[1], s[2]}
"""

# ARGV: now, cooldown, retention. Returns {0 refused / 1 closed / 2 the probe, state, until}.
_TRY_ACQUIRE = (
    _LUA_OPEN
    + """
local s = redis.call('HMGET', KEYS[1], 'state', 'until')
if not s[1] or s[1] == 'closed' then return {1, 'closed', ''} end
local now = tonumber(ARGV[1])
if now < tonumber(s[2]) then return {0, s[1], s[2]} end
local cooldown = tonumber(ARGV[2])
local till = fmt(now + cooldown)
redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', till)
redis.call('PEXPIRE', KEYS[1], math.ceil((cooldown + tonumber(ARGV[3])) * 1000))
return {2, 'half_open', till}
"""
)

# Returns {transition or '', state, until or ''}. A success that is not a half-open circuit's
# changes nothing (a request sent before the circuit opened).
_SUCCESS = """
local s = redis.call('HMGET', KEYS[1], 'state', 'until')
if s[1] ~= 'half_open' then return {'', s[1] or 'closed', s[2] or ''} end
redis.call('DEL', KEYS[1])
return {'closed', 'closed', ''}
"""

# ARGV: now, failures, window, cooldown, retention. Returns {transition or '', state, until}.
_FAILURE = (
    _LUA_OPEN
    + """
local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'failures')
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[4])
local retention = tonumber(ARGV[5])
if s[1] == 'half_open' then return open(KEYS[1], now, cooldown, retention, 'reopened') end
if s[1] == 'open' then return {'', 'open', s[2]} end
local window = tonumber(ARGV[3])
local kept = {}
if s[3] then
    for t in string.gmatch(s[3], '%S+') do
        if tonumber(t) > now - window then kept[#kept + 1] = t end
    end
end
kept[#kept + 1] = ARGV[1]
if #kept >= tonumber(ARGV[2]) then return open(KEYS[1], now, cooldown, retention, 'opened') end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', table.concat(kept, ' '))
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return {'', 'closed', ''}
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLink:
    """The shared state's Redis client, and whether Redis is usable now.

    ``run`` bounds each call by ``timeout`` and turns any failure into ``DOWN``, so a caller on
    the request path never sees an exception; the first failure of an outage is logged once, at
    ERROR. While Redis is down nothing is sent: with a watcher (``SharedState``'s background
    task, which pings every ``retry_interval``) requests never pay a timeout again; without one,
    the first call after ``retry_interval`` tries Redis. A failure the rate limiter's client saw
    within ``retry_interval`` counts as this link's own (``RedisHealth``), so a request that
    has just waited for a hung Redis in the limiter does not wait for it again here.
    ``listeners`` hear every change, with ``True`` when Redis is back."""

    def __init__(self, url: str, *, timeout: float, retry_interval: float, prefix: str) -> None:
        self.url = url
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.prefix = prefix
        self.client = redis_client(url, timeout, MAX_CONNECTIONS)  # see there: the pool blocks
        self.health = redis_health(url)
        self.up = True
        self.outages = 0  # a metric: how many times Redis went away
        self.watched = False
        self.retry_at = 0.0  # time.monotonic() after which Redis may be tried again
        self.listeners: list[Callable[[bool], None]] = []
        self._down_since = 0.0

    async def run(self, call: Coroutine[Any, Any, T]) -> T | Literal[_Down.DOWN]:
        """``call``'s result, or ``DOWN`` when Redis is down, failed or was too slow."""
        if not self.up and (self.watched or time.monotonic() < self.retry_at):
            call.close()
            return DOWN
        if self.health.down_within(self.retry_interval):
            call.close()
            self._failed(ConnectionError("it just failed another client in this process"))
            return DOWN
        return await self._attempt(call)

    async def probe(self) -> bool:
        """A ``PING`` whatever the state (the watcher's); ``True`` when Redis answered."""
        return await self._attempt(self.client.ping()) is not DOWN

    async def _attempt(self, call: Awaitable[T]) -> T | Literal[_Down.DOWN]:
        try:
            async with asyncio.timeout(self.timeout):
                result = await call
        except Exception as exc:  # never into a request: any failure means "use the local state"
            self.health.failed()
            self._failed(exc)
            return DOWN
        self.health.answered()
        if not self.up:
            self._recovered()
        return result

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self.retry_at = now + self.retry_interval
        if not self.up:
            return
        self.up = False
        self.outages += 1
        self._down_since = now
        log.error(
            "shared state: Redis at %s unreachable (%s: %s); circuit breakers and TTFT "
            "statistics are LOCAL to this instance until it is back: a provider failing "
            "elsewhere is no longer skipped here",
            _redact(self.url),
            type(exc).__name__,
            str(exc) or f"no answer within {self.timeout:g} s",
        )
        self._tell(False)

    def _recovered(self) -> None:
        self.up = True
        log.warning(
            "shared state: Redis at %s is back after %.1f s; circuit breakers and TTFT "
            "statistics are shared again (local state from the outage is discarded)",
            _redact(self.url),
            time.monotonic() - self._down_since,
        )
        self._tell(True)

    def _tell(self, up: bool) -> None:
        for listener in self.listeners:
            listener(up)


class RedisBreakerStore:
    """``BreakerStore`` in Redis: one Lua script per step, a short local memo of each circuit so
    that asking about a healthy target costs no round trip, and a ``LocalBreakerStore`` that
    takes over while Redis is down.

    The memo keeps what the last reply said: closed for ``max_stale`` seconds (at most half the
    cooldown, so a circuit opened elsewhere is seen within ``max_stale`` and never skips its
    half-open step here); open until the cooldown's end, which no other instance can bring
    forward; half-open for ``max_stale`` at most, since another instance's probe may close it.
    A success on a circuit last seen closed is not sent: only a half-open circuit's success
    changes anything, and a request let through a closed circuit is not the probe."""

    def __init__(
        self,
        link: RedisLink,
        settings: BreakerSettings,
        *,
        max_stale: float = MAX_STALE,
        retention: float = RETENTION,
    ) -> None:
        self._link = link
        self._settings = settings
        self._prefix = f"{link.prefix}:breaker:"
        self._closed_for = min(max_stale, settings.cooldown / 2)
        self._retention = retention
        self._known: dict[str, tuple[StateName, float]] = {}  # key → (state, believed until)
        self._flights: dict[str, asyncio.Future[_Verdict]] = {}  # try_acquire calls under way
        self.local = LocalBreakerStore(settings)
        self.local_calls = 0  # a metric: breaker steps taken without Redis
        client = link.client
        self._state = client.register_script(_STATE)
        self._try_acquire = client.register_script(_TRY_ACQUIRE)
        self._success = client.register_script(_SUCCESS)
        self._failure = client.register_script(_FAILURE)
        link.listeners.append(self._redis_changed)

    def redis_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    async def state(self, key: str, now: float) -> BreakerState:
        reply = await self._link.run(self._state(keys=[self.redis_key(key)], args=[now]))
        if reply is DOWN:
            self.local_calls += 1
            return await self.local.state(key, now)
        name, till = (_text(part) for part in reply)
        return BreakerState(_STATES.get(name, "closed"), float(till) if till else None)

    async def try_acquire(self, key: str, now: float) -> bool:
        known = self._known.get(key)
        if known is not None and now < known[1]:
            return known[0] == "closed"
        flight = self._flights.get(key)
        if flight is not None:
            # A call for this target is on its way: its answer is ours, so a burst of requests
            # when the memo lapses costs one round trip, not one each. Shielded: a waiter whose
            # request is cancelled must not cancel the others' answer.
            told = await asyncio.shield(flight)
            if told == "closed":
                return True
            if told == "refused":  # open, or half-open with the probe taken (maybe by it)
                return False
            if told == "down":
                self.local_calls += 1
                return await self.local.try_acquire(key, now)
            return await self.try_acquire(key, now)  # the call was cancelled: ask again
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        verdict: _Verdict = "lost"
        try:
            reply = await self._link.run(
                self._try_acquire(
                    keys=[self.redis_key(key)],
                    args=[now, self._settings.cooldown, self._retention],
                )
            )
            if reply is DOWN:
                verdict = "down"
                self.local_calls += 1
                return await self.local.try_acquire(key, now)
            granted, state, till = reply
            self._learn(key, _text(state), _text(till), now)
            verdict = "closed" if granted == 1 else "refused"
            return bool(granted)
        finally:
            del self._flights[key]
            flight.set_result(verdict)

    async def record_success(self, key: str, now: float) -> Transition | None:
        known = self._known.get(key)
        if known is not None and known[0] == "closed":
            return None
        reply = await self._link.run(self._success(keys=[self.redis_key(key)], args=[now]))
        if reply is DOWN:
            self.local_calls += 1
            return await self.local.record_success(key, now)
        transition, state, till = (_text(part) for part in reply)
        self._learn(key, state, till, now)
        return "closed" if transition == "closed" else None

    async def record_failure(self, key: str, now: float) -> Transition | None:
        s = self._settings
        args = [now, s.failures, s.window, s.cooldown, self._retention]
        reply = await self._link.run(self._failure(keys=[self.redis_key(key)], args=args))
        if reply is DOWN:
            self.local_calls += 1
            return await self.local.record_failure(key, now)
        transition, state, till = (_text(part) for part in reply)
        self._learn(key, state, till, now)
        return _TRANSITIONS.get(transition)

    def _learn(self, key: str, state: str, till: str, now: float) -> None:
        if state == "open":
            entry: tuple[StateName, float] = ("open", float(till))
        elif state == "half_open":
            entry = ("half_open", min(float(till), now + self._closed_for))
        else:
            entry = ("closed", now + self._closed_for)
        if len(self._known) >= _MAX_KEYS and key not in self._known:
            self._known.clear()
        self._known[key] = entry

    def _redis_changed(self, up: bool) -> None:
        if up:
            if self.local_calls:
                log.info(
                    "circuit breaker: back on Redis; the local state of the outage is discarded "
                    "(%d steps were taken locally so far)",
                    self.local_calls,
                )
            self.local = LocalBreakerStore(self._settings)
        else:
            # What was known to be open stays open locally: Redis going away must not send
            # traffic back to a provider every instance had given up on.
            self.local = LocalBreakerStore(self._settings)
            for key, (state, till) in self._known.items():
                if state == "open":
                    self.local.hold_open(key, till)
        self._known.clear()


class RedisLatencyStats:
    """``LatencyStats`` pooled in Redis. ``observe`` and ``quantile`` never touch the network:
    observations wait in a batch that ``flush`` sends (one pipeline: LPUSH, LTRIM and EXPIRE per
    target), and quantiles are read from the pooled samples ``refresh`` fetches (one pipeline of
    LRANGE over the targets this instance observed or was asked about). Until a target's first
    refresh, and while Redis is down, this instance's own observations answer."""

    def __init__(self, link: RedisLink, window: int = 256, ttl: int = TTFT_TTL) -> None:
        self._link = link
        self._window = window
        self._ttl = ttl
        self._prefix = f"{link.prefix}:ttft:"
        self.local = LocalLatencyStats(window)
        self._pending: dict[str, list[float]] = {}
        self._watched: set[str] = set()
        self._pooled: dict[str, list[float]] = {}  # key → every instance's samples, sorted
        self._newest: dict[str, list[float]] = {}  # key → the same, oldest first
        self._cache: dict[tuple[str, float], float] = {}
        self.dropped = 0  # a metric: observations that never reached Redis
        link.listeners.append(self._redis_changed)

    def redis_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    def observe(self, key: str, seconds: float) -> None:
        self.local.observe(key, seconds)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = []
            self._watch(key)
        if len(pending) < self._window:  # more would be trimmed away at once anyway
            pending.append(seconds)
        else:
            self.dropped += 1

    def quantile(self, key: str, q: float, min_samples: int) -> float | None:
        pooled = self._pooled.get(key)
        if pooled is None:
            self._watch(key)
            return self.local.quantile(key, q, min_samples)
        if len(pooled) < min_samples:
            return None
        value = self._cache.get((key, q))
        if value is None:
            value = self._cache[(key, q)] = quantile_of(pooled, q)
        return value

    def recent(self, key: str, count: int) -> float | None:
        newest = self._newest.get(key)
        if newest is None:
            self._watch(key)
            return self.local.recent(key, count)
        return median_of_last(newest, count) if newest else None

    async def flush(self) -> None:
        """Send the observations made since the last flush."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        pipe = self._link.client.pipeline(transaction=False)
        for key, values in pending.items():
            name = self.redis_key(key)
            pipe.lpush(name, *values)
            pipe.ltrim(name, 0, self._window - 1)
            pipe.expire(name, self._ttl)
        if await self._link.run(pipe.execute()) is DOWN:
            self.dropped += sum(len(values) for values in pending.values())

    async def refresh(self) -> None:
        """Fetch every instance's samples of the targets this instance cares about."""
        keys = list(self._watched)
        if not keys:
            return
        pipe = self._link.client.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(self.redis_key(key), 0, self._window - 1)
        replies = await self._link.run(pipe.execute())
        if replies is DOWN:
            return
        self._newest = {
            key: [float(value) for value in reversed(values)]
            for key, values in zip(keys, replies, strict=True)
        }
        self._pooled = {key: sorted(values) for key, values in self._newest.items()}
        self._cache.clear()

    def _watch(self, key: str) -> None:
        if len(self._watched) >= _MAX_KEYS:
            return
        self._watched.add(key)

    def _redis_changed(self, up: bool) -> None:
        # Down: answer from this instance's observations, which kept being made all along. Up:
        # the next refresh brings the pooled samples back. Batches were dropped meanwhile.
        self._pooled = {}
        self._newest = {}
        self._cache.clear()
        if not up:
            self.dropped += sum(len(values) for values in self._pending.values())
            self._pending = {}


class SharedState:
    """The Redis link, the breaker and the latency statistics that use it, and the background
    task that flushes and refreshes the statistics and watches Redis while it is down."""

    def __init__(
        self,
        url: str,
        breaker: BreakerSettings,
        *,
        timeout: float = 0.25,
        retry_interval: float = 1.0,
        prefix: str = "tokenrelay",
    ) -> None:
        self.link = RedisLink(url, timeout=timeout, retry_interval=retry_interval, prefix=prefix)
        self.store = RedisBreakerStore(self.link, breaker)
        # The shared store needs the clock every instance shares.
        self.breaker = CircuitBreaker(breaker, self.store, clock=time.time)
        self.latency = RedisLatencyStats(self.link)
        self._task: asyncio.Task[None] | None = None

    @property
    def outages(self) -> int:
        """Times Redis went away (a metric)."""
        return self.link.outages

    @property
    def local_steps(self) -> int:
        """Breaker steps taken without Redis, its local fallback (a metric)."""
        return self.store.local_calls

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedState:
        limits = settings.limits
        assert settings.redis_url is not None
        return cls(
            settings.redis_url,
            settings.breaker,
            timeout=limits.redis_timeout,
            retry_interval=max(limits.redis_retry_interval, FLUSH_EVERY),
            prefix=limits.key_prefix,
        )

    def start(self) -> None:
        """Start the background task (on the running loop). Nothing connects yet."""
        if self._task is None:
            self.link.watched = True
            self._task = asyncio.create_task(self._run(), name="shared-state")

    async def close(self) -> None:
        """Stop the task, send the last observations if Redis is up, and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.link.watched = False
        if self.link.up:
            await self.latency.flush()
        await self.link.client.aclose()

    async def _run(self) -> None:
        next_refresh = 0.0
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                now = time.monotonic()
                if not self.link.up:
                    if now >= self.link.retry_at:
                        await self.link.probe()
                    continue
                await self.latency.flush()
                if now >= next_refresh:
                    next_refresh = now + REFRESH_EVERY
                    await self.latency.refresh()
            except Exception:  # a bug here must not stop the sharing for good
                log.exception("shared state: the background task failed; it goes on")


def _redact(url: str) -> str:
    from tokenrelay.store.urls import redact_url  # the one URL masker (password, ?password=)

    return redact_url(url)
