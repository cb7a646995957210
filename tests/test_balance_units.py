"""Load balancing's pure parts: the strategies' orders, the groups a route forms, a provider's
key list expanded to one target per key, and the configuration errors."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from tokenrelay.balance import (
    Balancer,
    affinity_order,
    latency_order,
    least_busy_order,
    plan,
    prefix_digest,
    weighted_order,
)
from tokenrelay.balance_settings import GroupSettings
from tokenrelay.breaker import CircuitBreaker
from tokenrelay.cooldown import LocalCooldowns
from tokenrelay.inflight import LocalInFlight
from tokenrelay.latency import LocalLatencyStats
from tokenrelay.model import Message, Request, TextPart
from tokenrelay.settings import ConfigError, RouteSettings, TargetSettings, load

ENV = {"TOKENRELAY_PROVIDERS__OPENAI__API_KEY": "sk-test"}


def route_env(name: str, targets: list[dict[str, object]], **extra: str) -> dict[str, str]:
    """A route over the openai provider, which has one key unless the test gives a list."""
    env = {
        f"TOKENRELAY_ROUTES__{name.upper()}__TARGETS": msgspec.json.encode(targets).decode(),
    }
    env.update({f"TOKENRELAY_ROUTES__{name.upper()}__{k.upper()}": v for k, v in extra.items()})
    return env


def gpt(**fields: object) -> dict[str, object]:
    return {"provider": "openai", "model": "gpt-5.5", **fields}


def test_weighted_first_pick_follows_the_weights() -> None:
    rng = random.Random(5)
    firsts = Counter(weighted_order([5, 3, 2], rng)[0] for _ in range(20_000))
    for position, share in ((0, 0.5), (1, 0.3), (2, 0.2)):
        assert abs(firsts[position] / 20_000 - share) < 0.015


def test_weighted_order_holds_every_target_once() -> None:
    assert sorted(weighted_order([1, 1, 1, 1], random.Random(1))) == [0, 1, 2, 3]


def test_least_busy_takes_the_fewest_and_ties_in_turn() -> None:
    assert least_busy_order([3, 1, 2], 0) == [1, 2, 0]
    assert [least_busy_order([0, 0, 0], turn)[0] for turn in range(6)] == [0, 1, 2, 0, 1, 2]


def test_latency_measures_the_unmeasured_first_then_the_fastest() -> None:
    never = random.Random(0)
    assert latency_order([0.2, None, 0.05], 0.0, never) == ([1, 2, 0], False)
    assert latency_order([0.2, 0.1, 0.05], 0.0, never) == ([2, 1, 0], False)


def test_latency_explores_its_share() -> None:
    rng = random.Random(3)
    explored = sum(latency_order([0.01, 0.02, 0.03], 0.1, rng)[1] for _ in range(10_000))
    assert 800 < explored < 1200


def test_affinity_is_stable_and_moves_only_the_unhealthy_targets_share() -> None:
    names = ["d1:m", "d2:m", "d3:m"]
    prefixes = [f"system prompt {i}".encode() for i in range(300)]
    before = {p: affinity_order(p, names, [True] * 3)[0] for p in prefixes}
    assert {p: affinity_order(p, names, [True] * 3)[0] for p in prefixes} == before
    assert set(Counter(before.values())) == {0, 1, 2}  # spread over all three
    after = {p: affinity_order(p, names, [True, False, True])[0] for p in prefixes}
    for prefix in prefixes:
        if before[prefix] != 1:
            assert after[prefix] == before[prefix]  # only the unhealthy target's prefixes move
        else:
            assert after[prefix] in (0, 2)


def test_prefix_digest_reads_the_system_prompt_and_first_messages_only() -> None:
    def request(system: str, *texts: str) -> Request:
        messages = [Message("user", [TextPart(text)]) for text in texts]
        return Request(dialect="openai", model="x", messages=messages, system=system)

    assert prefix_digest(request("s", "a", "b"), 1) == prefix_digest(request("s", "a", "c"), 1)
    assert prefix_digest(request("s", "a"), 1) != prefix_digest(request("t", "a"), 1)
    assert prefix_digest(request("s", "a"), 1) != prefix_digest(request("s", "b"), 1)


def test_groups_are_runs_of_consecutive_targets() -> None:
    targets = [
        TargetSettings(provider="a", model="m", group="g"),
        TargetSettings(provider="b", model="m", group="g"),
        TargetSettings(provider="c", model="m"),
        TargetSettings(provider="d", model="m", group="h"),
    ]
    groups = plan(RouteSettings(targets=targets), targets)
    assert [(g.name, g.start, g.end, g.settings.strategy) for g in groups] == [
        ("g", 0, 2, "weighted"),
        ("h", 3, 4, "weighted"),
    ]
    assert plan(RouteSettings(targets=targets[2:3]), targets[2:3]) == ()


def test_a_key_list_becomes_one_grouped_target_per_key() -> None:
    env = {
        "TOKENRELAY_PROVIDERS__OPENAI__API_KEYS": "k1, k2",
        "TOKENRELAY_PROVIDERS__OPENAI__API_KEYS_ENV": "MORE_OPENAI_KEYS",
        "MORE_OPENAI_KEYS": "k3,k1",
        **route_env("r", [gpt(), {"provider": "openai", "model": "gpt-5.4-mini"}]),
    }
    settings = load(environ=env)
    assert [(t.provider, t.model, t.group) for t in settings.routes["r"].targets] == [
        ("openai#1", "gpt-5.5", "openai:gpt-5.5"),
        ("openai#2", "gpt-5.5", "openai:gpt-5.5"),
        ("openai#3", "gpt-5.5", "openai:gpt-5.5"),
        ("openai#1", "gpt-5.4-mini", "openai:gpt-5.4-mini"),
        ("openai#2", "gpt-5.4-mini", "openai:gpt-5.4-mini"),
        ("openai#3", "gpt-5.4-mini", "openai:gpt-5.4-mini"),
    ]
    keys = [settings.providers[f"openai#{i}"].resolved_key() for i in (1, 2, 3)]
    assert keys == ["k1", "k2", "k3"]
    assert settings.providers["openai"].resolved_key() == "k1"  # provider models by name


def test_keys_of_a_grouped_target_share_its_weight() -> None:
    env = {
        "TOKENRELAY_PROVIDERS__OPENAI__API_KEYS": '["k1", "k2"]',
        **route_env("r", [gpt(group="g", weight=4), {**gpt(group="g"), "provider": "azure"}]),
        "TOKENRELAY_PROVIDERS__AZURE__BASE_URL": "https://x.openai.azure.com",
        "TOKENRELAY_PROVIDERS__AZURE__API_KEY": "az",
    }
    targets = load(environ=env).routes["r"].targets
    assert [(t.provider, t.group, t.weight) for t in targets] == [
        ("openai#1", "g", 2.0),
        ("openai#2", "g", 2.0),
        ("azure", "g", 1.0),
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            route_env("r", [gpt(group="g"), {"provider": "openai", "model": "o3"}, gpt(group="g")]),
            "route 'r': the targets of group 'g' are not consecutive",
        ),
        (
            {
                **route_env("r", [gpt(group="g")]),
                "TOKENRELAY_ROUTES__R__GROUPS__H__STRATEGY": "latency",
            },
            "route 'r': groups.h configures a group no target names",
        ),
        (
            {
                **route_env("r", [gpt(group="g")]),
                "TOKENRELAY_ROUTES__R__GROUPS__G__STRATEGY": "fastest",
            },
            "strategy",
        ),
        (route_env("r", [gpt(group="g", weight=0)]), "weight"),
        (
            {**route_env("r", [gpt()]), "TOKENRELAY_PROVIDERS__OPENAI__API_KEYS": "k1,k2"},
            "providers.openai: set api_key or api_keys, not both",
        ),
        (
            {**route_env("r", [gpt(group="g")]), "TOKENRELAY_ROUTES__R__GROUPS__G__EXPLORE": "1"},
            "explore",
        ),
        (
            {"TOKENRELAY_PROVIDER_MODELS__GROUPS__G__STRATEGY": "latency"},
            "provider_models has no groups",
        ),
    ],
)
def test_configuration_errors_name_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(environ={**ENV, **env})


async def test_local_in_flight_counts_streams_and_releases_once() -> None:
    inflight = LocalInFlight()
    first, second = inflight.acquire("a"), inflight.acquire("a")
    assert await inflight.counts(["a", "b"]) == [2, 0]
    first()
    first()  # idempotent: the relay's finally may be reached twice
    assert await inflight.counts(["a"]) == [1]
    second()
    assert inflight.snapshot() == {"a": 0}


async def test_local_cooldowns_end_by_themselves() -> None:
    cooldowns = LocalCooldowns()
    cooldowns.cool("a", 30)
    cooldowns.cool("b", 0.000001)
    cooling = await cooldowns.cooling(["a", "b", "c"])
    assert list(cooling) == ["a"] and 29 < cooling["a"] <= 30


def test_recent_latency_is_the_median_of_the_last_observations() -> None:
    stats = LocalLatencyStats()
    assert stats.recent("t", 10) is None
    stats.observe("t", 0.5)
    assert stats.recent("t", 10) == 0.5  # one observation is enough to rank a target
    for _ in range(20):
        stats.observe("t", 0.01)
    for _ in range(6):
        stats.observe("t", 0.1)
    assert stats.recent("t", 10) == 0.1  # six slow of the last ten: the median moved


async def test_least_busy_counts_picks_still_waiting_for_their_first_token() -> None:
    targets = [TargetSettings(provider=p, model="m", group="g") for p in ("a", "b", "c")]
    settings = RouteSettings(targets=targets, groups={"g": GroupSettings(strategy="least_busy")})
    (group,) = plan(settings, targets)
    balancer = Balancer(LocalLatencyStats())
    keys, asked = ["a:m", "b:m", "c:m"], Request(dialect="openai", model="r", messages=[])
    balancer.inflight.acquire("a:m")  # one stream already in flight on a
    picks, holds = [], []
    for _ in range(4):  # a burst: none has its first token yet
        order, _, hold = await balancer.order("r", group, keys, [1, 1, 1], asked, CircuitBreaker())
        picks.append(keys[order[0][0]])
        assert hold is not None
        holds.append(hold)
    assert picks[:2] == ["b:m", "c:m"]  # not a while b and c had fewer
    load = [picks.count(key) + (key == "a:m") for key in keys]
    assert max(load) - min(load) <= 1, load  # the burst spread as if each were streaming
    for hold in holds:
        hold()
        hold()  # released once however often it is called
    order, _, _ = await balancer.order("r", group, keys, [1, 1, 1], asked, CircuitBreaker())
    assert keys[order[0][0]] != "a:m"  # only a's stream counts again
