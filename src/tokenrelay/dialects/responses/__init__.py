"""The OpenAI Responses API (``POST /v1/responses``), wire-exact, as a front, an upstream and
the simulator's third API. ``request`` reads and writes bodies, ``stream`` the event stream,
``whole`` non-streaming responses and errors, ``wire`` the JSON shapes they share.

Storage of responses (``store``, ``previous_response_id``, retrieval) is not part of this
dialect: ``tokenrelay.response_store`` keeps them; ``items``, ``continue_request`` and
``with_references`` (input items that refer to stored ones by id) are what it needs from here.
"""

from __future__ import annotations

from tokenrelay.dialects.responses.request import (
    continue_request,
    encode_request,
    parse_request,
    with_references,
)
from tokenrelay.dialects.responses.stream import (
    ResponsesReader,
    ResponsesWriter,
    stream_reader,
    stream_writer,
)
from tokenrelay.dialects.responses.whole import (
    encode_error,
    encode_response,
    encode_response_for,
    parse_error,
    parse_response,
)
from tokenrelay.dialects.responses.wire import NAME

CONTENT_TYPE = "text/event-stream; charset=utf-8"
ID_PREFIX = "resp_"  # of the ids the gateway gives its responses

__all__ = [
    "CONTENT_TYPE",
    "ID_PREFIX",
    "NAME",
    "ResponsesReader",
    "ResponsesWriter",
    "continue_request",
    "encode_error",
    "encode_request",
    "encode_response",
    "encode_response_for",
    "parse_error",
    "parse_request",
    "parse_response",
    "stream_reader",
    "stream_writer",
    "with_references",
]
