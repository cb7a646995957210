"""Token counts for a request whose upstream never reported them (abort, mid-stream error, idle
timeout), from the prompt and from what was actually streamed.

No tokenizer of the current models runs offline here (tiktoken fetches its tables at first use,
and Claude's tokenizer is not published), so ``estimate_tokens`` is a linear model over counts of
character classes (Latin words and their length, digits, punctuation runs, newlines, CJK, Cyrillic,
other scripts), fitted to the true ``o200k_base`` counts of ``tests/data/token_counts.jsonl``.
Its error on that corpus is in the README and ``bench/estimate_error.py`` prints it. The counts
come from byte-level ``translate`` and ``count`` passes rather than regular expressions, which
were ten times slower.
"""

from __future__ import annotations

import msgspec

from tokenrelay.model import (
    ImagePart,
    Request,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)


def _class_table() -> bytes:
    """One byte per UTF-8 byte: the class of the character it starts. Continuation bytes are
    deleted, so each character leaves one class byte; a non-ASCII character is classed by its
    lead byte, which is enough to tell the scripts apart that tokenize differently."""
    table = bytearray(b" " * 256)
    for byte in range(128):
        char = chr(byte)
        if char.isalpha():
            table[byte] = ord("a") if char.islower() else ord("A")
        elif char.isdigit():
            table[byte] = ord("0")
        elif char == "\n":
            table[byte] = ord("\n")
        elif not char.isspace():
            table[byte] = ord(".")
    for lead, cls in (
        (range(0xC0, 0xC3), "o"),  # U+0080-U+00BF: Latin-1 punctuation and symbols
        (range(0xC3, 0xCA), "l"),  # U+00C0-U+027F: accented Latin letters
        (range(0xCA, 0xD0), "o"),  # IPA, Greek
        (range(0xD0, 0xD4), "y"),  # U+0400-U+04FF: Cyrillic
        (range(0xD4, 0xE3), "o"),  # Armenian, Hebrew, Arabic, Indic, Thai, punctuation, symbols
        (range(0xE3, 0xE4), "k"),  # U+3000-U+3FFF: CJK punctuation, kana
        (range(0xE4, 0xEA), "h"),  # U+4000-U+9FFF: Han
        (range(0xEA, 0xEE), "g"),  # U+A000-U+DFFF: mostly Hangul
        (range(0xEE, 0x100), "o"),  # fullwidth forms, emoji, the rest
    ):
        for byte in lead:
            table[byte] = ord(cls)
    return bytes(table)


_CLASSES = _class_table()
_CONTINUATION = bytes(range(0x80, 0xC0))
# Latin letters to "a", digits "0", punctuation ".", everything else a space: for counting runs.
_RUNS = bytes.maketrans(b"aAl0.ohkgy\n", b"aaa0.      ")

# Tokens per unit of each count of ``_counts``, fitted on the corpus's "tune" split (least
# squares on relative error, non-negative weights).
_WEIGHTS = (
    0.676,  # a run of Latin letters
    0.086,  # a Latin letter: long words split into several tokens
    1.550,  # a run of digits
    0.892,  # a run of punctuation
    0.304,  # a line break
    1.535,  # a camelCase boundary
    0.485,  # an accented Latin letter, besides being a letter
    0.766,  # a Han character
    0.666,  # kana or CJK punctuation
    0.751,  # a Hangul syllable
    0.287,  # a Cyrillic letter
    0.379,  # another script, symbol or emoji: too few in the corpus to say
)

# Chat formatting the upstream adds around the texts (OpenAI's published accounting: about 3
# tokens per message plus its role, 3 to prime the reply; tools are rendered in a compact form a
# little larger than their JSON). Approximations: the corpus measures texts, not this framing.
MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3
TOOL_OVERHEAD = 8  # per tool definition, besides its JSON
TOOLS_OVERHEAD = 12  # once when there are tools
TOOL_CALL_OVERHEAD = 3  # per tool call in the history, besides its name and arguments
IMAGE_TOKENS = 1_000  # a flat guess: the real count depends on the image's size and the provider

