"""The guard's cost: masking a 2,000-character prompt plus restoring the first token (what it
adds before the first token), and the per-token cost of the relay's guard hook when nothing was
masked (no restorer at all) and when a restorer is installed.

    PYTHONPATH=src python bench/pii_guard.py
"""

from __future__ import annotations

import time

from tokenrelay.guard.detectors import Detector
from tokenrelay.guard.mask import Masker
from tokenrelay.guard.route import RequestGuard
from tokenrelay.model import Message, Request, TextDelta, TextPart

PROMPT = (
    "Hello, I am writing about my order 12345 from 2024-05-01 (version 2.3.1). Please reply to "
    "ann.lee@example.com or call +44 20 7946 0958. My card 4111 1111 1111 1111 was charged "
    "twice; IBAN GB82 WEST 1234 5698 7654 32 for the refund. "
) * 8
PROMPT = PROMPT[:2000]


def best(run: object, repeat: int = 200) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2]  # the median


def main() -> None:
    detector = Detector()
    detector.find(PROMPT)  # compiled, warm

    def first_token() -> None:
        request = Request(
            dialect="openai", model="m", messages=[Message("user", [TextPart(PROMPT)])]
        )
        masking = Masker(detector).request(request)
        guard = RequestGuard(masking.counts, None, masking.values)
        guard.feed([TextDelta("Sure, <EMAIL_1>")])

    added = best(first_token)
    detection = best(lambda: detector.find(PROMPT))
    print(f"mask 2,000 chars + restorer + first token: {added * 1000:.3f} ms (median)")
    print(f"  of which detection (Detector.find): {detection * 1000:.3f} ms")
    print(f"  masking + rehydration themselves: {(added - detection) * 1000:.3f} ms")

    tokens = [[TextDelta(" word")] for _ in range(100_000)]

    def relay(guard: RequestGuard | None) -> float:
        started = time.perf_counter()
        for batch in tokens:
            if guard is not None:
                batch = guard.feed(batch)
        return (time.perf_counter() - started) / len(tokens)

    baseline = min(relay(None) for _ in range(5))
    print(f"per token, nothing masked (no restorer): {baseline * 1e9:.0f} ns")
    restoring = RequestGuard({"EMAIL": 1}, None, {"<EMAIL_1>": "a@b.co"})
    per = min(relay(restoring) for _ in range(5))
    print(f"per token, a restorer installed (text without '<'): {per * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
