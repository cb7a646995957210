"""PII detection speed: microseconds per 2,000-character prompt, by kind of prompt.

    PYTHONPATH=src .venv/bin/python bench/pii_detect.py [--rounds N]

Kinds: plain prose (no digits, no '@': the prefilter's best case), prose with numbers and dates,
code, prose carrying a dozen values of every type, and a Japanese text. Each with the default
entity set and with every type (SSN too). p50 and p99 over the rounds, single thread.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from tokenrelay.guard.detectors import Detector
from tokenrelay.guard.entities import DEFAULT_ENTITIES, ENTITY_TYPES

SIZE = 2000
PROSE = (
    "The quarterly review covered the roadmap, the hiring plan and the budget for next year. "
    "Everyone agreed that the migration should happen before the summer break, and that the "
    "support team needs better tooling to answer customers faster. "
)
NUMBERS = (
    "On 2024-03-15 at 14:30 we shipped 1,234 units (version 2.10.4) for $12,499.99; order "
    "ORD-88123456 weighs 12.5 kg, ISBN 978-3-16-148410-0, lat 48.8566 lon 2.3522. "
)
CODE = (
    "def handler(event):\n    for i in range(100):\n        total += event['items'][i] * 0.75\n"
    '    return {"status": 200, "count": len(event), "version": "1.2.3"}\n'
)
VALUES = (
    "Mail john.doe@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111, IBAN DE89 "
    "3704 0044 0532 0130 00, from 203.0.113.7, key sk-proj-abc123DEF456ghi789JKL012xyz. "
)
JAPANESE = "会議は来週の火曜日に行います。資料は事前に共有してください。よろしくお願いします。"
KINDS = {"prose": PROSE, "numbers": NUMBERS, "code": CODE, "values": VALUES, "japanese": JAPANESE}


def prompt(unit: str) -> str:
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


def time_one(detector: Detector, text: str, rounds: int) -> tuple[float, float]:
    samples = []
    gc.disable()
    try:
        for _ in range(rounds):
            started = time.perf_counter_ns()
            detector.find(text)
            samples.append((time.perf_counter_ns() - started) / 1000)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    detectors = {"default": Detector(DEFAULT_ENTITIES), "all types": Detector(ENTITY_TYPES)}
    print(f"µs per {SIZE}-character prompt, {args.rounds} rounds")
    print("| prompt | entities | findings | p50 µs | p99 µs |")
    print("| --- | --- | ---: | ---: | ---: |")
    for kind, unit in KINDS.items():
        text = prompt(unit)
        for name, detector in detectors.items():
            detector.find(text)  # warm up
            p50, p99 = time_one(detector, text, args.rounds)
            found = len(detector.find(text))
            print(f"| {kind} | {name} | {found} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    main()
