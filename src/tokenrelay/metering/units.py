"""How metering writes the two units it shows besides token counts, each one way: dollars
(counted as integer nanodollars, written as decimal strings, never through a float) and UTC
times (ISO 8601 with a ``Z``). The ledger, budgets, reports, the dashboard, the audit line and
the relay's metadata all use these, so a cost or a time reads the same wherever it appears.
"""

from __future__ import annotations

import datetime
import math
from decimal import ROUND_HALF_UP, Decimal

NANOUSD = 1_000_000_000  # nanodollars in a dollar

_EPOCH = datetime.date(1970, 1, 1)


def usd(nanousd: int, places: int | None = None) -> str:
    """Dollars as a decimal string: exact, trailing zeros stripped (``"0.0132735"``, ``"3"``),
    or for a display that wants a fixed width, rounded half up to ``places`` decimals
    (``usd(n, 2)`` is ``"0.01"``; ``usd(n, 9)`` is exact and fixed: ``"0.001500000"``)."""
    dollars = Decimal(nanousd).scaleb(-9)
    if places is None:
        return f"{dollars.normalize():f}"
    return f"{dollars.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):f}"


def iso_time(timestamp: float, *, ms: bool = False) -> str:
    """A Unix time in UTC to the second (``2026-11-01T12:00:00Z``), or to the millisecond
    (``2026-11-01T12:00:00.250Z``) with ``ms``.

    Every request's audit line asks for the time now, so the second's text is kept and only
    the milliseconds are formatted (strftime is most of the cost). The split into the second
    and its microseconds is ``datetime.fromtimestamp``'s: the fraction rounded half to even."""
    global _second
    fraction, whole = math.modf(timestamp)
    second, micros = int(whole), round(fraction * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    cached = _second
    if cached[0] != second:
        moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
        cached = _second = (second, moment.strftime("%Y-%m-%dT%H:%M:%S"))
    if ms:
        return f"{cached[1]}.{micros // 1000:03d}Z"
    return cached[1] + "Z"


_second: tuple[int | None, str] = (None, "")  # the last second iso_time wrote, as text


def iso_day(day: int) -> str:
    """A UTC day counted from 1970-01-01 (the ledger's day number) as ``2026-11-01``."""
    return (_EPOCH + datetime.timedelta(days=day)).isoformat()
