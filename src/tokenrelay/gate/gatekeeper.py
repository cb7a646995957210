"""The checks a request passes before any upstream is called, in the order that keeps abuse
cheap. On the headers alone, before the body is read (``admit_caller``): who is asking (a 401
costs nothing) and how often (the caller's own request limits), so every request counts, even
one whose body turns out invalid. Then, once the body is parsed and routed (``admit_request``):
whether the caller may use the route, the route's own limits, token limits and budgets, what
they ask (length cap, then the screen), and finally a stream slot, taken last so that a refused
request never holds one.

After the stream, ``settle`` gives the slot back and charges the tokens actually used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from tokenrelay.gate.identity import Authenticator, Identity
from tokenrelay.gate.policy import check_model, stream_caps
from tokenrelay.gate.policy import request_rules as policy_request_rules
from tokenrelay.gate.policy import token_rules as policy_token_rules
from tokenrelay.model import GatewayError, Request, Usage
from tokenrelay.ratelimit import Decision, Lease, RateLimiter, Rule, Subject, SubjectKind

if TYPE_CHECKING:
    from tokenrelay.gate.keys import KeyStore
    from tokenrelay.metering.budgets import Budgets
    from tokenrelay.screening import Screen, Verdict
    from tokenrelay.settings import RouteSettings, Settings
    from tokenrelay.store import Database

log = logging.getLogger("tokenrelay.gate")


class RouteView(Protocol):
    """What the gate reads of the route a request resolved to (``failover.Route`` is one), so
    that the gate, beside the core, never imports the router."""

    @property
    def name(self) -> str: ...
    @property
    def settings(self) -> RouteSettings: ...
    @property
    def configured(self) -> bool: ...  # False for a provider model asked for by name
    @property
    def limit_key(self) -> str: ...  # what the route's ``rate_limit`` is counted under


@dataclass(slots=True)
class Admission:
    """What the gate learnt about an admitted request, kept until it ends."""

    identity: Identity | None  # None only while the gate is still finding out
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # quota left, for the head
    lease: Lease | None = None
    token_rules: list[Rule] = field(default_factory=list)
    verdict: Verdict | None = None
    canary: str | None = None
    requests: Decision | None = None  # the caller's request limits, for the quota headers
    leases: list[Lease] = field(default_factory=list)  # a key's, user's, org's stream caps


DATABASE_OPEN_DELAY = 1.0  # seconds after start-up
DATABASE_RETRY = 2.0  # seconds between attempts to open a database that was down


def _retrieve(task: asyncio.Task[Database]) -> None:
    """A failed open is logged where it fails; this keeps asyncio from warning again."""
    if not task.cancelled():
        task.exception()


class Rejected(GatewayError):
    """A request the gate turned away (recorded with outcome ``rejected``), with what it knew of
    the caller for the record, and which check refused it (``reason``: the metrics' label,
    finer than the error type)."""

    def __init__(
        self, error: GatewayError, identity: Identity | None, verdict: Verdict | None
    ) -> None:
        super().__init__(
            error.type,
            error.message,
            error.status,
            param=error.param,
            retry_after=error.retry_after,
            headers=error.headers,
            reason=error.reason,
        )
        self.identity = identity
        self.verdict = verdict
        # Rejected by the caller's request limit on its headers alone: counted in the metrics
        # only, so that a flood costs no ledger row, audit line or log line per request.
        self.flood = False


class Gate:
    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator,
        limiter: RateLimiter,
        screens: dict[str, Screen],
        canaries: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.limiter = limiter
        self.screens = screens
        self.canaries = canaries or {}  # route -> its canary, made once so prompt caches hold
        self.budgets: Budgets | None = None
        self._database: asyncio.Task[Database] | None = None
        self._opener: asyncio.TimerHandle | None = None
        self._opened_at = 0.0

    @classmethod
    def create(cls, settings: Settings) -> Gate:
        """The gate for ``settings``. The key database opens in the background (start-up stays
        fast); requests with a key wait for it briefly."""
        from tokenrelay.screening import Screen, make_canary

        authenticator = Authenticator(settings.auth)
        screens = {
            name: Screen(route.screen)
            for name, route in settings.routes.items()
            if route.screen.mode != "off" or route.screen.max_prompt_chars is not None
        }
        canaries = {
            name: make_canary() for name, route in settings.routes.items() if route.screen.canary
        }
        gate = cls(settings, authenticator, RateLimiter.create(settings.limits), screens, canaries)
        authenticator.open_keys = gate._key_store
        from tokenrelay.admin.budgets import stored_budgets_loader
        from tokenrelay.metering.budgets import Budgets

        # The settings' budgets and those stored by the admin API, re-read every key cache TTL.
        gate.budgets = Budgets(
            settings.budgets,
            gate.database,
            stored=stored_budgets_loader(gate.database),
            stored_ttl=settings.auth.key_cache_ttl,
        )
        # Open the database soon, but not on the start-up path (spawn to first token); a request
        # with a key before then opens it at once.
        gate._opener = asyncio.get_running_loop().call_later(
            DATABASE_OPEN_DELAY, gate._open_database
        )
        return gate

    def _open_database(self) -> asyncio.Task[Database]:
        """The task opening the database; one that failed is retried, at most every
        ``DATABASE_RETRY`` seconds, so a database down at start-up is used once it is up."""
        task = self._database
        now = time.monotonic()
        failed = task is not None and task.done() and (task.cancelled() or task.exception())
        if task is None or (failed and now - self._opened_at >= DATABASE_RETRY):
            self._opened_at = now
            task = self._database = asyncio.create_task(self._connect(), name="open-database")
            task.add_done_callback(_retrieve)
        return task

    async def _connect(self) -> Database:
        from tokenrelay.store import display_url, open_database

        url = self.settings.database_url
        try:
            return await open_database(url)
        except Exception as exc:
            log.error(
                "cannot open the database %s: %s; API keys cannot be checked", display_url(url), exc
            )
            raise

    async def _key_store(self) -> KeyStore:
        from tokenrelay.gate.keys import KeyStore

        auth = self.settings.auth
        db = await asyncio.shield(self._open_database())
        return KeyStore(
            db,
            ttl=auth.key_cache_ttl,
            negative_ttl=auth.key_negative_ttl,
            last_used_interval=auth.key_last_used_interval,
        )

    async def database(self) -> Database:
        """The database, opened now if it is not yet."""
        return await asyncio.shield(self._open_database())

    async def close(self) -> None:
        if self._opener is not None:
            self._opener.cancel()
        await self.limiter.close()
        if self.budgets is not None:
            await self.budgets.close()
        keys = self.authenticator.keys
        if keys is not None:  # the last uses not written yet
            with contextlib.suppress(Exception):
                await keys.last_used.close()
        if self._database is not None:
            if not self._database.done():
                self._database.cancel()
            with contextlib.suppress(BaseException):
                await (await self._database).close()

    async def admit(
        self, route: RouteView, request: Request, headers: Mapping[str, str], peer: str | None
    ) -> Admission:
        """``admit_caller`` then ``admit_request``, for a request already parsed."""
        admission = await self.admit_caller(headers, peer)
        return await self.admit_request(route, request, headers, admission)

    async def admit_caller(self, headers: Mapping[str, str], peer: str | None) -> Admission:
        """Who is asking and whether they may ask now, on the headers alone: ``Rejected``
        (401, 429, 503) for the client. Credentials that fail are counted against the caller's
        address like an anonymous request, so guessing keys is limited too."""
        try:
            identity = await self.authenticator.identify_caller(headers, peer)
        except GatewayError as error:
            anonymous = self.authenticator.anonymous(headers, peer)
            if error.status == 401:
                await self._limit_caller(anonymous)
            raise Rejected(error, anonymous, None) from None
        admission = Admission(identity)
        decision = await self._limit_caller(identity)
        admission.requests = decision
        admission.headers = decision.headers()
        return admission

    async def _limit_caller(self, identity: Identity) -> Decision:
        """Count a request against the caller's own limits, or refuse it (a flood refusal)."""
        decision = await self.limiter.check_requests(self._caller_rules(identity))
        try:
            _refuse_unless_allowed(decision, "requests")
        except GatewayError as error:
            refused = Rejected(error, identity, None)
            refused.flood = not decision.unavailable
            raise refused from None
        return decision

    async def admit_request(
        self, route: RouteView, request: Request, headers: Mapping[str, str], admission: Admission
    ) -> Admission:
        """The rest of the gate for a parsed request on ``route``: ``Rejected`` (401, 403, 413,
        400, 402, 429, 503) for the client."""
        try:
            return await self._admit_request(route, request, headers, admission)
        except GatewayError as error:
            raise Rejected(error, admission.identity, admission.verdict) from None

    def check_access(
        self, route: RouteView, headers: Mapping[str, str], identity: Identity
    ) -> None:
        """Whether the caller may use ``route`` at all (a key's routes, anonymous access), and
        nothing else: for a call that runs no model (``count_tokens``), which the route's
        limits, budgets, screen and stream slots are not about. ``Rejected`` 401 or 403."""
        allow_anonymous = route.settings.allow_anonymous
        if allow_anonymous is None:
            allow_anonymous = self.settings.auth.allow_anonymous
        try:
            self.authenticator.check_route(identity, headers, route.name, allow_anonymous)
        except GatewayError as error:
            raise Rejected(error, identity, None) from None

    async def _admit_request(
        self,
        route: RouteView,
        request: Request,
        headers: Mapping[str, str],
        admission: Admission,
    ) -> Admission:
        settings = route.settings
        identity = admission.identity
        assert identity is not None, "admit_caller comes first"
        allow_anonymous = settings.allow_anonymous
        if allow_anonymous is None:
            allow_anonymous = self.settings.auth.allow_anonymous
        self.authenticator.check_route(identity, headers, route.name, allow_anonymous)
        subject = _subject(identity)
        if identity.policy is not None:
            check_model(identity.policy, identity.key_id or "", route.name, request.model)

        rules = self._route_rules(subject, route)
        if rules:
            decision = await self.limiter.check_requests(rules)
            _refuse_unless_allowed(decision, "requests")
            if admission.requests is None or _tighter(decision, admission.requests):
                admission.requests = decision
                admission.headers = decision.headers()

        admission.token_rules = self._token_rules(identity)
        if admission.token_rules:
            tokens = await self.limiter.check_tokens(admission.token_rules)
            _refuse_unless_allowed(tokens, "tokens")
            admission.headers.extend(tokens.headers())

        if self.budgets is not None:
            await self.budgets.check(identity)  # 402 naming the budget and its reset

        screen = self._screen_for(route)
        if screen is not None:
            await _screen(screen, request, route.name, identity, admission)
        canary = self.canaries.get(route.name)
        if canary is not None:
            from tokenrelay.screening import canary_instruction

            request.add_system(canary_instruction(canary), first=False, separator="")
            admission.canary = canary

        cap = settings.max_concurrent_streams or self.settings.max_concurrent_streams
        if cap:
            lease = await self.limiter.acquire_stream(subject, cap)
            if isinstance(lease, Decision):
                _refuse_unless_allowed(lease, "concurrent streams", reason="concurrency")
            else:
                admission.lease = lease
        if identity.policy is not None and identity.key_id is not None:
            await _acquire_policy_streams(self.limiter, identity, admission)
        return admission

    def _screen_for(self, route: RouteView) -> Screen | None:
        """A configured route's screen, or, for a provider model asked for by name, the default
        screen: naming a model directly must not be a way around screening."""
        if route.configured:
            return self.screens.get(route.name)
        screen = self.screens.get("")
        if screen is None:
            from tokenrelay.screening import Screen

            screen = self.screens[""] = Screen(route.settings.screen)
        return screen

    async def settle(self, admission: Admission, usage: Usage) -> None:
        """After the stream: free its slot, charge what it used against the token limits."""
        if admission.lease is not None:
            await admission.lease.release()
        for lease in admission.leases:
            await lease.release()
        if admission.token_rules:
            used = (usage.input_tokens or 0) + (usage.output_tokens or 0)
            await self.limiter.charge_tokens(admission.token_rules, used)

    def _caller_rules(self, identity: Identity) -> list[Rule]:
        """The limits of the caller on every route together: the anonymous limit per address
        (per network for IPv6), a key's own rpm, the user and org limits."""
        settings = self.settings
        subject = _subject(identity)
        rules = []
        if subject.kind == "ip":
            rules.append(Rule(subject, settings.limits.anonymous_limit))
        elif identity.rpm:
            rules.append(Rule(subject, f"{identity.rpm}/minute"))
        if identity.policy is not None and identity.key_id is not None:
            rules += policy_request_rules(
                identity.policy, identity.key_id, identity.user, identity.org
            )
        if settings.user_limit and identity.user:
            rules.append(Rule(Subject("user", identity.user), settings.user_limit))
        if settings.org_limit and identity.org:
            rules.append(Rule(Subject("org", identity.org), settings.org_limit))
        return rules

    def _route_rules(self, subject: Subject, route: RouteView) -> list[Rule]:
        """The caller's limits on this route alone (``limits.route_limits``, the route's own
        ``rate_limit``), counted per caller and route."""
        rules = []
        if route_limit := self.settings.limits.route_limits.get(route.name):
            rules.append(Rule(subject, route_limit, route.name))
        if route.settings.rate_limit:
            rules.append(Rule(subject, route.settings.rate_limit, route.limit_key))
        return rules

    def _token_rules(self, identity: Identity) -> list[Rule]:
        settings = self.settings
        rules = []
        if settings.user_token_limit and identity.user:
            rules.append(Rule(Subject("user", identity.user), settings.user_token_limit))
        if settings.org_token_limit and identity.org:
            rules.append(Rule(Subject("org", identity.org), settings.org_token_limit))
        if identity.policy is not None and identity.key_id is not None:
            rules += policy_token_rules(
                identity.policy, identity.key_id, identity.user, identity.org
            )
        return rules


