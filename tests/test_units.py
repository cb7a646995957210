"""Dollars and times are written one way wherever metering shows them (``metering.units``)."""

from __future__ import annotations

import pytest

from tokenrelay.metering.units import iso_day, iso_time, usd


@pytest.mark.parametrize(
    ("nanousd", "exact", "nine", "cents"),
    [
        (0, "0", "0.000000000", "0.00"),
        (1, "0.000000001", "0.000000001", "0.00"),
        (13_273_500, "0.0132735", "0.013273500", "0.01"),
        (3_000_000_000, "3", "3.000000000", "3.00"),
        (30_000_000_000, "30", "30.000000000", "30.00"),
        (4_999_999, "0.004999999", "0.004999999", "0.00"),
        (5_000_000, "0.005", "0.005000000", "0.01"),  # half up, as a bill rounds
        (-15_000_000, "-0.015", "-0.015000000", "-0.02"),  # a refund, should one appear
        (123_456_789_012_345_678, "123456789.012345678", "123456789.012345678", "123456789.01"),
    ],
)
def test_usd_is_exact_and_never_a_float(nanousd: int, exact: str, nine: str, cents: str) -> None:
    assert usd(nanousd) == exact
    assert usd(nanousd, 9) == nine
    assert usd(nanousd, 2) == cents


def test_times_are_utc_iso() -> None:
    assert iso_time(1_700_000_000.25) == "2023-11-14T22:13:20Z"
    assert iso_time(1_700_000_000.25, ms=True) == "2023-11-14T22:13:20.250Z"
    assert iso_day(0) == "1970-01-01"
    assert iso_day(20_000) == "2024-10-04"


@pytest.mark.parametrize(
    "timestamp",
    [
        1_700_000_000.9999995,  # rounds up into the next second, as datetime does
        1_700_000_000.9999994,
        1_700_000_001.0000005,  # half to even: stays in its second
        1_700_000_000.0,
        0.5,
        -0.25,
    ],
)
def test_time_text_is_datetimes_at_second_edges(timestamp: float) -> None:
    """``iso_time`` keeps the second's text between calls; the split must stay datetime's."""
    import datetime

    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S")
    for _ in range(2):  # the second time from the kept text
        assert iso_time(timestamp) == expected + "Z"
        assert iso_time(timestamp, ms=True) == f"{expected}.{moment.microsecond // 1000:03d}Z"
