"""The guard's cost before the first token and per token, by kind of 2,000-character prompt.

First token: masking the prompt (detection included) plus the restorer and its first event, what
``guard.pii = "mask"`` adds before the first token. Kinds: prose with a couple of values (the
realistic case, the one the issue's 0.2 ms target is for), code, number-dense text and a text full
of values. Per token: the relay's guard hook with nothing masked, with a restorer, and the output
guard (secrets, action mask). p50 and p99 over the rounds, single thread.

    PYTHONPATH=src python bench/pii_guard.py [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from tokenrelay.guard.detectors import Detector
from tokenrelay.guard.mask import Masker
from tokenrelay.guard.output import OutputGuard, OutputRules
from tokenrelay.guard.route import RequestGuard
from tokenrelay.guard.settings import OutputGuardSettings
from tokenrelay.model import Message, Request, TextDelta, TextPart

SIZE = 2000
PROSE = (
    "The quarterly review covered the roadmap, the hiring plan and the budget for next year. "
    "Everyone agreed that the migration should happen before the summer break, and that the "
    "support team needs better tooling to answer customers faster. "
)
REALISTIC = (
    PROSE * 4
    + "Please send the summary to ann.lee@example.com, or call me on +44 20 7946 0958. "
    + PROSE * 6
)
CODE = (
    "def handler(event):\n    for i in range(100):\n        total += event['items'][i] * 0.75\n"
    '    return {"status": 200, "count": len(event), "version": "1.2.3"}\n'
)
NUMBERS = (
    "On 2024-03-15 at 14:30 we shipped 1,234 units (version 2.10.4) for $12,499.99; order "
    "ORD-88123456 weighs 12.5 kg, ISBN 978-3-16-148410-0, lat 48.8566 lon 2.3522. "
)
VALUES = (
    "Hello, I am writing about my order 12345 from 2024-05-01 (version 2.3.1). Please reply to "
    "ann.lee@example.com or call +44 20 7946 0958. My card 4111 1111 1111 1111 was charged "
    "twice; IBAN GB82 WEST 1234 5698 7654 32 for the refund. "
)
KINDS = {
    "prose + 2 values (realistic)": REALISTIC,
    "code": CODE,
    "number-dense": NUMBERS,
    "values-dense": VALUES,
}


def prompt(unit: str) -> str:
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


def percentiles(run: Callable[[], object], rounds: int) -> tuple[float, float]:
    """p50 and p99 of ``run`` in microseconds."""
    run()  # warm
    samples = []
    gc.disable()
    try:
        for _ in range(rounds):
            started = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - started) / 1000)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]


def first_token(detector: Detector, text: str) -> Callable[[], object]:
    def run() -> None:
        request = Request(dialect="openai", model="m", messages=[Message("user", [TextPart(text)])])
        masking = Masker(detector).request(request)
        guard = RequestGuard(masking.counts, None, masking.values)
        guard.feed([TextDelta("Sure, <EMAIL_1>")])

    return run


def per_token(feed: Callable[[list[TextDelta]], object], tokens: int = 2000) -> Callable[[], None]:
    batches = [[TextDelta(" word")] for _ in range(tokens)]

    def run() -> None:
        for batch in batches:
            feed(batch)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    detector = Detector()
    print(
        f"before the first token, {SIZE}-character prompt, default entities, {args.rounds} rounds"
    )
    print("| prompt | values | mask + restore + first token p50 / p99 µs | detection p50 µs |")
    print("| --- | ---: | ---: | ---: |")
    for kind, unit in KINDS.items():
        text = prompt(unit)
        p50, p99 = percentiles(first_token(detector, text), args.rounds)
        found, _ = percentiles(lambda text=text: detector.find(text), args.rounds)  # type: ignore[misc]
        print(f"| {kind} | {len(detector.find(text))} | {p50:.0f} / {p99:.0f} | {found:.0f} |")

    rounds = max(10, args.rounds // 20)
    print(f"\nper token (' word' events, 2,000 a round, {rounds} rounds), ns")
    print("| hook | p50 ns | p99 ns |")
    print("| --- | ---: | ---: |")
    restoring = RequestGuard({"EMAIL": 1}, None, {"<EMAIL_1>": "a@b.co"})
    hooks: dict[str, Callable[[list[Any]], object]] = {
        "nothing masked (no hook)": lambda batch: batch,
        "restorer installed (text without '<')": restoring.feed,
    }
    for action, cap in (("mask", 256), ("block", 256), ("mask", 4096), ("block", 4096)):
        settings = OutputGuardSettings(
            secrets=True,
            action=action,  # type: ignore[arg-type]
            max_match_chars=cap,
        )
        rules = OutputRules(settings, detector, detector.max_match_chars)
        name = f"output guard, secrets, {action}, max_match_chars {cap}"
        hooks[name] = OutputGuard(rules).feed
    for name, feed in hooks.items():
        p50, p99 = percentiles(per_token(feed), rounds)
        print(f"| {name} | {p50 * 1000 / 2000:.0f} | {p99 * 1000 / 2000:.0f} |")


if __name__ == "__main__":
    main()