async def _acquire_policy_streams(
    limiter: RateLimiter, identity: Identity, admission: Admission
) -> None:
    """A slot under each stream cap the admin API set on the key, its user and its org; a
    refusal gives back the slots already taken."""
    assert identity.policy is not None and identity.key_id is not None
    for subject, cap in stream_caps(identity.policy, identity.key_id, identity.user, identity.org):
        lease = await limiter.acquire_stream(subject, cap, "policy")
        if isinstance(lease, Decision):
            for taken in [*admission.leases, *([admission.lease] if admission.lease else [])]:
                await taken.release()
            admission.leases.clear()
            admission.lease = None
            _refuse_unless_allowed(lease, "concurrent streams", reason="concurrency")
        else:
            admission.leases.append(lease)


def _subject(identity: Identity) -> Subject:
    """What the per-identity limits count against: ``Identity.subject`` (the key, else the
    JWT's user, else the IP) as the limiter's ``Subject``."""
    kind, _, name = identity.subject.partition(":")
    return Subject(cast("SubjectKind", kind), name)


def _tighter(a: Decision, b: Decision) -> bool:
    """Whether ``a`` leaves less quota than ``b`` (the one whose headers the client sees)."""
    return (a.remaining, -a.reset_after) < (b.remaining, -b.reset_after)


