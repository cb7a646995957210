"""The simulator's ``POST /v1/embeddings``: deterministic vectors for tests, demos and the
semantic cache's quality bench, in OpenAI's wire shape.

A vector is a hashed bag of features of the text: lower-cased word stems (a crude suffix
stripper) outside a short list of function words, and each ordered pair of neighbouring stems at
half weight, so that word order counts a little ("5 km to miles" is not "5 miles to km"). Each
feature lands in one of ``DIMENSIONS`` buckets with a hash-chosen sign, and the vector is
L2-normalized, so a dot product is a cosine similarity. It is a stand-in: it knows no synonyms,
and a real embedding model must be measured on real traffic (docs/cache-semantic.md).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata

import msgspec

from tokenrelay.model import GatewayError

DIMENSIONS = 256
PAIR_WEIGHT = 0.5  # an ordered pair of neighbouring stems counts half a word
MAX_INPUTS = 2048  # as OpenAI's limit on inputs per request

_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
# Words that say little about what is asked; negations are NOT here: they change the answer.
_FUNCTION_TEXT = (
    "a an the of to in on at for from by with about as into is are was were be been being am "
    "do does did i me my you your we our it its this that these those there here s "
    "please can could would will shall should may might tell give show what which who whom "
    "whose and or but so if then than"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_TEXT.split())
_NEGATIONS = {"t": "not", "nt": "not", "no": "not", "never": "not", "without": "not"}
_SUFFIXES = ("ational", "ization", "ness", "ment", "ing", "ies", "ied", "es", "ed", "ly", "s")


class _Request(msgspec.Struct):
    input: str | list[str]
    model: str = "sim-embedding"
    encoding_format: str = "float"


def _stem(word: str) -> str:
    """Strip one common English suffix from a longer word ("capitals" -> "capital")."""
    if len(word) <= 4 or word[0].isdigit():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            return stem + "y" if suffix in ("ies", "ied") else stem
    return word


def features(text: str) -> list[tuple[str, float]]:
    """The weighted features of ``text``: its content stems, then its ordered stem pairs."""
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    stems: list[str] = []
    for word in _WORD.findall(plain.replace("'", " ").replace("\u2019", " ")):
        word = _NEGATIONS.get(word, word)
        if word not in _FUNCTION_WORDS:
            stems.append(_stem(word))
    found = [(stem, 1.0) for stem in stems]
    found.extend((f"{a}>{b}", PAIR_WEIGHT) for a, b in itertools.pairwise(stems))
    return found


def embed(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """The unit vector of ``text`` (all zeros for a text with no content word)."""
    vector = [0.0] * dimensions
    for feature, weight in features(text):
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        vector[digest % dimensions] += weight if digest >> 63 else -weight
    norm = math.sqrt(math.fsum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector


def answer(body: bytes) -> bytes:
    """The JSON answer to an embeddings request body, or a ``GatewayError`` (400) saying what
    is wrong with it."""
    try:
        request = msgspec.json.decode(body, type=_Request)
    except msgspec.DecodeError as exc:
        raise GatewayError("invalid_request", f"invalid embeddings request: {exc}", 400) from None
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts or len(texts) > MAX_INPUTS:
        message = f"input must hold 1 to {MAX_INPUTS} texts, not {len(texts)}"
        raise GatewayError("invalid_request", message, 400, param="input")
    tokens = sum(len(text.split()) for text in texts)
    return msgspec.json.encode(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": embed(text)}
                for index, text in enumerate(texts)
            ],
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
