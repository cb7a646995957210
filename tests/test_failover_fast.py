"""The failover table (README "Failover"), in process: each row against ``FakeProvider`` scripts,
without a server, in milliseconds. The end-to-end tests of the same rows over loopback HTTP
against the simulator are tests/test_failover*.py and tests/test_hedging.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes import Delay, FakeProvider, Hang, Harness, done, error, request, route, text
from tokenrelay.failover import OpenStream, RouteFailed
from tokenrelay.model import Error, Event, TextDelta
from tokenrelay.router import Router
from tokenrelay.settings import load


def outcomes(stream_or_error: OpenStream | RouteFailed) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in stream_or_error.attempts]


async def rest(stream: OpenStream) -> list[Event]:
    """The events of a won stream: those read before it won, then the remainder."""
    events = list(stream.pending)
    async for batch in stream.events:
        events.extend(batch)
    return events


def answer(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_the_first_target_to_produce_content_is_served() -> None:
    primary = FakeProvider("primary", [text("hel"), text("lo"), done()])
    fallback = FakeProvider("fallback")
    stream = await Harness().failover(route(primary, fallback)).run()
    assert stream.provider is primary
    assert answer(await rest(stream)) == "hello"
    assert outcomes(stream) == [("primary", "ok")]
    assert fallback.calls == []


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 529])
async def test_a_retryable_status_is_retried_then_moves_on(status: int) -> None:
    primary = FakeProvider("primary", [error(status)])
    fallback = FakeProvider("fallback", [text("from fallback"), done()])
    stream = await Harness().failover(route(primary, fallback, retries=1)).run()
    assert stream.provider is fallback
    assert len(primary.calls) == 2  # the first try and one retry
    assert [o for _, o in outcomes(stream)][-1] == "ok"
    assert [p for p, _ in outcomes(stream)] == ["primary", "primary", "fallback"]


async def test_a_429_is_retried_on_the_same_target_when_it_recovers() -> None:
    primary = FakeProvider("primary", [error(429, retry_after=0.01)], [text("later"), done()])
    stream = await Harness().failover(route(primary, FakeProvider("fallback"))).run()
    assert stream.provider is primary
    assert outcomes(stream) == [("primary", "rate_limit"), ("primary", "ok")]


async def test_a_retry_after_beyond_the_budget_moves_on_at_once() -> None:
    primary = FakeProvider("primary", [error(429, retry_after=30.0)])
    fallback = FakeProvider("fallback")
    stream = await Harness().failover(route(primary, fallback, retries=3)).run()
    assert stream.provider is fallback
    assert len(primary.calls) == 1


async def test_an_error_event_before_any_content_moves_on() -> None:
    primary = FakeProvider("primary", [[], Delay(0.001), error(500, "api_error")])
    fallback = FakeProvider("fallback")
    stream = await Harness().failover(route(primary, fallback, retries=0)).run()
    assert stream.provider is fallback
    assert outcomes(stream) == [("primary", "api_error"), ("fallback", "ok")]


async def test_an_empty_stream_moves_on() -> None:
    primary = FakeProvider("primary", [])
    stream = await Harness().failover(route(primary, FakeProvider("b"), retries=0)).run()
    assert outcomes(stream) == [("primary", "upstream_unavailable"), ("b", "ok")]


async def test_an_error_after_the_first_content_is_the_streams_not_failovers() -> None:
    primary = FakeProvider("primary", [text("part"), error(500, "api_error")])
    fallback = FakeProvider("fallback")
    stream = await Harness().failover(route(primary, fallback)).run()
    events = await rest(stream)
    assert stream.provider is primary and fallback.calls == []
    assert answer(events) == "part"
    assert isinstance(events[-1], Error) and events[-1].status == 500


@pytest.mark.parametrize("status", [400, 413, 415, 422])
async def test_a_request_error_is_returned_at_once(status: int) -> None:
    primary = FakeProvider("primary", [error(status)])
    fallback = FakeProvider("fallback")
    with pytest.raises(RouteFailed) as raised:
        await Harness().failover(route(primary, fallback, retries=2)).run()
    assert raised.value.status == status
    assert len(primary.calls) == 1 and fallback.calls == []


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_credential_is_passed_over_without_a_retry(status: int) -> None:
    primary = FakeProvider("primary", [error(status)])
    fallback = FakeProvider("fallback")
    stream = await Harness().failover(route(primary, fallback, retries=2)).run()
    assert stream.provider is fallback
    assert outcomes(stream) == [("primary", "upstream_auth"), ("fallback", "ok")]


async def test_a_refused_credential_reaches_the_client_only_as_a_502() -> None:
    only = FakeProvider("only", [error(401)])
    with pytest.raises(RouteFailed) as raised:
        await Harness().failover(route(only)).run()
    assert raised.value.status == 502
    assert raised.value.type == "upstream_unavailable"  # about the gateway, not the client's key


async def test_a_missed_deadline_moves_on_at_once_and_closes_the_stream() -> None:
    primary = FakeProvider("primary", [Hang()])
    fallback = FakeProvider("fallback")
    failover = Harness().failover(route(primary, fallback, first_token_timeout=0.02, retries=2))
    stream = await failover.run()
    assert stream.provider is fallback
    assert outcomes(stream) == [("primary", "timeout"), ("fallback", "ok")]
    assert len(primary.calls) == 1 and primary.calls[0].closed


async def test_the_deadline_covers_the_first_content_not_the_whole_answer() -> None:
    slow = FakeProvider("slow", [text("first"), Delay(0.05), text(" then"), done()])
    stream = await Harness().failover(route(slow, first_token_timeout=0.02)).run()
    assert answer(await rest(stream)) == "first then"


async def test_the_last_target_is_retried_after_a_missed_deadline() -> None:
    released = asyncio.Event()
    last = FakeProvider("last", [Hang(released)], [text("second try"), done()])
    stream = await Harness().failover(route(last, first_token_timeout=0.02, retries=1)).run()
    assert outcomes(stream) == [("last", "timeout"), ("last", "ok")]
    assert not released.is_set() and last.calls[0].closed


async def test_the_budget_bounds_the_time_spent_failing() -> None:
    targets = [FakeProvider(name, [Hang()]) for name in "abcd"]
    failover = Harness().failover(route(*targets, first_token_timeout=0.03, budget=0.05))
    with pytest.raises(RouteFailed) as raised:
        await failover.run()
    assert raised.value.status == 504
    assert len(raised.value.attempts) == 2  # the second try was cut to what remained
    assert all(not p.calls for p in targets[2:])


async def test_an_open_circuit_skips_the_target_without_calling_it() -> None:
    harness = Harness()  # the breaker opens after 3 failures
    failing = FakeProvider("failing", [error(503)])
    fallback = FakeProvider("fallback")
    await harness.failover(route(failing, fallback, retries=1)).run()
    stream = await harness.failover(route(failing, fallback, retries=1)).run()
    assert len(failing.calls) == 3  # the third failure opened it: no retry
    assert [o for _, o in outcomes(stream)] == ["overloaded", "circuit_open", "ok"]
    stream = await harness.failover(route(failing, fallback, retries=1)).run()
    assert len(failing.calls) == 3  # not called again
    assert outcomes(stream) == [("failing", "circuit_open"), ("fallback", "ok")]


async def test_a_target_that_cannot_carry_the_request_is_skipped_untried() -> None:
    unable = FakeProvider("unable", refuse="'web_search' has no equivalent here")
    able = FakeProvider("able")
    stream = await Harness().failover(route(unable, able)).run()
    assert stream.provider is able and unable.calls == []
    assert outcomes(stream) == [("unable", "unsupported"), ("able", "ok")]


async def test_a_request_no_target_can_carry_is_a_400_naming_the_field() -> None:
    targets = [FakeProvider(name, refuse="'web_search' has no equivalent here") for name in "ab"]
    with pytest.raises(RouteFailed) as raised:
        await Harness().failover(route(*targets)).run()
    assert raised.value.status == 400 and raised.value.param == "tools"
    assert "web_search" in raised.value.message


async def test_an_outage_is_not_turned_into_a_client_error_by_an_unable_target() -> None:
    down = FakeProvider("down", [error(503)])
    unable = FakeProvider("unable", refuse="no equivalent")
    with pytest.raises(RouteFailed) as raised:
        await Harness().failover(route(down, unable, retries=0)).run()
    assert raised.value.status == 503
    assert "skipped as unable to carry this request" in raised.value.message


async def test_a_hedge_serves_the_faster_target_and_closes_the_slower() -> None:
    slow = FakeProvider("slow", [Delay(5.0), text("late"), done()])
    fast = FakeProvider("fast", [text("hedged"), done()])
    hedged = route(slow, fast, hedge=True, hedge_delay=0.01, first_token_timeout=1.0)
    stream = await Harness().failover(hedged).run()
    assert stream.provider is fast
    assert answer(await rest(stream)) == "hedged"
    assert sorted(outcomes(stream)) == [("fast", "ok"), ("slow", "hedged_out")]
    assert slow.calls[0].closed


async def test_no_hedge_starts_when_the_primary_answers_in_time() -> None:
    primary = FakeProvider("primary")
    backup = FakeProvider("backup")
    hedged = route(primary, backup, hedge=True, hedge_delay=0.05)
    stream = await Harness().failover(hedged).run()
    assert stream.provider is primary and backup.calls == []


async def test_a_hedge_is_not_sent_to_a_target_that_cannot_carry_the_request() -> None:
    slow = FakeProvider("slow", [Delay(0.02), text("slow but sure"), done()])
    unable = FakeProvider("unable", refuse="no equivalent")
    hedged = route(slow, unable, hedge=True, hedge_delay=0.001)
    stream = await Harness().failover(hedged).run()
    assert stream.provider is slow and unable.calls == []


async def test_the_router_resolves_a_name_and_walks_its_route() -> None:
    settings = load(environ={})
    providers = {
        "anthropic": FakeProvider("anthropic", [error(401)], kind="anthropic"),
        "openai": FakeProvider("openai", [text("routed"), done()]),
    }
    router = Router(settings, providers)
    asked = request("default")
    chosen = router.resolve(asked)
    assert [p.name for _, p in chosen.targets] == ["anthropic", "openai"]
    stream = await router.open_stream(chosen, asked, {})
    assert stream.provider is providers["openai"]
    endpoint = providers["anthropic"].calls[0].endpoint
    assert endpoint is not None and endpoint.url == "http://anthropic.invalid/v1/messages"


def test_a_provider_model_resolves_to_one_route_kept_for_its_name() -> None:
    """A provider model asked for by name is resolved once and kept (every request naming it
    gets the same route, as a configured route's do); a refused name is never kept."""
    from tokenrelay.model import GatewayError

    router = Router(load(environ={}), {"openai": FakeProvider("openai", [])})
    first = router.resolve(request("gpt-5.5"))
    again = router.resolve(request("gpt-5.5"))
    assert again is first and not first.configured
    assert [(t.provider, t.model) for t, _ in first.targets] == [("openai", "gpt-5.5")]
    assert router.resolve(request("gpt-5.4-mini")) is not first
    with pytest.raises(GatewayError) as refused:
        router.resolve(request("gpt-nope-not-allowed"))
    assert refused.value.status == 404
    with pytest.raises(GatewayError):
        router.resolve(request("gpt-nope-not-allowed"))  # refused again, not a kept route
    assert router.lookup("gpt-5.5") is first


def test_kept_provider_routes_stay_bounded_whatever_names_clients_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The names are the clients': an allow pattern admits endlessly many, so the kept routes
    are bounded (cleared when full), and a name still resolves after the clearing."""
    from tokenrelay import router as router_module

    monkeypatch.setattr(router_module, "MAX_PROVIDER_ROUTES", 8)
    router = Router(load(environ={}), {"openai": FakeProvider("openai", [])})
    for n in range(50):
        router.resolve(request(f"gpt-5.5-probe-{n}"))
        assert len(router._provider_routes) <= 8
    route = router.resolve(request("gpt-5.5-probe-0"))
    assert [(t.provider, t.model) for t, _ in route.targets] == [("openai", "gpt-5.5-probe-0")]
