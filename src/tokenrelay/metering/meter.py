"""The listener that meters a finished request: its usage (reported, or estimated when the
upstream never sent its final count), its exact cost, its ledger row, its budget charge and its
audit line. It runs once per request, after the stream, and never waits on I/O.

Failed attempts that reported usage before failing (Anthropic's ``message_start`` ahead of an
overload error) are metered with the request: their tokens are in the row's totals, each priced
at its own model's rate, and listed in ``attempts_detail``.

Each part is priced on the model the upstream said served it (``message_start.message.model``,
an OpenAI chunk's ``model``) when the price table knows that one, else on the model the route
asked for: an alias the provider resolved to another snapshot is billed as what ran. The row
keeps both names and the one priced (``served_model``, ``model``, ``priced_model``).

Rows are spooled at once. The price table loads in a worker thread shortly after start-up
(``genai-prices`` takes ~0.4 s to import); a row that ends before then is spooled with
``cost_nanousd = UNPRICED`` and priced by the writer, which waits for the table, just before the
row goes to the database.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from tokenrelay.metering.estimate import estimate_usage
from tokenrelay.metering.ledger import LedgerRow, row_from
from tokenrelay.model import Usage

if TYPE_CHECKING:
    from tokenrelay.gate.identity import Identity
    from tokenrelay.metering.budgets import Budgets
    from tokenrelay.metering.pricing import Pricer
    from tokenrelay.metering.writer import LedgerWriter
    from tokenrelay.observe.audit import AuditLog
    from tokenrelay.records import StreamRecord

log = logging.getLogger("tokenrelay.metering")

UNPRICED = -1  # cost_nanousd of a row spooled before the price table was loaded
# What one attempt is priced on: provider, requested model, served model (if said), usage.
Part = tuple[str | None, str | None, str | None, Usage]


def metered_usage(record: StreamRecord) -> tuple[Usage, bool]:
    """The served attempt's usage and whether it is estimated. The upstream's counts are final
    only for a stream that completed with both counts; otherwise what it reported is kept and
    the rest estimated from the prompt and what was streamed."""
    usage = record.usage
    final = (
        record.outcome == "completed"
        and usage.input_tokens is not None
        and usage.output_tokens is not None
    )
    if final or record.request is None or record.provider is None:
        return usage, False
    completion = record.completion
    calls = completion.tool_calls if completion is not None else []
    estimated = estimate_usage(
        record.request,
        completion.text if completion is not None else "",
        thinking_text=completion.thinking if completion is not None else "",
        tool_arguments="".join(call.arguments for call in calls),
        reported=usage,
    )
    return estimated, True


class Meter:
    def __init__(
        self,
        ledger: LedgerWriter,
        pricer: Pricer,
        provider_kinds: Mapping[str, str],
        budgets: Budgets | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.ledger = ledger
        self.pricer = pricer
        self.kinds = provider_kinds
        self.budgets = budgets
        self.audit = audit

    def __call__(self, record: StreamRecord) -> None:
        row = row_from(record)
        usage, estimated = metered_usage(record)
        parts: list[Part] = [(record.provider, record.model, record.usage.model, usage)]
        parts += [
            (a.provider, a.model, a.usage.model, a.usage)
            for a in record.attempts
            if a.usage is not None
        ]
        total = functools.reduce(_add, (part[3] for part in parts))
        row.input_tokens = total.input_tokens or 0
        row.output_tokens = total.output_tokens or 0
        row.cache_read_tokens = total.cache_read_tokens or 0
        row.cache_write_tokens = total.cache_write_tokens or 0
        row.reasoning_tokens = total.reasoning_tokens or 0
        row.estimated = estimated
        record.billed_usage, record.usage_estimated = total, estimated
        if self.pricer.loaded:
            self._price(row, parts)
            _served_from_cache(row)
        else:
            row.cost_nanousd = UNPRICED
        self.ledger.submit(row)
        if row.cache == "hit" and row.cost_nanousd != UNPRICED:
            record.saved_nanousd = row.saved_nanousd
        if row.priced and row.cost_nanousd >= 0:
            record.cost_nanousd = row.cost_nanousd
        if row.cost_nanousd > 0 and self.budgets is not None and record.identity is not None:
            self.budgets.charge(record.identity, row.cost_nanousd, row.request_id, row.created_at)
        if self.audit is not None:
            from tokenrelay.observe.audit import prompt_of

            prompt = prompt_of(record.request) if record.request is not None else ""
            cost = row.cost_nanousd if row.priced and row.cost_nanousd >= 0 else None
            self.audit.write(record, prompt, cost)

    def _price(self, row: LedgerRow, parts: list[Part]) -> None:
        """The row's cost, each part at its served model's rate when known (else the
        requested one's); ``priced_model`` is the first part's (the attempt that answered)."""
        when = datetime.fromtimestamp(row.created_at, UTC)
        total = Decimal(0)
        priced = True
        row.priced_model = None
        for index, (provider, requested, served, usage) in enumerate(parts):
            if provider is None or requested is None:
                continue
            kind = self.kinds.get(provider)
            model = requested
            if (
                served
                and served != requested
                and self.pricer.knows(provider, served, provider_kind=kind)
            ):
                model = served
            cost = self.pricer.cost(provider, model, usage, when=when, provider_kind=kind)
            if cost is None:
                priced = False
            else:
                total += cost
                if index == 0 and self.pricer.knows(provider, model, provider_kind=kind):
                    row.priced_model = model
        row.cost_nanousd = self.pricer.nanousd(total)
        row.priced = priced

    async def price_pending(self, rows: list[LedgerRow]) -> None:
        """The writer's hook before a batch goes to the database: price the rows spooled before
        the price table had loaded (at the serving model's rate, attempts included)."""
        pending = [row for row in rows if row.cost_nanousd == UNPRICED]
        if not pending:
            return
        await self.pricer.load()
        for row in pending:
            usage = Usage(
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                cache_read_tokens=row.cache_read_tokens,
                cache_write_tokens=row.cache_write_tokens,
                reasoning_tokens=row.reasoning_tokens,
            )
            self._price(row, [(row.provider, row.model, row.served_model, usage)])
            _served_from_cache(row)
            if row.cost_nanousd > 0 and self.budgets is not None:
                self.budgets.charge(
                    _identity(row), row.cost_nanousd, row.request_id, row.created_at
                )


def _served_from_cache(row: LedgerRow) -> None:
    """A cache hit asked no upstream: it costs 0, and saved what the original answer cost
    (its usage, priced as the row was). Budgets then charge it nothing."""
    if row.cache == "hit":
        row.saved_nanousd, row.cost_nanousd = row.cost_nanousd, 0


def _add(a: Usage, b: Usage) -> Usage:
    """Two attempts' usage together (``merge_usage`` keeps the later report; this sums)."""
    if a == Usage():
        return b

    def plus(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return Usage(
        input_tokens=plus(a.input_tokens, b.input_tokens),
        output_tokens=plus(a.output_tokens, b.output_tokens),
        cache_read_tokens=plus(a.cache_read_tokens, b.cache_read_tokens),
        cache_write_tokens=plus(a.cache_write_tokens, b.cache_write_tokens),
        reasoning_tokens=plus(a.reasoning_tokens, b.reasoning_tokens),
        model=a.model,
    )


def _identity(row: LedgerRow) -> Identity:
    from tokenrelay.gate.identity import Identity

    ip = row.client_ip or ""
    if row.key_id:
        return Identity("key", ip, user=row.user_id, org=row.org_id, key_id=row.key_id)
    if row.user_id:
        return Identity("jwt", ip, user=row.user_id, org=row.org_id)
    return Identity("anonymous", ip)


__all__ = ["UNPRICED", "Meter", "metered_usage"]