_encode = msgspec.json.encode


def _counts(text: str) -> tuple[int, ...]:
    """What the token count depends on, in ``_WEIGHTS`` order, from C-speed passes (encode, two
    ``translate``, up to 18 ``count``): about 25 ns per character in all, 100 µs for a
    4000-character answer, where regular expressions took 250 ns."""
    chars = text.encode("utf-8", "surrogatepass").translate(_CLASSES, _CONTINUATION)
    runs = chars.translate(_RUNS)
    count = chars.count
    first = runs[:1]
    ascii_only = text.isascii()
    return (
        runs.count(b" a") + runs.count(b".a") + runs.count(b"0a") + (first == b"a"),
        runs.count(b"a"),
        runs.count(b" 0") + runs.count(b".0") + runs.count(b"a0") + (first == b"0"),
        runs.count(b" .") + runs.count(b"a.") + runs.count(b"0.") + (first == b"."),
        count(b"\n"),
        count(b"aA"),
        0 if ascii_only else count(b"l"),
        0 if ascii_only else count(b"h"),
        0 if ascii_only else count(b"k"),
        0 if ascii_only else count(b"g"),
        0 if ascii_only else count(b"y"),
        0 if ascii_only else count(b"o"),
    )


def estimate_tokens(text: str) -> int:
    """Tokens ``text`` would take, calibrated on ``o200k_base``; 0 only for the empty string."""
    if not text:
        return 0
    total = sum(weight * n for weight, n in zip(_WEIGHTS, _counts(text), strict=True))
    return max(1, round(total))


def estimate_prompt_tokens(request: Request) -> int:
    """The prompt as the upstream would count it: system, every message, tool definitions."""
    total = REPLY_OVERHEAD
    if request.system:
        total += MESSAGE_OVERHEAD + estimate_tokens(request.system)
    for message in request.messages:
        total += MESSAGE_OVERHEAD
        for part in message.content:
            if isinstance(part, TextPart | ThinkingPart):
                total += estimate_tokens(part.text)
            elif isinstance(part, ToolResultPart):
                total += estimate_tokens(part.content)
            elif isinstance(part, ToolCallPart):
                total += TOOL_CALL_OVERHEAD + estimate_tokens(part.name)
                total += estimate_tokens(part.arguments)
            elif isinstance(part, ImagePart):
                total += IMAGE_TOKENS
    if request.tools:
        total += TOOLS_OVERHEAD
        for tool in request.tools:
            definition = {"name": tool.name, "parameters": tool.parameters}
            if tool.description:
                definition["description"] = tool.description
            total += TOOL_OVERHEAD + estimate_tokens(_encode(definition).decode())
    return total


def estimate_usage(
    request: Request,
    completion_text: str,
    *,
    thinking_text: str = "",
    tool_arguments: str = "",
    reported: Usage | None = None,
) -> Usage:
    """Usage for a stream that ended without the upstream's final report.

    Counts the upstream did report are kept: the prompt (``input_tokens`` and the cache counts,
    which Anthropic sends in ``message_start`` before any text) is exact when known, and only
    estimated when not. Output is what was streamed, estimated, but never less than an output
    count already reported (those are running totals, so lower bounds). Reasoning that the
    upstream does not stream (OpenAI's hidden reasoning) cannot be seen, and Anthropic streams a
    summary of thinking while billing all of it, so for reasoning models this undercounts.
    """
    reported = reported or Usage()
    thinking = estimate_tokens(thinking_text)
    output = estimate_tokens(completion_text) + thinking + estimate_tokens(tool_arguments)
    if reported.output_tokens is not None:
        output = max(output, reported.output_tokens)
    reasoning = reported.reasoning_tokens
    if reasoning is None and thinking_text:
        reasoning = thinking
    input_tokens = reported.input_tokens
    if input_tokens is None:
        input_tokens = estimate_prompt_tokens(request)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output,
        cache_read_tokens=reported.cache_read_tokens,
        cache_write_tokens=reported.cache_write_tokens,
        reasoning_tokens=reasoning,
    )