def _refuse_unless_allowed(decision: Decision, what: str, reason: str | None = None) -> None:
    if decision.allowed:
        return
    if decision.unavailable:
        raise GatewayError(
            "overloaded",
            "the rate limiter is unavailable and this gateway is set to refuse requests then; "
            "retry shortly",
            503,
            retry_after=1,
            headers=decision.headers(),
        )
    wait = decision.retry_after if decision.retry_after is not None else decision.reset_after
    raise GatewayError(
        "rate_limit",
        f"rate limit reached: {decision.limit} {what} {_window(decision)} "
        f"({decision.policy}); retry in {max(1, round(wait))} s",
        429,
        retry_after=max(1.0, wait),
        headers=decision.headers(),
        reason=reason,
    )


_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def _window(decision: Decision) -> str:
    seconds = decision.window
    if not seconds:
        return "at a time"
    size, name = next((size, name) for size, name in _UNITS if seconds % size == 0)
    count = seconds // size
    return f"per {name}" if count == 1 else f"per {count} {name}s"


async def _screen(
    screen: Screen, request: Request, route: str, identity: Identity, admission: Admission
) -> None:
    """Length cap, then the screen; the verdict lands in ``admission`` before any refusal."""
    from tokenrelay.screening import length_error, refusal, texts_of

    settings = screen.settings
    texts = texts_of(request, settings.untrusted_roles, document_tags=settings.document_tags)
    cap = settings.max_prompt_chars  # per user message: a chat's history does not add up
    if cap is not None:
        longest = max((len(text.text) for text in texts if text.source == "user"), default=0)
        if longest > cap:
            raise length_error(longest, cap)
    verdict = admission.verdict = await screen.check(texts)
    if verdict.injection:
        log.warning(
            "screening: %s prompt on route %s from %s (score %.2f, rules %s)",
            "refused" if settings.mode == "block" else "flagged",
            route,
            identity.key_id or identity.user or identity.ip,
            verdict.score,
            ",".join(verdict.rules) or "-",
        )
        if settings.mode == "block":
            raise refusal()
