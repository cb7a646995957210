"""The typed shape of an OpenAI stream chunk, for the reader's fast path.

Decoding straight into these structs skips the fields the reader never looks at (``id``,
``object``, ``created``...) instead of building a dict for each. Every field is as loose as the
reader's dict path accepts; a chunk of another shape (a ``delta`` that is not an object, a
choice that is not one) fails validation and takes the dict path, which decides as before.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Delta(msgspec.Struct, gc=False):
    content: Any = None
    refusal: Any = None
    reasoning_content: Any = None
    reasoning: Any = None
    tool_calls: Any = None


class Choice(msgspec.Struct, gc=False):
    index: Any = 0
    delta: Delta | None = None
    logprobs: Any = None
    finish_reason: Any = None


class Chunk(msgspec.Struct, gc=False):
    model: Any = None
    choices: list[Choice] | None = None
    usage: Any = None
    error: Any = None


NO_DELTA = Delta()  # a choice without one (or with ``null``): read as the dict path's ``{}``
decode_chunk = msgspec.json.Decoder(Chunk).decode
