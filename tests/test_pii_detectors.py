"""The built-in PII detectors: each type found in its usual formats, look-alikes left alone,
checksums, overlaps, and the operator's custom patterns."""

from __future__ import annotations

import itertools

import pytest

from tokenrelay.guard import validators
from tokenrelay.guard.detectors import Detector
from tokenrelay.guard.entities import DEFAULT_ENTITIES, ENTITY_TYPES, MAX_CHARS, Found

EVERYTHING = Detector(ENTITY_TYPES)


def found(text: str, detector: Detector = EVERYTHING) -> list[tuple[str, str]]:
    return [(item.entity, text[item.start : item.end]) for item in detector.find(text)]


@pytest.mark.parametrize(
    ("entity", "value"),
    [
        ("email", "john.doe@example.com"),
        ("email", "a+tag@sub.mail.example.co.uk"),
        ("email", "josé.garcía@correo.es"),
        ("phone", "+44 20 7946 0958"),
        ("phone", "(555) 123-4567"),
        ("phone", "+49 30 901820"),
        ("phone", "+1-202-555-0173"),
        ("phone", "+33 6 12 34 56 78"),
        ("phone", "06 12 34 56 78"),
        ("phone", "03-1234-5678"),
        ("phone", "+81 90 1234 5678"),
        ("phone", "+44 (0)20 7946 0958"),
        ("phone", "555.123.4567"),
        ("card", "4111 1111 1111 1111"),
        ("card", "5500-0000-0000-0004"),
        ("card", "378282246310005"),
        ("card", "6011111111111117"),
        ("iban", "DE89 3704 0044 0532 0130 00"),
        ("iban", "GB82WEST12345698765432"),
        ("iban", "FR14 2004 1010 0505 0001 3M02 606"),
        ("ip", "203.0.113.7"),
        ("ip", "2001:db8::8a2e:370:7334"),
        ("api_key", "sk-proj-abc123DEF456ghi789JKL012"),
        ("api_key", "sk-ant-api03-Zx9aB8cD7eF6gH5iJ4kL3mN2oP1qR0sT"),
        ("api_key", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("api_key", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp"),
        ("api_key", "AIzaSyD-1234567890abcdefghijklmnopqrstu"),
        ("api_key", "glpat-xY12zW34vU56tS78rQ90"),
        ("api_key", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
        ("api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("api_key", "trk_" + "aB3dE9xq" * 5),
        (
            "jwt",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
        ("aws_key", "AKIAIOSFODNN7EXAMPLE"),
        ("us_ssn", "123-45-6789"),
    ],
)
def test_each_type_is_found_in_a_sentence(entity: str, value: str) -> None:
    text = f"Please use {value} for this, thanks."
    assert found(text) == [(entity, value)]


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is on 2024-01-15 at 10:30, or 15.01.2024.",
        "Upgrade to version 1.2.3.4 or v10.0.0.1 today.",
        "Order #123-456-7890 shipped; invoice 2024-000123.",
        "ISBN 0-306-40615-2 and 978-3-16-148410-0.",
        "It costs 1.234,56 EUR or $1,234.56 for 12 345 678 units.",
        "id 550e8400-e29b-41d4-a716-446655440000, sha da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "Coordinates 48.8566, 2.3522 and pi 3.14159265.",
        "Bind to 127.0.0.1 or 0.0.0.0 with mask 255.255.255.0.",
        "The number 4111111111111112 fails Luhn.",
        "std::vector<int> v; a::b::c(); 12:30:45",
        "Set the header to Bearer YOUR_API_KEY_HERE.",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert found(text) == []


def test_validators() -> None:
    assert validators.luhn("4111111111111111")
    assert not validators.luhn("4111111111111112")
    assert validators.iban("DE89370400440532013000")
    assert not validators.iban("DE89370400440532013001")
    assert not validators.iban("DE8937040044053201300")  # one short for Germany
    assert not validators.us_ssn("666", "12", "3456")
    assert not validators.us_ssn("900", "12", "3456")
    assert not validators.us_ssn("123", "00", "3456")
    assert validators.jwt_header("eyJhbGciOiJIUzI1NiJ9")
    assert not validators.jwt_header("eyJmb28iOiJiYXIifQ")  # {"foo":"bar"}: no alg
    assert not validators.card_number("1234567812345670")  # passes Luhn, no issuer range


def test_ssn_is_opt_in() -> None:
    assert "us_ssn" not in DEFAULT_ENTITIES
    assert found("SSN 123-45-6789", Detector()) == []


def test_only_enabled_types_are_found() -> None:
    detector = Detector(["email"])
    assert found("mail a@b.example or 4111 1111 1111 1111", detector) == [("email", "a@b.example")]


def test_unknown_entity_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown PII entity type passport"):
        Detector(["email", "passport"])


def test_overlaps_keep_the_longest() -> None:
    text = "write to +4930901820@fax.example.com now"
    assert found(text) == [("email", "+4930901820@fax.example.com")]
    result = EVERYTHING.find("x 4111 1111 1111 1111 y 192.168.10.20")
    assert [item.entity for item in result] == ["card", "ip"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(result))


def test_custom_patterns() -> None:
    detector = Detector(["email"], custom={"employee": r"EMP-\d{5}"})
    assert detector.find("ask EMP-12345") == [Found(4, 13, "custom:employee")]
    assert detector.max_match_chars == MAX_CHARS["email"]
    assert Detector([], custom={"ticket": r"TCK-\d{40}"}).max_match_chars == 44
    assert Detector([], custom={"any": r"X\d+"}).max_match_chars is None


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"broken": "EMP-(\\d"}, "custom PII pattern 'broken' is not a valid regex"),
        ({"empty": "x*"}, "custom PII pattern 'empty' matches the empty string"),
        ({"bad name!": "x"}, "custom PII pattern name 'bad name!'"),
    ],
)
def test_bad_custom_patterns_are_named(custom: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Detector(custom=custom)


def test_max_match_chars_covers_the_enabled_types() -> None:
    assert Detector(["phone", "card"]).max_match_chars == max(MAX_CHARS["phone"], MAX_CHARS["card"])
    assert Detector().max_match_chars == MAX_CHARS["jwt"]
