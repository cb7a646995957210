"""PII detection quality: recall per entity type and false positives on the benign set.

    PYTHONPATH=src .venv/bin/python bench/pii_quality.py [--misses]

Reads the corpus in tests/data/pii (see tests/pii_corpus.py), runs the built-in detector with
every type enabled, and prints a Markdown table (the one in docs/guard-detection.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pii_corpus import load, measure

from tokenrelay.guard.detectors import Detector
from tokenrelay.guard.entities import ENTITY_TYPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="print what was missed or flagged")
    args = parser.parse_args()
    positive, negative = load()
    quality = measure(Detector(ENTITY_TYPES), positive, negative)
    print("| entity | labelled spans | recall |")
    print("| --- | ---: | ---: |")
    for entity, recall in quality.recall.items():
        print(f"| {entity} | {quality.spans[entity]} | {recall:.3f} |")
    flagged = round(quality.false_positive_rate * quality.benign_texts)
    print(
        f"\nbenign texts: {quality.benign_texts}, flagged: {flagged} "
        f"(false-positive rate {quality.false_positive_rate:.3f}); "
        f"unlabelled findings in positive texts: {quality.spurious_in_positives}"
    )
    if args.misses:
        for entity, text in quality.missed:
            print(f"missed {entity}: {text!r}")
        for entity, value in quality.false_positives:
            print(f"flagged {entity}: {value!r}")


if __name__ == "__main__":
    main()
