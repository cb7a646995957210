"""Metering: what each request used and cost, kept in the ledger table.

``row_from(record)`` turns a finished request's ``StreamRecord`` into a ``LedgerRow``;
``LedgerWriter.submit(row)`` queues it from the request's listener (a spool append, never a
database wait) and a background task writes the rows in batches, idempotently by request id.
"""

from __future__ import annotations

from tokenrelay.metering.ledger import COLUMNS, INSERT_SQL, LedgerRow, insert_rows, row_from
from tokenrelay.metering.writer import LedgerWriter, default_spool_dir

__all__ = [
    "COLUMNS",
    "INSERT_SQL",
    "LedgerRow",
    "LedgerWriter",
    "default_spool_dir",
    "insert_rows",
    "row_from",
]
