"""The token estimator's error on the token-count corpus, and its speed.

    .venv/bin/python bench/estimate_error.py

``tests/data/token_counts.jsonl`` holds texts of several kinds with two true counts each:
``o200k`` (OpenAI's tokenizer for gpt-4o and gpt-5, official tiktoken) and ``claude2``
(the Claude 2 tokenizer, the only Claude tokenizer published; current Claude models use another
one). The estimator was fitted to ``o200k`` on the lines marked ``tune``; ``held-out`` lines were
not used. Error is |estimate - true| / true per text; the table gives its mean and 95th
percentile, and the bias of the summed counts (how far a total over many requests is off).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from tokenrelay.metering.estimate import estimate_tokens

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "token_counts.jsonl"
LENGTHS = ((1, 20), (20, 50), (50, 150), (150, 500), (500, 10**9))


class Line(msgspec.Struct):
    kind: str
    split: str
    o200k: int
    claude2: int
    source: str
    text: str


def load() -> list[Line]:
    return [msgspec.json.decode(row, type=Line) for row in CORPUS.read_bytes().splitlines()]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else 0.0


def row(name: str, lines: list[Line], truth: Callable[[Line], int]) -> str:
    estimates = [estimate_tokens(line.text) for line in lines]
    true = [truth(line) for line in lines]
    errors = [abs(e - t) / t for e, t in zip(estimates, true, strict=True)]
    bias = sum(estimates) / sum(true) - 1
    return (
        f"| {name} | {len(lines)} | {sum(true)} | {statistics.mean(errors):.3f} "
        f"| {p95(errors):.3f} | {bias:+.3f} |"
    )


def table(
    title: str, groups: Iterable[tuple[str, list[Line]]], truth: Callable[[Line], int]
) -> None:
    print(f"\n{title}\n")
    print("| texts | n | true tokens | mean error | p95 error | bias of the sum |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, lines in groups:
        if lines:
            print(row(name, lines, truth))


def speed(lines: list[Line]) -> None:
    """Nanoseconds per character, over the whole corpus run as one batch, best of five."""
    ascii_text = [line.text for line in lines if line.text.isascii()]
    other = [line.text for line in lines if not line.text.isascii()]
    print("\nspeed (best of 5 passes over the corpus)\n")
    for name, texts in (("ASCII texts", ascii_text), ("texts with other scripts", other)):
        chars = sum(map(len, texts))
        best = min(_timed(texts) for _ in range(5))
        print(f"- {name}: {best / chars * 1e9:.0f} ns per character ({chars} characters)")
    long = "\n\n".join(ascii_text)[:4000]
    best = min(_timed([long] * 100) for _ in range(5)) / 100
    print(f"- one 4000-character English answer: {best * 1e6:.0f} µs")


def _timed(texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        estimate_tokens(text)
    return time.perf_counter() - start


def main() -> None:
    lines = load()
    by_kind: defaultdict[str, list[Line]] = defaultdict(list)
    for line in lines:
        by_kind[line.kind].append(line)
    splits = [
        ("all", lines),
        ("tune", [line for line in lines if line.split == "tune"]),
        ("held-out", [line for line in lines if line.split == "held-out"]),
    ]
    kinds = sorted(by_kind.items())
    lengths = [
        (f"{low}-{high - 1} tokens" if high < 10**9 else f"{low}+ tokens", group)
        for low, high in LENGTHS
        if (group := [line for line in lines if low <= line.o200k < high])
    ]
    table("against o200k_base (what it was fitted to)", splits + kinds + lengths, _o200k)
    table("against the Claude 2 tokenizer (for reference only)", splits + kinds, _claude2)
    speed(lines)


def _o200k(line: Line) -> int:
    return line.o200k


def _claude2(line: Line) -> int:
    return line.claude2


if __name__ == "__main__":
    main()
