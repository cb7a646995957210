"""Prompt screening: quality on the labelled corpora, and time per 2000-character prompt.

    .venv/bin/python bench/screening.py [--quick] [--techniques] [--stages]

Quality: recall (injections caught) and false positive rate (benign prompts refused) of the
article's six patterns alone and of the full screen, on the first corpus and on its held-out
part; then per category on the categorised corpus of issue 13 (tuned part and held-out file),
each example sent the way a client sends it (a user message, or a tool result) and screened
through ``texts_of``. Time: the rules (normalization, context, decodings and matching) on
2000-character prompts of seven kinds, each prompt screened afresh (the screen's cache of
already-screened texts is emptied first), with p50, p99 and max in microseconds. With
``--stages``, where that time goes: each stage of ``rules.scan`` timed alone on the same prompts.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec

from tokenrelay.model import Message, Request, TextPart, ToolResultPart
from tokenrelay.screening import Screen, ScreenSettings, ScreenText, texts_of
from tokenrelay.screening.rules import article_flags

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
CORPUS = DATA / "screening_corpus.jsonl"
CATEGORISED = {
    "tuned": DATA / "screening_categories.jsonl",
    "held-out": DATA / "screening_holdout.jsonl",
}
SIZE = 2000


class Line(msgspec.Struct):
    text: str
    label: str
    technique: str
    lang: str
    source: str


def held_out(line: Line) -> bool:
    """The held-out part: about 30 % of the lines, by a hash of the text (same as the tests)."""
    return zlib.crc32(line.text.encode()) % 10 < 3


def load() -> list[Line]:
    return [msgspec.json.decode(row, type=Line) for row in CORPUS.read_bytes().splitlines()]


def rates(lines: list[Line], flagged: list[bool]) -> tuple[float, float, int, int]:
    injections = [
        hit for line, hit in zip(lines, flagged, strict=True) if line.label == "injection"
    ]
    benign = [hit for line, hit in zip(lines, flagged, strict=True) if line.label == "benign"]
    return (
        sum(injections) / len(injections),
        sum(benign) / len(benign),
        len(injections),
        len(benign),
    )


def quality(lines: list[Line], techniques: bool) -> None:
    screen = Screen(ScreenSettings())
    full = [
        screen.check_text(
            [ScreenText(line.text, "untrusted" if line.source == "untrusted" else "user")]
        ).injection
        for line in lines
    ]
    article = [article_flags(line.text) for line in lines]
    print("## Quality\n")
    print("| screen | part | injections | benign | recall | false positive rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    parts = {
        "whole": list(range(len(lines))),
        "held-out": [i for i, line in enumerate(lines) if held_out(line)],
    }
    for name, flagged in (("article's six patterns", article), ("full screen", full)):
        for part, indexes in parts.items():
            subset = [lines[i] for i in indexes]
            recall, fpr, n_inj, n_ben = rates(subset, [flagged[i] for i in indexes])
            print(f"| {name} | {part} | {n_inj} | {n_ben} | {recall:.3f} | {fpr:.3f} |")
    if techniques:
        print("\n| technique | label | lines | flagged by the article | flagged by the screen |")
        print("| --- | --- | --- | --- | --- |")
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, line in enumerate(lines):
            groups[(line.label, line.technique)].append(i)
        for (label, technique), indexes in sorted(groups.items()):
            print(
                f"| {technique} | {label} | {len(indexes)} | {sum(article[i] for i in indexes)} "
                f"| {sum(full[i] for i in indexes)} |"
            )
    misses = [
        line for line, hit in zip(lines, full, strict=True) if hit != (line.label == "injection")
    ]
    print(f"\nwrong verdicts: {len(misses)} of {len(lines)}")


class Example(msgspec.Struct):
    text: str
    label: str
    category: str
    lang: str
    source: str


def _request(example: Example) -> Request:
    if example.source == "tool":
        messages = [
            Message("user", [TextPart("Go ahead.")]),
            Message("user", [ToolResultPart("toolu_1", example.text)]),
        ]
    else:
        messages = [Message("user", [TextPart(example.text)])]
    return Request(dialect="anthropic", model="default", messages=messages)


def categories() -> None:
    """Recall or false-positive rate per category, tuned part and held-out file side by side."""
    screen = Screen(ScreenSettings())
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for part, path in CATEGORISED.items():
        for row in path.read_bytes().splitlines():
            example = msgspec.json.decode(row, type=Example)
            refused = screen.check_text(texts_of(_request(example))).injection
            for key in ((example.label, example.category, part),):
                counts[key][0] += 1
                counts[key][1] += refused
            totals[(example.label, part)][0] += 1
            totals[(example.label, part)][1] += refused
    print("\n## Per category (categorised corpus)\n")
    print("| category | kind | tuned: n | tuned: rate | held-out: n | held-out: rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    names = sorted({(label, category) for label, category, _ in counts}, reverse=True)
    for label, category in names:
        cells = []
        for part in CATEGORISED:
            n, hits = counts[(label, category, part)]
            cells.append(f"{n} | {hits / n:.2f}" if n else "0 | -")
        kind = "recall" if label == "injection" else "false positives"
        print(f"| {category} | {kind} | {' | '.join(cells)} |")
    for label, kind in (("injection", "recall"), ("benign", "false positives")):
        cells = []
        for part in CATEGORISED:
            n, hits = totals[(label, part)]
            cells.append(f"{n} | {hits / n:.3f}")
        print(f"| **all** | {kind} | {' | '.join(cells)} |")


def _fill(texts: list[str], rng: random.Random, size: int = SIZE) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        piece = rng.choice(texts)
        out.append(piece)
        length += len(piece) + 1
    return "\n".join(out)[:size]


def prompts(lines: list[Line], count: int) -> dict[str, list[tuple[str, str]]]:
    """2000-character prompts of seven kinds, as (text, source)."""
    rng = random.Random(7)
    everyday = [
        x.text
        for x in lines
        if x.label == "benign" and x.technique in ("general", "writing", "support", "coding")
    ]
    benign_en = [
        x.text for x in lines if x.label == "benign" and x.source == "user" and x.lang == "en"
    ]
    benign_intl = [x.text for x in lines if x.label == "benign" and x.lang != "en"]
    documents = [x.text for x in lines if x.label == "benign" and x.source == "untrusted"]
    attacks = [x.text for x in lines if x.label == "injection" and x.source == "user"]
    short = [a for a in attacks if len(a) < 300]
    personas = [x.text for x in lines if x.technique in ("persona", "jailbreak_persona")]
    tricks = [
        x.text
        for x in lines
        if x.technique.startswith(("encoding", "obfuscation")) and x.label == "injection"
    ]
    kinds: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for _ in range(count):
        kinds["benign, everyday requests"].append((_fill(everyday, rng), "user"))
        kinds["benign, English"].append((_fill(benign_en, rng), "user"))
        kinds["benign, many languages"].append((_fill(benign_en + benign_intl, rng), "user"))
        kinds["benign document (untrusted)"].append((_fill(documents, rng), "untrusted"))
        text = _fill(benign_en, rng, SIZE - 300)
        cut = rng.randrange(len(text))
        kinds["hostile: one attack in benign text"].append(
            ((text[:cut] + " " + rng.choice(short) + " " + text[cut:])[:SIZE], "user")
        )
        kinds["hostile: jailbreak personas"].append((_fill(personas, rng), "user"))
        kinds["hostile: encodings and look-alikes"].append((_fill(tricks + benign_en, rng), "user"))
    return kinds


def timing(lines: list[Line], count: int, repeats: int) -> None:
    started = time.perf_counter()
    screen = Screen(ScreenSettings())
    screen.check_text([ScreenText("warm up: the rule tables load on the first screen", "user")])
    first = (time.perf_counter() - started) * 1000
    from tokenrelay.screening.rules import warm

    warm()  # compile every rule, so the figures below are the steady state
    print(f"\n## Time per {SIZE}-character prompt (µs)\n")
    print(
        f"Each prompt is screened {repeats} times; p50, p99 and max are over the prompts, of each "
        "prompt's fastest run (the screen's own cost), then over every run (with whatever else "
        "the machine was doing).\n"
    )
    print("| prompts | count | p50 | p99 | max | every run: p50 | p99 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    bests: list[float] = []
    runs: list[float] = []
    gc.disable()
    try:
        for kind, batch in prompts(lines, count).items():
            kind_bests: list[float] = []
            kind_runs: list[float] = []
            for text, source in batch:
                item = [ScreenText(text, "untrusted" if source == "untrusted" else "user")]
                samples = []
                for _ in range(repeats):
                    screen._cache.clear()
                    t0 = time.perf_counter()
                    screen.check_text(item)
                    samples.append((time.perf_counter() - t0) * 1e6)
                kind_bests.append(min(samples))
                kind_runs += samples
            bests += kind_bests
            runs += kind_runs
            print(f"| {kind} | {len(batch)} | {_row(kind_bests)} | {_row(kind_runs, full=False)} |")
    finally:
        gc.enable()
    print(f"| all | {len(bests)} | {_row(bests)} | {_row(runs, full=False)} |")
    print(f"\nfirst screen in a fresh process (imports and rule tables): {first:.1f} ms")


def stages(lines: list[Line], count: int) -> None:
    """Each stage of ``rules.scan`` alone, median over the prompts of each prompt's best run."""
    from tokenrelay.screening import rules

    rules.warm()
    print(f"\n## Where the time goes, per {SIZE}-character prompt (µs, median of best of 7)\n")
    print("| prompts | normalize | context | anchors | rule tries | decodings | whole screen |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, batch in prompts(lines, count).items():
        columns: list[list[float]] = [[] for _ in range(6)]
        for text, kept in batch:
            times = _stage_times(text, "untrusted" if kept == "untrusted" else "user")
            for column, took in zip(columns, times, strict=True):
                column.append(took)
        cells = " | ".join(f"{statistics.median(column):.0f}" for column in columns)
        print(f"| {kind} | {cells} |")


def _stage_times(text: str, source: Literal["user", "untrusted"]) -> list[float]:
    from tokenrelay.screening import rules
    from tokenrelay.screening.context import spans
    from tokenrelay.screening.normalize import clean, decodings, fold

    cleaned = clean(text)
    lowered = fold(cleaned)
    where = spans(lowered, pasted=source == "user")
    anchors = rules._Anchors(lowered)
    rot13 = anchors.rot13 if len(anchors.rot13) >= 3 else ()
    reversed_ = anchors.reversed if len(anchors.reversed) >= 2 else ()
    steps = (
        lambda: fold(clean(text)),
        lambda: spans(lowered, pasted=source == "user"),
        lambda: rules._Anchors(lowered),
        lambda: rules._match(anchors, lowered, cleaned, source, {}, where=where, starts=[]),
        lambda: decodings(text, cleaned, lowered, rot13=rot13, reversed_=reversed_),
        lambda: rules.scan(text, source),
    )
    return [_best(step) for step in steps]


def _best(step: Callable[[], object], runs: int = 7) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best * 1e6


def _row(samples: list[float], *, full: bool = True) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, round(len(samples) * 0.99))]
    middle = statistics.median(samples)
    return f"{middle:.0f} | {p99:.0f} | {samples[-1]:.0f}" if full else f"{middle:.0f} | {p99:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompts and repeats")
    parser.add_argument("--techniques", action="store_true", help="recall per technique too")
    parser.add_argument("--stages", action="store_true", help="time each stage of the screen")
    args = parser.parse_args()
    lines = load()
    timing(lines, count=10 if args.quick else 40, repeats=3 if args.quick else 15)
    if args.stages:
        stages(lines, count=10 if args.quick else 40)
    print()
    quality(lines, args.techniques)
    categories()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
