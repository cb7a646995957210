"""Checksums and number rules that turn a pattern match into a finding (or throw it away).

A random 16-digit number passes Luhn one time in ten and an IBAN-shaped string passes mod-97
about one time in 97: these checks are most of the detectors' precision.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress

import msgspec

# SWIFT's IBAN registry: the length of a whole IBAN per country code.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def luhn(digits: str) -> bool:
    """The Luhn check every payment card number passes (``digits``: digits only)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_issuer_known(digits: str) -> bool:
    """Whether the number starts with an issuer range (IIN) of a card scheme, at that length."""
    length = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return length in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return length == 16
    if two in (34, 37):  # American Express
        return length == 15
    if 2200 <= four <= 2204:  # Mir
        return 16 <= length <= 19
    if two == 62 or two == 81:  # UnionPay
        return 16 <= length <= 19
    if four == 6011 or 644 <= int(digits[:3]) <= 649 or two == 65:  # Discover
        return 16 <= length <= 19
    if 3528 <= four <= 3589:  # JCB
        return 16 <= length <= 19
    if 300 <= int(digits[:3]) <= 305 or two in (36, 38, 39):  # Diners Club
        return 14 <= length <= 19
    if two == 50 or 56 <= two <= 69:  # Maestro
        return 12 <= length <= 19
    return False


def card_number(digits: str) -> bool:
    """A payment card number: 13 to 19 digits, a known issuer range, and the Luhn check."""
    return 13 <= len(digits) <= 19 and card_issuer_known(digits) and luhn(digits)


def iban(compact: str) -> bool:
    """An IBAN without spaces: the country's length and the ISO 7064 mod-97 check."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(char, 36)) for char in moved))
    except ValueError:
        return False
    return number % 97 == 1


def us_ssn(area: str, group: str, serial: str) -> bool:
    """The SSA's rules: no area 000, 666 or 900-999, no group 00, no serial 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def public_ip(text: str) -> bool:
    """An IP address worth masking: valid, and not loopback, unspecified or a netmask."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.is_loopback or address.is_unspecified:
        return False
    if address.version == 4:
        return not text.startswith("255.")  # a netmask or the broadcast address
    return not address.is_multicast


def jwt_header(part: str) -> bool:
    """Whether a JWT's first part decodes (base64url) to a JSON object with an ``alg``."""
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        header = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def mixed_characters(token: str) -> bool:
    """A secret-looking body: at least one letter and one digit (a slug or a word has none)."""
    return any(char.isdigit() for char in token) and any(char.isalpha() for char in token)
