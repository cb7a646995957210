"""The error types are one closed set: every one has a status and a word in each dialect, and a
word from an upstream that is not one of ours never travels on as if it were."""

from __future__ import annotations

from typing import get_args

import pytest

from tokenrelay.dialects import anthropic, generate, openai, uichat
from tokenrelay.dialects.responses import wire
from tokenrelay.model import ERROR_STATUS, ErrorType, GatewayError, is_error_type

TYPES = get_args(ErrorType)


def test_every_type_has_a_status() -> None:
    assert set(ERROR_STATUS) == set(TYPES)
    assert len(TYPES) == len(set(TYPES))


@pytest.mark.parametrize("kind", TYPES)
def test_every_type_renders_in_each_dialect(kind: ErrorType) -> None:
    assert kind in anthropic.ERROR_TYPES
    assert kind in openai.ERROR_TYPES
    assert GatewayError(kind, "m").status == ERROR_STATUS[kind]


def test_tables_that_read_upstream_words_give_ours() -> None:
    for table in (openai._FOREIGN_ERRORS, anthropic._OUR_ERROR_TYPES, wire.FOREIGN_CODES):
        assert all(is_error_type(ours) for ours in table.values()), table


@pytest.mark.parametrize("word", ["overloaded", "rate_limit"])
def test_our_own_word_from_a_gateway_upstream_is_kept(word: str) -> None:
    body = b'{"error": {"type": "%s", "message": "m"}}' % word.encode()
    assert generate.parse_error(503, body, {}).type == word
    assert uichat.parse_error(503, b"m", {"x-tokenrelay-error-type": word}).type == word


def test_a_word_that_is_not_ours_becomes_the_status_default() -> None:
    body = b'{"error": {"type": "quota_gone", "message": "m"}}'
    assert generate.parse_error(500, body, {}).type == "api_error"
    assert generate.parse_error(404, body, {}).type == "invalid_request"
    assert uichat.parse_error(502, b"m", {"x-tokenrelay-error-type": "nope"}).type == "api_error"
    assert not is_error_type("quota_gone")
    assert not is_error_type(None)
