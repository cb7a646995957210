"""Where tokenrelay keeps what must outlive a process: API keys now, the ledger next.

``await open_database(url)`` connects and brings the schema up to date; the drivers (sqlite3,
psycopg) are imported only then.
"""

from __future__ import annotations

from tokenrelay.store.database import (
    DEFAULT_DATABASE_URL,
    Database,
    DatabaseError,
    DataError,
    IntegrityError,
    Queries,
    Row,
    connect,
)
from tokenrelay.store.migrations import MIGRATIONS, Migration, migrate
from tokenrelay.store.urls import display_url, parse_url, redact_url

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MIGRATIONS",
    "DataError",
    "Database",
    "DatabaseError",
    "IntegrityError",
    "Migration",
    "Queries",
    "Row",
    "connect",
    "display_url",
    "migrate",
    "open_database",
    "parse_url",
    "redact_url",
]


async def open_database(url: str = DEFAULT_DATABASE_URL, *, pool_size: int = 4) -> Database:
    """Connect to ``url`` and apply pending migrations; close it with ``await db.close()``."""
    db = await connect(url, pool_size=pool_size)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return db
