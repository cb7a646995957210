"""Stored responses: what ``store`` keeps of a ``/v1/responses`` answer, how
``previous_response_id`` continues one, and what ``GET``/``DELETE /v1/responses/{id}`` read.

A response is kept with the input items it was made from (a continued one's stored turns
included, so every row stands alone: deleting or expiring an earlier one breaks nothing) and
the response object its client saw at the end, status ``completed``, ``incomplete`` or
``failed`` as on OpenAI; one the client never saw end (it went away) is not kept. Rows belong
to the caller that made them (``Identity.subject``: the API key, or the JWT's user); anonymous
callers' are kept only when ``responses.anonymous`` is on, by address. Another caller's
response reads exactly like a missing one.

Keeping is off the stream's path: the request listener only notes the request, and a
background task writes the rows in batches after the answer has ended. Until its row is
written a response is served from memory, so a client continuing the moment its answer ends
finds it; on another instance the row may be a few milliseconds late, so a miss is read once
more after ``MISS_RETRY``. A failed write is logged and counted (``write_errors``), never seen
by the client. A sweep deletes rows past retention every ``cleanup_interval`` seconds; reads
never return them in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from tokenrelay.dialects.responses import continue_request, with_references
from tokenrelay.dialects.responses.items import holder, input_items, referable, resent
from tokenrelay.dialects.responses.wire import (
    CONTINUES,
    HINTS,
    HISTORY,
    INPUT,
    NAME,
    REFERENCES,
    RESULT,
)
from tokenrelay.model import GatewayError, Request

if TYPE_CHECKING:
    from tokenrelay.gate.gatekeeper import Gate
    from tokenrelay.gate.identity import Identity
    from tokenrelay.observe.prometheus import Counter, Metric
    from tokenrelay.records import StreamRecord
    from tokenrelay.settings import ResponsesSettings
    from tokenrelay.store import Database
    from tokenrelay.store.responses import StoredResponse

log = logging.getLogger("tokenrelay.responses")

MISS_RETRY = 0.1  # seconds before a response not found is read once more
# stored responses one request's item references may name, at most (each is one read)
MAX_REFERENCED = 1000
# Responses waiting for their write, at most: past it (a database hanging) new ones are not
# kept, and counted as store errors, rather than held in memory without bound.
MAX_PENDING = 10_000
FIRST_SWEEP = 60.0  # seconds after start-up
_encode = msgspec.json.encode
_decode = msgspec.json.decode


class PreviousResponseNotFound(GatewayError):
    """OpenAI's 400 for a ``previous_response_id`` it does not have; its ``code`` is what
    clients such as Codex act on (they send the whole conversation again)."""

    code = "previous_response_not_found"

    def __init__(self, id: str) -> None:
        super().__init__(
            "invalid_request",
            f"Previous response with id {id!r} not found. It does not exist, has expired or "
            "been deleted, was created with store: false or by another API key; send the "
            "whole conversation in 'input' instead.",
            400,
            param="previous_response_id",
        )


class ItemNotFound(GatewayError):
    """A 400 for an ``item_reference`` naming no item the caller has stored, in the words of
    ``previous_response_id``'s: a stranger learns nothing of another's items."""

    def __init__(self, index: int, id: str) -> None:
        super().__init__(
            "invalid_request",
            f"input[{index}]: item with id {id!r} not found. It does not exist, has expired or "
            "been deleted, or came from a response created with store: false or by another "
            "API key; send the item itself in 'input' instead of a reference to it, or store "
            "the response it comes from (store: true).",
            400,
            param=f"input[{index}]",
        )


class Found(msgspec.Struct, frozen=True):
    """A stored response as read: its object and its input items."""

    id: str
    status: str
    response: dict[str, Any]
    input_items: list[Any]


class _Pending:
    """A response noted by the listener and not yet written. Its object is read when needed:
    a stream's writer ends it just after the listener ran."""

    __slots__ = ("created_at", "id", "owner", "request", "written")

    def __init__(self, id: str, owner: str, created_at: float, request: Request) -> None:
        self.id = id
        self.owner = owner
        self.created_at = created_at
        self.request = request
        self.written: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def found(self) -> Found | None:
        result = self.request.front_options.get(RESULT)
        if result is None or result.get("id") != self.id:
            return None  # never ended for its client (it went away)
        return Found(self.id, str(result["status"]), result, kept_input(self.request))


def kept_input(request: Request) -> list[Any]:
    """The items a response was made from: the stored turns it continued, then its input."""
    raw = request.front_options.get(INPUT)
    own = input_items(raw) if isinstance(raw, str | list) else []
    return [*request.front_options.get(HISTORY, ()), *own]


def _invalid(message: str) -> GatewayError:
    return GatewayError("invalid_request", message, 400, param="previous_response_id")


