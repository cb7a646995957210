"""Load balancing inside a route: the order in which one request tries the targets of a group.

A route's consecutive targets that name the same ``group`` are balanced by the group's
``strategy``; groups (and ungrouped targets, groups of one) fail over in route order as targets
always have. For each request a group's order is its strategy's pick first, then the rest of the
group as in-group fallbacks in the strategy's order, then any target cooling down after a 429:

- ``weighted``: at random, each target in proportion to its ``weight`` (weighted sampling
  without replacement, so the fallbacks follow the weights too);
- ``least_busy``: fewest streams in flight (``inflight``) plus this instance's picks still
  waiting for their first token (a burst would otherwise all see the same counts), ties taken in
  turn;
- ``latency``: lowest median time to first token over the last ``latency_window`` observations
  (``LatencyStats.recent``); a target with fewer is measured first, and ``explore`` of the
  requests go to another target, so a deployment that recovered is measured again;
- ``prefix_affinity``: a rendezvous (highest random weight) hash of the system prompt and the
  first ``affinity_messages`` messages over the targets whose breaker is not open and which are
  not cooling down, so one prefix lands on one deployment (its prompt cache hits) and moves only
  when that one becomes unhealthy, and then only that prefix's share moves.

The strategies are pure functions of what they are given (``random.Random`` injectable for
tests); ``Balancer`` gathers their inputs and counts what it served for the metrics.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

from tokenrelay.balance_settings import GroupSettings
from tokenrelay.cooldown import Cooldowns, LocalCooldowns
from tokenrelay.inflight import InFlight, LocalInFlight, Release

if TYPE_CHECKING:
    from tokenrelay.breaker import CircuitBreaker
    from tokenrelay.latency import LatencyStats
    from tokenrelay.model import Request
    from tokenrelay.settings import RouteSettings, TargetSettings
    from tokenrelay.shared_state import RedisLink

# Why a target has its place: the strategy's pick, another target when the latency strategy
# explores, or an in-group fallback after the pick.
Pick = Literal["weighted", "least_busy", "latency", "explore", "affinity", "fallback"]
_FIRST: dict[str, Pick] = {
    "weighted": "weighted",
    "least_busy": "least_busy",
    "latency": "latency",
    "prefix_affinity": "affinity",
}
_DEFAULT = GroupSettings()


@dataclass(frozen=True, slots=True)
class Group:
    """The targets ``start`` to ``end`` (excluded) of a route, balanced as one."""

    name: str
    settings: GroupSettings
    start: int
    end: int


def plan(settings: RouteSettings, targets: Sequence[TargetSettings]) -> tuple[Group, ...]:
    """A route's groups, in route order; empty when no target names one (then the route is
    walked exactly as an ungrouped route always was)."""
    groups: list[Group] = []
    index = 0
    while index < len(targets):
        name = targets[index].group
        end = index + 1
        while end < len(targets) and name is not None and targets[end].group == name:
            end += 1
        if name is not None:
            groups.append(Group(name, settings.groups.get(name, _DEFAULT), index, end))
        index = end
    return tuple(groups)


# --- the strategies, pure --------------------------------------------------------------------


def weighted_order(weights: Sequence[float], rng: random.Random) -> list[int]:
    """Positions in weighted random order without replacement (Efraimidis-Spirakis: the first
    is position ``i`` with probability ``weights[i] / sum(weights)``)."""
    keys = [rng.random() ** (1.0 / weight) for weight in weights]
    return sorted(range(len(weights)), key=keys.__getitem__, reverse=True)


def least_busy_order(counts: Sequence[int], turn: int) -> list[int]:
    """Positions by streams in flight, fewest first; ties in turn from ``turn``."""
    size = len(counts)
    return sorted(range(size), key=lambda i: (counts[i], (i - turn) % size))


def latency_order(
    medians: Sequence[float | None], explore: float, rng: random.Random
) -> tuple[list[int], bool]:
    """Positions by recent median time to first token, unmeasured ones first; with probability
    ``explore`` another position is moved to the front. Also whether it was."""
    order = sorted(
        range(len(medians)),
        key=lambda i: (medians[i] is not None, medians[i] or 0.0, i),
    )
    if len(order) > 1 and explore > 0 and rng.random() < explore:
        chosen = order.pop(rng.randrange(1, len(order)))
        order.insert(0, chosen)
        return order, True
    return order, False


def affinity_order(prefix: bytes, names: Sequence[str], healthy: Sequence[bool]) -> list[int]:
    """Positions by rendezvous hash of ``prefix`` with each target's name, healthy ones first:
    the same prefix always puts the same healthy target first."""

    def score(i: int) -> tuple[bool, bytes]:
        digest = hashlib.blake2b(prefix + names[i].encode(), digest_size=8).digest()
        return healthy[i], digest

    return sorted(range(len(names)), key=score, reverse=True)


def prefix_digest(request: Request, messages: int) -> bytes:
    """What prefix affinity hashes: the system prompt and the first ``messages`` messages."""
    encoded = msgspec.json.encode([request.system or "", request.messages[:messages]])
    return hashlib.blake2b(encoded, digest_size=16).digest()


# --- gathering the inputs --------------------------------------------------------------------


class Balancer:
    """Orders a group's targets for one request, and counts what each group served."""

    def __init__(
        self,
        latency: LatencyStats,
        inflight: InFlight | None = None,
        cooldowns: Cooldowns | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.latency = latency
        self.inflight: InFlight = inflight if inflight is not None else LocalInFlight()
        self.cooldowns: Cooldowns = cooldowns if cooldowns is not None else LocalCooldowns()
        self.rng = rng if rng is not None else random.Random()
        self._turns: dict[tuple[str, str], int] = {}
        self._starting: dict[str, int] = {}  # least_busy picks not yet streaming, per target
        # (route, group, target, pick) -> streams served: tokenrelay_balance_picks_total
        self.picks: dict[tuple[str, str, str, str], int] = {}

    @classmethod
    def shared(cls, link: RedisLink, latency: LatencyStats) -> Balancer:
        """With its in-flight counts and 429 cool-downs shared through Redis (``redis_url``)."""
        from tokenrelay.cooldown import RedisCooldowns
        from tokenrelay.inflight import RedisInFlight

        return cls(latency, RedisInFlight(link), RedisCooldowns(link))

    async def order(
        self,
        route: str,
        group: Group,
        keys: Sequence[str],
        weights: Sequence[float],
        request: Request,
        breaker: CircuitBreaker,
    ) -> tuple[list[tuple[int, Pick]], dict[str, float], Release | None]:
        """The group's positions in the order to try them, each with why; the targets cooling
        down, with the seconds left (they come last, and are skipped when reached); and, for
        least_busy, the pick's hold, to release once its stream is counted or it failed."""
        settings = group.settings
        strategy = settings.strategy
        cooling = await self.cooldowns.cooling(keys)
        first = _FIRST[strategy]
        if strategy == "weighted":
            order = weighted_order(weights, self.rng)
        elif strategy == "least_busy":
            turn_key = (route, group.name)
            turn = self._turns.get(turn_key, 0)
            self._turns[turn_key] = turn + 1
            counts = await self.inflight.counts(keys)
            starting = self._starting
            if starting:
                counts = [n + starting.get(key, 0) for n, key in zip(counts, keys, strict=True)]
            order = least_busy_order(counts, turn)
        elif strategy == "latency":
            window = settings.latency_window
            medians = [self.latency.recent(key, window) for key in keys]
            order, explored = latency_order(medians, settings.explore, self.rng)
            if explored:
                first = "explore"
        else:
            healthy = [key not in cooling and not await breaker.is_open(key) for key in keys]
            digest = prefix_digest(request, settings.affinity_messages)
            order = affinity_order(digest, keys, healthy)
        if cooling:
            order = [i for i in order if keys[i] not in cooling] + [
                i for i in order if keys[i] in cooling
            ]
        hold = self._hold(keys[order[0]]) if strategy == "least_busy" else None
        return [(i, first if n == 0 else "fallback") for n, i in enumerate(order)], cooling, hold

    def _hold(self, key: str) -> Release:
        """Count a least_busy pick until its stream is counted in flight (or it failed)."""
        starting = self._starting
        starting[key] = starting.get(key, 0) + 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                left = starting[key] - 1
                if left:
                    starting[key] = left
                else:
                    del starting[key]

        return release

    def served(self, route: str, group: str, target: str, pick: str) -> None:
        """A stream of ``target`` won in ``group``; counted once per stream."""
        key = (route, group, target, pick)
        self.picks[key] = self.picks.get(key, 0) + 1
