"""Durations as the settings write them: seconds, or ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``."""

from __future__ import annotations

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: float | str, name: str) -> float:
    """``value`` in seconds; a ``ValueError`` naming the setting ``name`` when it is not a
    duration or not above 0."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            value = float(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else float(text)
        except ValueError:
            raise ValueError(
                f"{name} {value!r} is not a duration; write it like '30d', '1h', '30m' or a "
                "number of seconds"
            ) from None
    if value <= 0:
        raise ValueError(f"{name} must be more than 0")
    return float(value)