def _unavailable(exc: BaseException) -> GatewayError:
    log.warning("stored responses cannot be read: %s", exc)
    return GatewayError(
        "api_error", "stored responses cannot be read right now; try again shortly", 503
    )


class ResponseStore:
    """The request listener keeping responses, and the reads and deletes of the HTTP layer."""

    def __init__(self, settings: ResponsesSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.retention = settings.retention_seconds
        self.clock = clock
        self._gate: Gate | None = None
        self._pending: dict[str, _Pending] = {}
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.written = 0  # rows committed
        self.write_errors = 0  # rows lost to a failed write
        self.swept = 0  # rows deleted past retention
        self._counters: tuple[Counter, Counter, Counter] | None = None

    def start(self, gate: Gate) -> None:
        """Begin writing and sweeping; the database is the gate's (opened when first used)."""
        self._gate = gate
        if self.settings.store:
            self._tasks = [
                asyncio.create_task(self._write_forever(), name="store-responses"),
                asyncio.create_task(self._sweep_forever(), name="sweep-responses"),
            ]

    async def close(self, grace: float = 5.0) -> None:
        """Write what is pending (up to ``grace`` seconds), then stop."""
        deadline = time.monotonic() + grace
        while self._pending and time.monotonic() < deadline and self._tasks:
            await asyncio.sleep(0.01)
        if self._pending:
            log.warning("%d stored response(s) were not written before exit", len(self._pending))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    def metrics(self) -> list[Metric]:
        """This store's counters for ``GET /metrics``, read now."""
        from tokenrelay.observe.prometheus import Counter

        if self._counters is None:
            self._counters = (
                Counter("tokenrelay_responses_stored_total", "Responses written to the database."),
                Counter(
                    "tokenrelay_responses_store_errors_total",
                    "Responses that could not be stored (the client was answered all the same).",
                ),
                Counter(
                    "tokenrelay_responses_expired_total", "Stored responses deleted past retention."
                ),
            )
        for counter, value in zip(
            self._counters, (self.written, self.write_errors, self.swept), strict=True
        ):
            counter.labels().value = value
        return list(self._counters)

    @property
    def pending(self) -> int:
        """Responses noted and not yet written (or given up on)."""
        return len(self._pending)

    async def _database(self) -> Database:
        if self._gate is None:
            raise RuntimeError("the response store has not started")
        return await self._gate.database()

    def owner(self, identity: Identity | None) -> str | None:
        """Whose a response is: the key or JWT user; an address only when the operator keeps
        anonymous callers' responses; None: not kept."""
        if identity is None or (identity.kind == "anonymous" and not self.settings.anonymous):
            return None
        return identity.subject

    # --- keeping: the request listener and the writer -------------------------------------------

    def __call__(self, record: StreamRecord) -> None:
        request = record.request
        if record.dialect != NAME or request is None or not self.settings.store:
            return
        if record.outcome not in ("completed", "error", "interrupted"):
            return  # refused before any answer, or its client went away
        if request.front_options.get(HINTS, {}).get("store") is False:
            return
        owner = self.owner(record.identity)
        if owner is None:
            return
        if len(self._pending) >= MAX_PENDING:
            self.write_errors += 1
            if self.write_errors % 1000 == 1:
                log.error("%d responses wait for the database; new ones are not kept", MAX_PENDING)
            return
        pending = _Pending("resp_" + record.request_id, owner, self.clock(), request)
        self._pending[pending.id] = pending
        self._queue.append(pending)
        self._wake.set()

    async def _write_forever(self) -> None:
        from tokenrelay.store import responses as table

        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            rows = list(self._rows(batch))
            try:
                if rows:
                    await table.insert(await self._database(), rows)
                    self.written += len(rows)
            except Exception as exc:
                self.write_errors += len(rows)
                log.error("could not store %d response(s): %s", len(rows), exc)
            finally:
                for pending in batch:
                    self._pending.pop(pending.id, None)
                    if not pending.written.done():
                        pending.written.set_result(None)

    def _rows(self, batch: Iterable[_Pending]) -> Iterable[StoredResponse]:
        from tokenrelay.store.responses import StoredResponse

        for pending in batch:
            try:
                found = pending.found()
                if found is None:
                    continue
                yield StoredResponse(
                    found.id,
                    pending.owner,
                    pending.created_at,
                    found.status,
                    _encode(found.response),
                    _encode(found.input_items),
                )
            except Exception:
                self.write_errors += 1
                log.exception("could not store response %s", pending.id)

    # --- expiry ---------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        await asyncio.sleep(min(FIRST_SWEEP, self.settings.cleanup_interval))
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("could not delete expired responses: %s", exc)
            await asyncio.sleep(self.settings.cleanup_interval)

    async def sweep(self) -> int:
        """Delete every response past retention, a batch at a time; how many went."""
        from tokenrelay.store import responses as table

        db = await self._database()
        before = self.clock() - self.retention
        total = 0
        while True:
            deleted = await table.delete_expired(db, before)
            total += deleted
            if deleted < table.SWEEP_BATCH:
                break
            await asyncio.sleep(0)  # let requests' statements through between batches
        self.swept += total
        if total:
            log.info("deleted %d response(s) older than the retention", total)
        return total

    # --- reading --------------------------------------------------------------------------------

    async def find(self, id: str, owner: str) -> Found | None:
        """``owner``'s response ``id`` if it is kept; another's is None as well. Raises a 503
        ``GatewayError`` when the database cannot be read."""
        since = self.clock() - self.retention
        pending = self._pending.get(id)
        if pending is not None:
            if pending.owner != owner or pending.created_at < since:
                return None
            return pending.found()
        if not self.settings.store:
            return None
        from tokenrelay.store import responses as table

        try:
            db = await self._database()
            row = await table.fetch(db, id, owner, since)
            if row is None:
                await asyncio.sleep(MISS_RETRY)  # written by another instance just now?
                row = await table.fetch(db, id, owner, since)
        except Exception as exc:
            raise _unavailable(exc) from None
        if row is None:
            return None
        return Found(row.id, row.status, _decode(row.response), _decode(row.input_items))

    async def delete(self, id: str, owner: str) -> bool:
        """Delete ``owner``'s response ``id``; False when there is none to delete."""
        pending = self._pending.get(id)
        if pending is not None and pending.owner == owner:
            await asyncio.shield(pending.written)  # then delete its row
        if not self.settings.store:
            return False
        from tokenrelay.store import responses as table

        try:
            return await table.delete(
                await self._database(), id, owner, self.clock() - self.retention
            )
        except Exception as exc:
            raise _unavailable(exc) from None

    # --- continuing -----------------------------------------------------------------------------

    async def continued(self, request: Request, identity: Identity | None) -> Request:
        """``request``, which names a ``previous_response_id``, with ``identity``'s stored turns
        before its own input; a 400 naming ``previous_response_id`` when there are none."""
        previous: str = request.front_options[CONTINUES]
        if not self.settings.store:
            raise _invalid(
                "this gateway keeps no responses (responses.store is off), so none can be "
                "continued; send the whole conversation in 'input'"
            )
        owner = self.owner(identity)
        if owner is None:
            raise _invalid(
                "this gateway keeps no responses of anonymous callers, so none can be "
                "continued; send an API key ('Authorization: Bearer trk_...') with both "
                "requests, or the whole conversation in 'input'"
            )
        found = await self.find(previous, owner)
        if found is None:
            raise PreviousResponseNotFound(previous)
        if found.status == "failed":
            raise _invalid(
                f"response {previous!r} failed, so it cannot be continued; continue the "
                "response before it, or send the whole conversation in 'input'"
            )
        output = found.response.get("output") or []
        return continue_request(request, [*found.input_items, *output])

    # --- item references ------------------------------------------------------------------------

    async def referenced(self, request: Request, identity: Identity | None) -> Request:
        """``request``, whose input holds ``item_reference`` items, with each replaced by the
        item of ``identity``'s stored responses it names (one read per response: an item's id
        names its response); a 400 naming the first reference that names none."""
        references: list[tuple[int, str]] = request.front_options[REFERENCES]
        at, first = references[0]
        if not self.settings.store:
            raise GatewayError(
                "invalid_request",
                f"input[{at}]: this gateway keeps no responses (responses.store is off), so "
                f"the item reference {first!r} names nothing; send the item itself instead",
                400,
                param=f"input[{at}]",
            )
        owner = self.owner(identity)
        if owner is None:
            raise GatewayError(
                "invalid_request",
                f"input[{at}]: this gateway keeps no responses of anonymous callers, so the "
                f"item reference {first!r} names nothing; send the item itself instead, or an "
                "API key ('Authorization: Bearer trk_...') with every request",
                400,
                param=f"input[{at}]",
            )
        items: dict[str, Any] = {}
        read: set[str] = set()
        replaced: dict[int, Any] = {}
        for index, id in references:
            if id not in items:
                response_id = holder(id)
                if response_id is None or response_id in read:
                    raise ItemNotFound(index, id)
                if len(read) == MAX_REFERENCED:
                    raise GatewayError(
                        "invalid_request",
                        f"input[{index}]: the input refers to items of more than "
                        f"{MAX_REFERENCED} stored responses; send some of the items themselves",
                        400,
                        param=f"input[{index}]",
                    )
                read.add(response_id)
                found = await self.find(response_id, owner)
                if found is not None:
                    base = response_id.removeprefix("resp_")
                    items.update(referable(found.response, found.input_items, base))
                if id not in items:
                    raise ItemNotFound(index, id)
            replaced[index] = resent(items[id])
        return with_references(request, replaced)
