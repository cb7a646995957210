"""Detection quality on the PII corpus (tests/data/pii): the issue's targets, held as floors.

Deterministic: the corpus is fixed files (a seeded generator plus hand-written cases), so a
change that loses recall or adds false positives fails here, not in production.
"""

from __future__ import annotations

import pytest

from tests.pii_corpus import Quality, generate, load, measure
from tokenrelay.guard.detectors import Detector
from tokenrelay.guard.entities import ENTITY_TYPES

# The targets (emails, cards, IBANs, keys), then floors at the measured level for the rest.
RECALL_FLOOR = {
    "email": 0.95, "card": 0.95, "iban": 0.95, "api_key": 0.95, "jwt": 0.95, "aws_key": 0.95,
    "phone": 0.95, "ip": 0.95, "us_ssn": 0.95,
}  # fmt: skip
FALSE_POSITIVE_CEILING = 0.02


@pytest.fixture(scope="module")
def quality() -> Quality:
    positive, negative = load()
    return measure(Detector(ENTITY_TYPES), positive, negative)


def test_the_corpus_is_big_and_varied_enough() -> None:
    positive, negative = load()
    assert sum(len(example.spans) for example in positive) >= 400
    assert len(negative) >= 400
    assert {example.lang for example in positive} >= {"en", "de", "fr", "es", "ja"}
    assert len({example.shape for example in positive}) >= 60  # formats, not one shape each


def test_the_generated_files_are_what_the_generator_makes() -> None:
    """Nobody edits the generated files by hand (edit the generator and regenerate)."""
    generated_positive, generated_benign = generate()
    positive, negative = load()
    assert positive[: len(generated_positive)] == generated_positive
    assert negative[: len(generated_benign)] == generated_benign


@pytest.mark.parametrize("entity", sorted(RECALL_FLOOR))
def test_recall_per_entity_type(quality: Quality, entity: str) -> None:
    missed = [text for kind, text in quality.missed if kind == entity]
    assert quality.recall[entity] >= RECALL_FLOOR[entity], missed[:5]


def test_false_positive_rate_on_the_benign_set(quality: Quality) -> None:
    assert quality.false_positive_rate <= FALSE_POSITIVE_CEILING, quality.false_positives[:5]
    assert quality.spurious_in_positives <= 5
