"""The per-target circuit breaker, on a fake clock: opening, the window, the cooldown, the one
half-open probe and its outcomes, an abandoned probe, the disabled breaker, and the logs."""

from __future__ import annotations

import logging

import msgspec
import pytest

from tokenrelay.breaker import (
    BreakerSettings,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    LocalBreakerStore,
)

KEY = "anthropic:claude-sonnet-5-5"
OTHER = "openai:gpt-5.5"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    failures: int = 3, window: float = 10.0, cooldown: float = 5.0, enabled: bool = True
) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    settings = BreakerSettings(failures=failures, window=window, cooldown=cooldown, enabled=enabled)
    return CircuitBreaker(settings, clock=clock), clock


async def fail(breaker: CircuitBreaker, times: int, key: str = KEY) -> None:
    for _ in range(times):
        await breaker.failure(key)


async def open_circuit(breaker: CircuitBreaker) -> None:
    await fail(breaker, breaker.settings.failures)
    assert not await breaker.allow(KEY)


async def test_opens_after_k_failures_within_the_window() -> None:
    breaker, clock = make()
    await fail(breaker, 2)
    assert await breaker.allow(KEY)
    clock.now += 1
    await fail(breaker, 1)
    assert not await breaker.allow(KEY)
    assert await breaker.allow(OTHER)  # circuits are per target


async def test_failures_older_than_the_window_do_not_count() -> None:
    breaker, clock = make(failures=3, window=10.0)
    await fail(breaker, 2)
    clock.now += 10.0  # the first two are exactly a window old now
    await fail(breaker, 2)
    assert await breaker.allow(KEY)
    clock.now += 9.0
    await fail(breaker, 1)  # three within the last 10 s
    assert not await breaker.allow(KEY)


async def test_open_rejects_until_the_cooldown_passes() -> None:
    clock = Clock()
    settings = BreakerSettings(failures=3, cooldown=5.0)
    store = LocalBreakerStore(settings)
    breaker = CircuitBreaker(settings, store, clock)
    await open_circuit(breaker)
    opened_at = clock.now
    state = await store.state(KEY, clock.now)
    assert state == BreakerState("open", opened_at + 5.0)
    clock.now = opened_at + 4.999
    assert not await breaker.allow(KEY)
    clock.now = opened_at + 5.0
    assert await breaker.allow(KEY)


async def test_exactly_one_half_open_probe() -> None:
    breaker, clock = make()
    await open_circuit(breaker)
    clock.now += 5.0
    results = [await breaker.allow(KEY) for _ in range(5)]
    assert results == [True, False, False, False, False]
    assert (await breaker.snapshot())[KEY] == "half_open"


async def test_probe_success_closes_and_resets_the_count() -> None:
    breaker, clock = make(failures=3)
    await open_circuit(breaker)
    clock.now += 5.0
    assert await breaker.allow(KEY)
    await breaker.success(KEY)
    assert [await breaker.allow(KEY) for _ in range(3)] == [True, True, True]
    await fail(breaker, 2)  # the failures before opening are forgotten
    assert await breaker.allow(KEY)


async def test_probe_failure_reopens_for_a_full_cooldown() -> None:
    breaker, clock = make(failures=3, cooldown=5.0)
    await open_circuit(breaker)
    clock.now += 7.0
    assert await breaker.allow(KEY)
    clock.now += 2.0  # the probe took a while to fail
    await breaker.failure(KEY)
    reopened_at = clock.now
    clock.now = reopened_at + 4.999
    assert not await breaker.allow(KEY)
    clock.now = reopened_at + 5.0
    assert await breaker.allow(KEY)
    assert not await breaker.allow(KEY)


