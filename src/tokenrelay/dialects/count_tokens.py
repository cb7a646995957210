"""Anthropic's token counting API, ``POST /v1/messages/count_tokens``: a Messages request
without the fields that only matter to generation, answered ``{"input_tokens": N}``.

One codec for its four uses, like every dialect: the gateway's front reads a client's body with
``parse_request``; to an Anthropic upstream it sends ``encode_request`` of the Messages body it
would have sent (so the route's system prompt and the target's model are counted as served);
the simulator reads with ``parse_request`` and answers with ``encode_response``; the upstream's
answer is checked by ``parse_response`` and passed on as it came (a beta's extra fields too).
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenrelay.dialects import anthropic
from tokenrelay.dialects.body import decode_body
from tokenrelay.model import GatewayError, Request

# Fields of a Messages request that count_tokens refuses ("Extra inputs are not permitted"):
# they shape the answer, not the prompt.
GENERATION_FIELDS = frozenset(
    {"max_tokens", "stream", "metadata", "stop_sequences", "temperature", "top_p", "top_k"}
    | {"service_tier", "container", "inference_geo", "diagnostics"}
)

_encode = msgspec.json.encode


def parse_request(body: bytes) -> Request:
    """A count_tokens body as the normalized request of the Messages call it stands for
    (``max_tokens`` None: nothing is generated); a 400 naming the field, as Anthropic words it."""
    data = decode_body(body)
    if not isinstance(data, dict):
        raise GatewayError(
            "invalid_request", "the request body must be a JSON object with model and messages", 400
        )
    for key in data:
        if key in GENERATION_FIELDS:
            raise GatewayError(
                "invalid_request",
                f"{key}: Extra inputs are not permitted (count_tokens counts the prompt; "
                "send max_tokens, stream and sampling settings to /v1/messages only)",
                400,
                param=key,
            )
    # The Messages reader wants max_tokens; a count has none, so it is set and then cleared.
    request = anthropic.parse_request(_encode({**data, "max_tokens": 1}))
    request.max_tokens = None
    request.stream = False
    return request


def encode_request(messages_body: bytes) -> bytes:
    """The count_tokens body for an upstream, from the Messages body the gateway would send it
    (model substituted, route's system prompt and target's params applied)."""
    data: dict[str, Any] = msgspec.json.decode(messages_body)
    return _encode({key: value for key, value in data.items() if key not in GENERATION_FIELDS})


def encode_response(input_tokens: int) -> bytes:
    return _encode({"input_tokens": input_tokens})


def parse_response(body: bytes) -> int:
    """The count in an upstream's answer; ``ValueError`` when the answer is not one."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ValueError("the answer is not JSON") from None
    count = data.get("input_tokens") if isinstance(data, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("the answer has no input_tokens count")
    return count
