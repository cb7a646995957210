"""A route's guard, built once from its settings, and what it does to one request: mask or
refuse the personal data before the upstream, then filter the answer's events (output rules,
then placeholders restored) on their way to the writer.

A request with nothing to do gets no ``RequestGuard``: the relay then pays nothing per event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from tokenrelay.guard.mask import Masker, blocked, types_found
from tokenrelay.guard.output import CANARY, OutputGuard, OutputRules
from tokenrelay.model import Event, GatewayError, Request

if TYPE_CHECKING:
    from tokenrelay.guard.mask import Finder
    from tokenrelay.guard.rehydrate import RestoreFlow
    from tokenrelay.guard.settings import GuardSettings

log = logging.getLogger("tokenrelay.guard")


class GuardRefused(GatewayError):
    """The guard refused a request before the upstream (recorded as ``rejected`` with its
    ``reason``); ``counts`` are the entity types found, never the values."""

    def __init__(self, error: GatewayError, counts: dict[str, int] | None = None) -> None:
        super().__init__(
            error.type,
            error.message,
            error.status,
            retry_after=error.retry_after,
            reason=error.reason,
        )
        self.counts = counts or {}


class PiiRefused(GuardRefused):
    """``pii = "block"`` found personal data: a 400 naming the types."""

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__(blocked(sorted(counts)), counts)


class ExternalFinder(Protocol):
    async def find(self, text: str) -> list[Any]: ...
    async def aclose(self) -> None: ...


def build_detector(settings: GuardSettings) -> tuple[Finder, int | None]:
    """The built-in detector of the route's entity types and custom patterns, and the longest
    value it can match (None when a custom pattern is unbounded)."""
    from tokenrelay.guard.detectors import Detector

    detector = (
        Detector(settings.entities, settings.custom)
        if settings.entities is not None
        else Detector(custom=settings.custom)
    )
    return detector, detector.max_match_chars


def build_external(settings: GuardSettings) -> ExternalFinder:
    """The route's external detector; an entry point that cannot be loaded becomes one that
    fails every call as ``fail`` says (the settings checked the rest at load)."""
    from tokenrelay.guard.external import ExternalDetector, UnloadableDetector

    external = settings.external
    try:
        return ExternalDetector(
            url=external.url,
            entry_point=external.entry_point,
            timeout=external.timeout,
            fail=external.fail,
            entities=settings.entities,
        )
    except Exception as error:  # the operator's module: its import may raise anything
        return UnloadableDetector(external.fail, f"{type(error).__name__}: {error}")


def unavailable() -> GatewayError:
    """The refusal when the external detector cannot answer and the route fails closed."""
    return GatewayError(
        "upstream_unavailable",
        "this route's personal-data detector did not answer and the route is set to fail "
        "closed, so the request was not sent; retry shortly",
        503,
        retry_after=1,
        reason="guard_detector",
    )


class RouteGuard:
    """One route's detectors and output rules, compiled at its first request."""

    def __init__(self, settings: GuardSettings) -> None:
        self.settings = settings
        needs_detector = settings.pii != "off" or settings.output.secrets
        self.detector: Finder | None = None
        longest: int | None = None
        if needs_detector:
            self.detector, longest = build_detector(settings)
        self.external = (
            build_external(settings)
            if settings.pii != "off" and settings.external.configured
            else None
        )
        self._longest = longest
        self._rules = OutputRules(settings.output, self.detector, longest)
        self._canary_rules: dict[str, OutputRules] = {}

    def rules(self, canary: str | None) -> OutputRules:
        """The output rules, plus the route's canary when the screen put one in the prompt."""
        if canary is None or not self.settings.output.canary:
            return self._rules
        rules = self._canary_rules.get(canary)
        if rules is None:
            rules = self._canary_rules[canary] = OutputRules(
                self.settings.output,
                self.detector,
                self._longest,
                canary,
            )
        return rules

    async def begin(self, request: Request, canary: str | None) -> RequestGuard | None:
        """Mask ``request`` in place (or refuse it) and the guard of its answer; None when there
        is nothing to watch or restore."""
        counts: dict[str, int] = {}
        values: dict[str, str] = {}
        if self.settings.pii != "off":
            assert self.detector is not None
            known: list[tuple[str, str]] = []
            if self.external is not None:
                from tokenrelay.guard.external import DetectorUnavailable

                text = request.prompt_text()
                try:
                    found = await self.external.find(text)
                except DetectorUnavailable:
                    raise GuardRefused(unavailable()) from None
                known = [(text[f.start : f.end], f.entity) for f in found]
            if self.settings.pii == "block":
                types = types_found(self.detector, request, known)
                if types:
                    raise PiiRefused(_count(self.detector, request, known))
            else:
                masking = Masker(self.detector, known).request(request)
                counts, values = masking.counts, masking.values
        rules = self.rules(canary)
        if not rules and not values:
            return None if not counts else RequestGuard(counts, None, None)
        return RequestGuard(counts, OutputGuard(rules) if rules else None, values or None)


def _count(finder: Finder, request: Request, known: list[tuple[str, str]]) -> dict[str, int]:
    import msgspec

    return Masker(finder, known).request(msgspec.structs.replace(request)).counts


class RequestGuard:
    """One request's guard: the types masked in its prompt, and the filter its answer's events
    go through (output rules first, on what the model wrote; then the placeholders restored)."""

    __slots__ = ("masked", "output", "restore")

    def __init__(
        self, masked: dict[str, int], output: OutputGuard | None, values: dict[str, str] | None
    ) -> None:
        self.masked = masked  # entity type -> occurrences masked
        self.output = output
        self.restore: RestoreFlow | None = None
        if values:
            from tokenrelay.guard.rehydrate import RestoreFlow

            self.restore = RestoreFlow(values)

    @property
    def filters(self) -> bool:
        return self.output is not None or self.restore is not None

    def feed(self, events: list[Event]) -> list[Event]:
        if self.output is not None:
            events = self.output.feed(events)
        if self.restore is not None:
            events = self.restore.feed(events)
        return events

    def close(self) -> list[Event]:
        events: list[Event] = []
        if self.output is not None:
            events = self.output.close()
        if self.restore is not None:
            events = self.restore.feed(events) + self.restore.close()
        return events

    @property
    def blocked(self) -> str | None:
        """The output rule that ended the stream (``canary`` for the screen's)."""
        return self.output.blocked if self.output is not None else None

    @property
    def guard_blocked(self) -> bool:
        """Ended by an output rule of the guard's own (the canary keeps the screen's outcome)."""
        rule = self.blocked
        return rule is not None and rule != CANARY

    @property
    def hits(self) -> dict[str, int]:
        return self.output.hits if self.output is not None else {}


class Guards:
    """Every route's guard, built at its first request (no detector imported before)."""

    def __init__(self) -> None:
        self._built: dict[int, tuple[GuardSettings, RouteGuard]] = {}

    async def begin(
        self, settings: GuardSettings, request: Request, canary: str | None
    ) -> RequestGuard | None:
        if settings.pii == "off" and not settings.output.active and canary is None:
            return None
        built = self._built.get(id(settings))
        if built is None:
            built = self._built[id(settings)] = (settings, RouteGuard(settings))
        return await built[1].begin(request, canary)

    def external(self, settings: GuardSettings) -> ExternalFinder | None:
        """The route's external detector (its ``failures`` counts), once a request built it."""
        built = self._built.get(id(settings))
        return built[1].external if built is not None else None

    async def aclose(self) -> None:
        """Close the external detectors' HTTP sessions (at shutdown)."""
        for _, guard in self._built.values():
            if guard.external is not None:
                await guard.external.aclose()