async def test_an_abandoned_probe_slot_expires() -> None:
    breaker, clock = make(cooldown=5.0)
    await open_circuit(breaker)
    clock.now += 5.0
    assert await breaker.allow(KEY)  # this probe's task is cancelled and never reports
    clock.now += 4.999
    assert not await breaker.allow(KEY)
    clock.now += 0.001
    assert await breaker.allow(KEY)  # a second probe
    assert not await breaker.allow(KEY)
    await breaker.success(KEY)
    assert (await breaker.snapshot())[KEY] == "closed"


async def test_late_reports_while_open_change_nothing() -> None:
    """Requests sent before the circuit opened report during the cooldown: ignored."""
    breaker, clock = make(cooldown=5.0)
    await open_circuit(breaker)
    opened_at = clock.now
    clock.now += 4.0
    await breaker.success(KEY)
    await fail(breaker, 5)
    assert (await breaker.snapshot())[KEY] == "open"
    clock.now = opened_at + 5.0  # the cooldown was not extended
    assert await breaker.allow(KEY)


async def test_disabled_breaker_never_opens(caplog: pytest.LogCaptureFixture) -> None:
    breaker, _clock = make(failures=1, enabled=False)
    with caplog.at_level(logging.INFO, logger="tokenrelay.breaker"):
        await fail(breaker, 20)
        assert all([await breaker.allow(KEY) for _ in range(5)])
        await breaker.success(KEY)
    assert caplog.records == []
    assert await breaker.snapshot() == {}


async def test_snapshot_names_each_targets_state() -> None:
    breaker, clock = make(failures=2, cooldown=5.0)
    assert await breaker.snapshot() == {}
    assert await breaker.allow(OTHER)
    await fail(breaker, 2, KEY)
    await fail(breaker, 2, "openai:gpt-5.4-mini")
    assert await breaker.snapshot() == {
        KEY: "open",
        "openai:gpt-5.4-mini": "open",
        OTHER: "closed",
    }
    clock.now += 5.0
    assert (await breaker.snapshot())[KEY] == "half_open"  # a probe may go; reading changes nothing
    assert await breaker.allow(KEY)
    await breaker.success(KEY)
    assert await breaker.snapshot() == {
        KEY: "closed",
        "openai:gpt-5.4-mini": "half_open",
        OTHER: "closed",
    }


async def test_warning_logged_once_per_opening(caplog: pytest.LogCaptureFixture) -> None:
    breaker, clock = make(failures=3, window=10.0, cooldown=5.0)
    with caplog.at_level(logging.INFO, logger="tokenrelay.breaker"):
        await fail(breaker, 6)  # three open it, three more land while open
        clock.now += 5.0
        assert await breaker.allow(KEY)
        await breaker.failure(KEY)  # the probe fails: same outage, reopened
        clock.now += 5.0
        assert await breaker.allow(KEY)
        await breaker.success(KEY)
        await fail(breaker, 3)  # a new outage
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"circuit for {KEY} opened after 3 failures in 10s; skipping it for 5s"
    ] * 2
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        f"circuit for {KEY}: the probe failed; skipping it for 5s",
        f"circuit for {KEY} closed: the probe succeeded",
    ]


async def test_local_store_satisfies_the_protocol() -> None:
    store: BreakerStore = LocalBreakerStore(BreakerSettings(failures=1, cooldown=5.0))
    assert await store.state(KEY, 0.0) == BreakerState("closed")
    assert await store.record_failure(KEY, 0.0) == "opened"
    assert await store.state(KEY, 1.0) == BreakerState("open", 5.0)
    assert await store.try_acquire(KEY, 5.0)
    assert await store.state(KEY, 6.0) == BreakerState("half_open", 10.0)
    assert await store.record_success(KEY, 6.0) == "closed"


def test_settings_decode_with_defaults_and_refuse_nonsense() -> None:
    assert msgspec.convert({}, BreakerSettings) == BreakerSettings(
        failures=5, window=30.0, cooldown=15.0, enabled=True
    )
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"failures": 0}, BreakerSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"cooldown": 0}, BreakerSettings)
