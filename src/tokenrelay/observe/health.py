"""Readiness: whether this instance should be sent new requests (``GET /readyz``).

Liveness (``/healthz``) is only "the process answers"; it does no I/O, so a slow dependency can
never get a healthy process restarted. Readiness is what a load balancer asks every second or
so, and it checks what a request needs and the process cannot fix by itself:

- ``config``: the gateway started (settings loaded, providers and routes built);
- ``draining``: shutdown has not begun (then the answer is the short ``{"status": "draining"}``
  with ``retry-after: 1`` and ``connection: close``, whatever else holds);
- ``ledger``: the ledger's writer task runs and its spool directory is writable, and no rows
  are held only in memory (what the writer does when the spool fails). A database that is down
  does not fail it: rows wait in the spool, which is what the spool is for; the 200 answer then
  says so under ``degraded`` (``database``), as it does for rows the database refused and the
  writer set aside as dead letters (``ledger``);
- ``redis``, when ``redis_url`` is set: a ``PING`` on the rate limiter's own client, answered
  within ``limits.redis_timeout``. The result is kept for ``REDIS_TTL`` seconds and concurrent
  probes share one ping, so polling readiness every second costs at most one ping per second;
  the ping runs on the event loop like every other Redis call, never blocking it.

Each check is cheap (a few system calls, or the cached ping); the 503 body lists every check and
why it failed, so the operator does not have to guess which one it was.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tokenrelay.gate.gatekeeper import Gate
    from tokenrelay.metering.writer import LedgerWriter
    from tokenrelay.settings import Settings

REDIS_TTL = 1.0  # seconds a ping's result is reused

Check = dict[str, Any]  # {"ok": bool, "reason"?: str}


class RedisProbe:
    """A ``PING`` whose result is reused for ``ttl`` seconds; concurrent askers share one."""

    def __init__(
        self,
        client: Any,
        timeout: float,
        ttl: float = REDIS_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.ttl = ttl
        self._clock = clock
        self._result: tuple[bool, str] | None = None
        self._at = 0.0
        self._ping: asyncio.Future[tuple[bool, str]] | None = None

    async def check(self) -> tuple[bool, str]:
        """``(reachable, why)``, from the cache when it is fresh."""
        if self._result is not None and self._clock() - self._at < self.ttl:
            return self._result
        if self._ping is None:
            self._ping = asyncio.ensure_future(self._send())
        # Shielded: a prober that hangs up does not cancel the ping the others wait for.
        return await asyncio.shield(self._ping)

    async def _send(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.ping()
            result = (True, "")
        except TimeoutError:
            result = (False, f"Redis did not answer PING within {self.timeout:g} s")
        except Exception as exc:
            result = (False, f"Redis is unreachable: {type(exc).__name__}: {exc}")
        finally:
            self._ping = None  # even when cancelled, so the next check sends a fresh one
        self._result, self._at = result, self._clock()
        return result


class Served(Protocol):
    """What readiness reads of the running gateway (``gateway.Gateway`` is one): ``router``
    raises ``RuntimeError`` until start-up has finished."""

    @property
    def draining(self) -> bool: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def ledger(self) -> LedgerWriter | None: ...
    @property
    def router(self) -> object: ...
    @property
    def gate(self) -> Gate: ...


class Readiness:
    """The checks behind ``/readyz`` for one gateway."""

    def __init__(self, gateway: Served) -> None:
        self.gateway = gateway
        self._redis: RedisProbe | None = None

    async def check(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The status code, the JSON body and the extra headers."""
        gateway = self.gateway
        if gateway.draining:
            headers = {"retry-after": "1", "connection": "close"}
            return 503, {"status": "draining"}, headers
        checks: dict[str, Check] = {"config": self._config()}
        if checks["config"]["ok"]:
            checks["ledger"] = self._ledger()
            if gateway.settings.redis_url:
                checks["redis"] = await self._redis_check()
        if all(check["ok"] for check in checks.values()):
            degraded = {"database": self._database(), "ledger": self._dead_letters()}
            degraded = {name: check for name, check in degraded.items() if check is not None}
            if degraded:
                return 200, {"status": "ready", "degraded": degraded}, {}
            return 200, {"status": "ready"}, {}
        return 503, {"status": "not_ready", "checks": checks}, {}

    def _database(self) -> Check | None:
        """A database outage, reported but not failing readiness: every instance shares the
        database, so failing would take them all out of the load balancer at once, while each
        can go on serving: ledger rows wait in the spool, recently checked keys come from
        the cache (``auth.key_stale_ttl``)."""
        ledger = self.gateway.ledger
        since = ledger.database_down_since if ledger is not None else None
        if ledger is None or since is None:
            return None
        down = time.monotonic() - since
        return {
            "ok": False,
            "reason": f"the database has failed writes for {down:.0f} s; {ledger.backlog} "
            "ledger row(s) wait in the spool and recently checked API keys are served from "
            "the cache",
        }

    def _dead_letters(self) -> Check | None:
        """Ledger rows the database refused for their values since start-up: set aside, not
        lost, and the ledger goes on; an operator should look at them."""
        ledger = self.gateway.ledger
        if ledger is None or not ledger.dead_letters:
            return None
        return {
            "ok": False,
            "reason": f"{ledger.dead_letters} ledger row(s) were refused by the database and "
            f"set aside in {ledger.dead_letter_path} with the reason (see the log)",
        }

    def _config(self) -> Check:
        try:
            self.gateway.router  # noqa: B018 - raises until the gateway has started
        except RuntimeError:
            return {"ok": False, "reason": "the gateway has not finished starting"}
        return {"ok": True}

    def _ledger(self) -> Check:
        ledger = self.gateway.ledger
        if ledger is None:
            return {"ok": False, "reason": "the ledger writer was not started"}
        if not ledger.running:
            why = "the ledger writer is not running"
            if ledger.failure is not None:
                why += f" (it failed: {ledger.failure!r})"
            return {"ok": False, "reason": why}
        spool = ledger.spool_dir
        # access(2) answers for the real filesystem: a read-only mount fails it even for root.
        if not spool.is_dir() or not os.access(spool, os.W_OK | os.X_OK):
            return {"ok": False, "reason": f"the ledger spool directory {spool} is not writable"}
        in_memory = ledger.backlog - ledger.spooled
        if in_memory > 0:
            return {
                "ok": False,
                "reason": f"{in_memory} ledger row(s) are held in memory only: the spool in "
                f"{spool} could not be written and the database has not taken them",
            }
        return {"ok": True}

    async def _redis_check(self) -> Check:
        probe = self._redis
        if probe is None:
            limits = self.gateway.settings.limits
            # The rate limiter's client: its pool, its timeouts, no connection of our own.
            client = getattr(self.gateway.gate.limiter.store, "client", None)
            if client is None:
                return {"ok": False, "reason": "redis_url is set but no Redis client was made"}
            probe = self._redis = RedisProbe(client, limits.redis_timeout)
        ok, why = await probe.check()
        return {"ok": True} if ok else {"ok": False, "reason": why}
