"""Prompt screening: length caps, injection rules, a classifier plug-in, and output canaries.

Importing this package is cheap; the rule tables and the anchor automata (``ahocorasick-rs``)
load when a screen that screens is made (at start-up), each rule's expression on its first use,
and aiohttp only when an HTTP classifier first calls out.
"""

from tokenrelay.screening.canary import CanaryWatch, canary_instruction, leak_error, make_canary
from tokenrelay.screening.classifier import (
    Classifier,
    ClassifierError,
    HTTPClassifier,
    ThreadClassifier,
)
from tokenrelay.screening.screen import (
    Screen,
    ScreenSettings,
    ScreenText,
    Verdict,
    length_error,
    refusal,
    split_documents,
    texts_of,
)

__all__ = [
    "CanaryWatch",
    "Classifier",
    "ClassifierError",
    "HTTPClassifier",
    "Screen",
    "ScreenSettings",
    "ScreenText",
    "ThreadClassifier",
    "Verdict",
    "canary_instruction",
    "leak_error",
    "length_error",
    "make_canary",
    "refusal",
    "split_documents",
    "texts_of",
]
