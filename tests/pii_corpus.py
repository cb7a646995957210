"""The PII corpus: labelled prompts with personal data, a benign set, and how a detector scores.

The generated part comes from a seeded generator (the same files every run); the hand-written
tricky cases sit beside it. Regenerate after changing the generator::

    PYTHONPATH=src .venv/bin/python -m tests.pii_corpus
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

from tokenrelay.guard.detectors import Detector
from tokenrelay.guard.validators import IBAN_LENGTHS, luhn

DATA = Path(__file__).parent / "data" / "pii"
SEED = 19
ALNUM = string.ascii_letters + string.digits


class Example(msgspec.Struct):
    text: str
    spans: list[tuple[int, int, str]]  # start, end, entity
    lang: str = "en"
    shape: str = ""


# --- values ---------------------------------------------------------------------------------

FIRST = ["john", "maria", "jürgen", "françoise", "josé", "yuki", "li", "anna", "pierre", "carmen"]
LAST = ["smith", "müller", "dubois", "garcía", "tanaka", "rossi", "nowak", "berg", "lee", "kim"]
ASCII = {"ü": "u", "ç": "c", "é": "e", "í": "i", "ö": "o"}
DOMAINS = [
    "example.com", "mail.example.org", "firma.de", "societe.fr", "empresa.es", "kaisha.co.jp",
    "uni-heidelberg.de", "example.co.uk", "startup.io", "gmail.com", "corp.example.net",
]  # fmt: skip


def _plain(name: str) -> str:
    return "".join(ASCII.get(char, char) for char in name)


def email(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    shape = rng.choice(["dot", "under", "plus", "digits", "initial", "upper", "accent"])
    if shape != "accent":
        first, last = _plain(first), _plain(last)
    local = {
        "dot": f"{first}.{last}",
        "under": f"{first}_{last}",
        "plus": f"{first}+news{rng.randint(1, 99)}",
        "digits": f"{first}{rng.randint(1, 9999)}",
        "initial": f"{first[0]}{last}",
        "upper": f"{first.title()}.{last.title()}",
        "accent": f"{first}.{last}",
    }[shape]
    return f"{local}@{rng.choice(DOMAINS)}", shape


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def phone(rng: random.Random) -> tuple[str, str]:
    d = lambda n: _digits(rng, n)  # noqa: E731 - a short local helper
    area = str(rng.randint(201, 989))
    shapes: dict[str, Callable[[], str]] = {
        "us-paren": lambda: f"({area}) {d(3)}-{d(4)}",
        "us-dash": lambda: f"{area}-{d(3)}-{d(4)}",
        "us-dot": lambda: f"{area}.{d(3)}.{d(4)}",
        "us-e164": lambda: f"+1 {area} {d(3)} {d(4)}",
        "us-e164-dash": lambda: f"+1-{area}-{d(3)}-{d(4)}",
        "uk-e164": lambda: f"+44 20 {d(4)} {d(4)}",
        "uk-mobile": lambda: f"+44 7{d(3)} {d(6)}",
        "uk-national": lambda: f"020 {d(4)} {d(4)}",
        "uk-zero": lambda: f"+44 (0)20 {d(4)} {d(4)}",
        "de-e164": lambda: f"+49 30 {d(6)}",
        "de-mobile": lambda: f"+49 151 {d(8)}",
        "de-national": lambda: f"030 {d(7)}",
        "de-mobile-national": lambda: f"0151 {d(8)}",
        "fr-e164": lambda: f"+33 {rng.randint(1, 7)} {d(2)} {d(2)} {d(2)} {d(2)}",
        "fr-national": lambda: f"0{rng.randint(1, 7)} {d(2)} {d(2)} {d(2)} {d(2)}",
        "fr-dots": lambda: f"0{rng.randint(6, 7)}.{d(2)}.{d(2)}.{d(2)}.{d(2)}",
        "es-e164": lambda: f"+34 {rng.randint(6, 9)}{d(2)} {d(3)} {d(3)}",
        "jp-e164": lambda: f"+81 3-{d(4)}-{d(4)}",
        "jp-national": lambda: f"03-{d(4)}-{d(4)}",
        "jp-mobile": lambda: f"090-{d(4)}-{d(4)}",
        "e164-compact": lambda: f"+4420{d(8)}",
        "intl-00": lambda: f"0044 20 {d(4)} {d(4)}",
    }
    shape = rng.choice(sorted(shapes))
    return shapes[shape](), shape


CARD_PREFIXES = {
    "visa": (["4"], 16),
    "mastercard": (["51", "52", "53", "54", "55", "2221", "2720"], 16),
    "amex": (["34", "37"], 15),
    "discover": (["6011", "65", "644"], 16),
    "jcb": (["3528", "3589"], 16),
    "diners": (["300", "36", "38"], 14),
    "unionpay": (["62"], 19),
}


def card_digits(rng: random.Random, brand: str) -> str:
    prefixes, length = CARD_PREFIXES[brand]
    body = rng.choice(prefixes) + _digits(rng, length - 1 - len(rng.choice(prefixes)))
    body = body[: length - 1].ljust(length - 1, "0")
    for check in string.digits:
        if luhn(body + check):
            return body + check
    raise AssertionError("no Luhn digit")


def card(rng: random.Random) -> tuple[str, str]:
    brand = rng.choice(sorted(CARD_PREFIXES))
    digits = card_digits(rng, brand)
    style = rng.choice(["plain", "spaces", "dashes"])
    if style == "plain":
        return digits, f"{brand}-plain"
    sep = " " if style == "spaces" else "-"
    if brand == "amex" or brand == "diners":
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return sep.join(groups), f"{brand}-{style}"


IBAN_COUNTRIES = ["DE", "GB", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "PL", "SE", "NO", "IE"]


def iban_compact(rng: random.Random, country: str) -> str:
    length = IBAN_LENGTHS[country] - 4
    if country in ("GB", "NL", "IE"):
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + _digits(
            rng, length - 4
        )
    else:
        bban = _digits(rng, length)
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def iban(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(IBAN_COUNTRIES)
    compact = iban_compact(rng, country)
    if rng.random() < 0.5:
        return compact, f"{country}-compact"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)), f"{country}-grouped"


def ip(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["v4", "v4", "v4-private", "v6-full", "v6-short"])
    if kind == "v4":
        first = rng.choice([23, 45, 81, 93, 104, 151, 185, 203, 212])
        return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", kind
    if kind == "v4-private":
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}", kind
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if kind == "v6-full":
        return ":".join(["2001", "db8", *groups[2:]]), kind
    return f"2001:db8:{groups[2]}::{groups[5]}:{groups[7]}", kind


def _token(
    rng: random.Random, size: int, alphabet: str = string.ascii_letters + string.digits
) -> str:
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(size))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def api_key(rng: random.Random) -> tuple[str, str]:
    d = lambda n: _digits(rng, n)  # noqa: E731
    shapes: dict[str, Callable[[], str]] = {
        "openai": lambda: "sk-" + _token(rng, 48),
        "openai-proj": lambda: "sk-proj-" + _token(rng, 64, ALNUM + "_-"),
        "anthropic": lambda: "sk-ant-api03-" + _token(rng, 80, ALNUM + "_-"),
        "github": lambda: rng.choice(["ghp_", "gho_", "ghs_"]) + _token(rng, 36),
        "github-pat": lambda: "github_pat_" + _token(rng, 82, ALNUM + "_"),
        "slack": lambda: rng.choice(["xoxb-", "xoxp-"]) + f"{d(12)}-{d(13)}-{_token(rng, 24)}",
        "google": lambda: "AIza" + _token(rng, 35, ALNUM + "_-"),
        "gitlab": lambda: "glpat-" + _token(rng, 20, ALNUM + "_-"),
        "huggingface": lambda: "hf_" + _token(rng, 34),
        "tokenrelay": lambda: "trk_" + _token(rng, 40),
        "stripe": lambda: rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + _token(rng, 24),
    }
    shape = rng.choice(sorted(shapes))
    return shapes[shape](), shape


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(rng: random.Random) -> tuple[str, str]:
    alg = rng.choice(["HS256", "RS256", "ES256"])
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {
        "sub": _digits(rng, 8),
        "name": rng.choice(FIRST),
        "iat": 1700000000 + rng.randint(0, 9999),
    }
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(rng.randbytes(32 if alg == "HS256" else 64))
    return f"{header}.{payload}.{signature}", alg


def aws_key(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.6:
        return rng.choice(["AKIA", "ASIA"]) + _token(
            rng, 16, string.ascii_uppercase + string.digits
        ), "key-id"
    return _token(rng, 40, ALNUM + "/+"), "secret"


def us_ssn(rng: random.Random) -> tuple[str, str]:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}", "dashed"


GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "email": email, "phone": phone, "card": card, "iban": iban, "ip": ip, "api_key": api_key,
    "jwt": jwt, "aws_key": aws_key, "us_ssn": us_ssn,
}  # fmt: skip
PER_TYPE = {"email": 70, "phone": 90, "card": 70, "iban": 60, "ip": 50, "api_key": 80,
            "jwt": 30, "aws_key": 30, "us_ssn": 30}  # fmt: skip

# --- sentences around the values -------------------------------------------------------------

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "en": {
        "email": ["Please send the invoice to {v} by Friday.", "Contact: {v}", "cc {v}, thanks!"],
        "phone": ["Call me at {v} after 5pm.", "My number is {v}.", "Phone: {v}"],
        "card": ["My card number is {v}, expiry 12/27.", "Charge {v} for the order.", "card={v}"],
        "iban": ["Wire the money to {v} please.", "IBAN: {v}", "Account {v} (savings)."],
        "ip": ["The login came from {v} yesterday.", "Server IP {v} is down.", "ssh admin@{v}"],
        "api_key": ["Here is my key {v}, why does it fail?", "export API_KEY={v}", "token: {v}"],
        "jwt": ["Authorization: Bearer {v}", "the session token {v} expired", "jwt={v}"],
        "aws_key": [
            "aws_access_key_id = {v}",
            "AWS key {v} leaked?",
            "aws_secret_access_key = {v}",
        ],
        "us_ssn": ["My SSN is {v}.", "SSN: {v}", "social security number {v}"],
    },
    "de": {
        "email": ["Bitte schreiben Sie an {v}, danke.", "E-Mail: {v}"],
        "phone": ["Rufen Sie mich unter {v} an.", "Telefon: {v}", "Meine Handynummer ist {v}."],
        "card": ["Meine Kreditkarte: {v}, gültig bis 03/26.", "Kartennummer {v}"],
        "iban": ["Bitte überweisen Sie auf {v}.", "Meine IBAN lautet {v}."],
        "ip": ["Der Zugriff kam von {v}.", "Die IP-Adresse {v} ist gesperrt."],
        "api_key": ["Mein Schlüssel {v} funktioniert nicht.", "Der Token lautet {v}"],
        "jwt": ["Das Token {v} ist abgelaufen."],
        "aws_key": ["Zugangsschlüssel: {v}", "aws_secret_access_key: {v}"],
        "us_ssn": ["Seine SSN ist {v}."],
    },
    "fr": {
        "email": ["Écrivez-moi à {v} s'il vous plaît.", "Courriel : {v}"],
        "phone": ["Appelez-moi au {v} demain.", "Téléphone : {v}", "Mon portable : {v}"],
        "card": ["Ma carte bancaire est {v}.", "Numéro de carte : {v}"],
        "iban": ["Virez le montant sur {v}.", "Mon IBAN est {v}."],
        "ip": ["La connexion venait de {v}.", "Adresse IP : {v}"],
        "api_key": ["Voici ma clé {v}, elle ne marche pas.", "clé API : {v}"],
        "jwt": ["Le jeton {v} a expiré."],
        "aws_key": ["Clé d'accès AWS : {v}", "aws_secret_access_key = {v}"],
        "us_ssn": ["Son SSN est {v}."],
    },
    "es": {
        "email": ["Escríbeme a {v} por favor.", "Correo: {v}"],
        "phone": ["Llámame al {v} mañana.", "Teléfono: {v}", "Mi móvil es {v}."],
        "card": ["Mi tarjeta es {v}, caduca 05/28.", "Tarjeta: {v}"],
        "iban": ["Transfiere a {v}, gracias.", "Mi IBAN es {v}."],
        "ip": ["El acceso vino de {v}.", "Dirección IP: {v}"],
        "api_key": ["Mi clave {v} no funciona.", "clave de API: {v}"],
        "jwt": ["El token {v} caducó."],
        "aws_key": ["Clave de AWS: {v}", "aws_secret_access_key = {v}"],
        "us_ssn": ["Su SSN es {v}."],
    },
    "ja": {
        "email": ["メールは{v}までお願いします。", "連絡先: {v}"],
        "phone": ["電話番号は{v}です。", "携帯: {v} までご連絡ください。"],
        "card": ["カード番号は{v}です。", "クレジットカード: {v}"],
        "iban": ["振込先IBAN: {v}"],
        "ip": ["IPアドレス{v}からのアクセスです。"],
        "api_key": ["APIキーは{v}です。"],
        "jwt": ["トークン{v}が期限切れです。"],
        "aws_key": ["AWSキー: {v}", "aws_secret_access_key={v}"],
        "us_ssn": ["SSNは{v}です。"],
    },
}


def positives(rng: random.Random) -> list[Example]:
    examples: list[Example] = []
    for entity, count in PER_TYPE.items():
        for index in range(count):
            value, shape = GENERATORS[entity](rng)
            lang = ["en", "de", "fr", "es", "ja"][index % 5]
            templates = TEMPLATES[lang][entity]
            if entity == "aws_key":  # a secret only counts with its label, a key id alone
                templates = [t for t in templates if ("secret" in t) == (shape == "secret")]
                templates = templates or TEMPLATES["en"][entity]
                templates = [t for t in templates if ("secret" in t) == (shape == "secret")]
            template = rng.choice(templates)
            start = template.index("{v}")
            text = template.replace("{v}", value)
            examples.append(Example(text, [(start, start + len(value), entity)], lang, shape))
    # A few prompts with several values of different types.
    for index in range(20):
        pieces, spans, text = [], [], ""
        for entity in rng.sample(["email", "phone", "card", "iban", "api_key"], 3):
            value, _ = GENERATORS[entity](rng)
            lead = f"{entity.replace('_', ' ')}: " if entity != "phone" else "phone: "
            text += lead
            spans.append((len(text), len(text) + len(value), entity))
            text += value + "; "
            pieces.append(value)
        examples.append(Example(text.strip(), spans, "en", f"mixed-{index}"))
    return examples


# --- the benign set -------------------------------------------------------------------------

BENIGN_TEMPLATES = [
    "The meeting is on {date} at {time}.",
    "Die Rechnung vom {date} beträgt {price}.",
    "La réunion est prévue le {date} à {time}, budget {price}.",
    "El pedido {order} llegará el {date}.",
    "注文番号{order}は{date}に発送されました。",
    "Upgrade from {version} to {version2} before {date}.",
    "Release {version} fixes CVE-2024-{n4}.",
    "Commit {sha} changed {n3} files; build #{n4} passed.",
    "Request id {uuid} took {n3} ms.",
    "ISBN {isbn}, {n3} pages, {price}.",
    "We are at {lat}, {lon} (about {n3} km from the coast).",
    "Order {order} total {price}, tracking {tracking}.",
    "The file's SHA-256 is {sha256}.",
    "Temperature {temp} °C, humidity {n2} %, pressure {n4} hPa.",
    "```python\nfor i in range({n3}):\n    total += i * {float}\nprint(f'{{total:.2f}}')\n```",
    'config = {{"port": {port}, "workers": {n2}, "timeout": {float}, "version": "{version}"}}',
    "SELECT * FROM orders WHERE id = {n6} AND created > '{date}' LIMIT {n3};",
    "Population {bignum}, area {n6} km², GDP {price}.",
    "Invoice {order}: {n2} x {price} = {price2}",
    "The score was {n2}-{n2b}, attendance {bignum}.",
    "Python {version} on Linux {kernel}, node v{version2}.",
    "color: #{hex6}; margin: {n2}px {n2b}px; z-index: {n3};",
    "Timestamp {epoch} = {iso}.",
    "Between {n4} and {n4b} people, roughly {pct} % of the total.",
    "docker pull nginx:{version} && kubectl scale --replicas={n2} deploy/web",
    "Chrome {chrome} on Windows {windows}.",
    "Serial number {serial}, batch {n6}, lot {n4}.",
    "Flight LH{n3} departs {time}, gate B{n2}, seat {n2}C.",
    "Pi is about 3.14159265358979 and e about 2.718281828.",
    "Sendungsnummer {tracking}, Postleitzahl {zip}, Hausnummer {n2}.",
]


def benign(rng: random.Random) -> list[Example]:
    d = lambda n: _digits(rng, n)  # noqa: E731
    hexes = lambda n: "".join(rng.choice("0123456789abcdef") for _ in range(n))  # noqa: E731
    examples: list[Example] = []
    for index in range(420):
        template = BENIGN_TEMPLATES[index % len(BENIGN_TEMPLATES)]
        year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
        dates = [
            f"{year}-{month:02d}-{day:02d}", f"{day:02d}.{month:02d}.{year}",
            f"{month:02d}/{day:02d}/{year}", f"{day}. März {year}", f"{day:02d}/{month:02d}/{year}",
            f"{year}年{month}月{day}日",
        ]  # fmt: skip
        isbn13 = "978" + d(9)
        check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(isbn13)) % 10) % 10
        fields = {
            "date": rng.choice(dates),
            "time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
            "price": rng.choice(
                [
                    f"{rng.randint(1, 9)}.{d(3)},{d(2)} €",
                    f"${rng.randint(1, 99)},{d(3)}.{d(2)}",
                    f"¥{rng.randint(1, 99)},{d(3)}",
                    f"{rng.randint(10, 999)} EUR",
                    f"£{d(3)}.{d(2)}",
                ]
            ),
            "price2": f"{rng.randint(100, 999)}.{d(2)} €",
            "order": rng.choice([f"ORD-{d(8)}", f"#{d(6)}", f"A-{year}-{d(6)}", f"PO{d(7)}", d(9)]),
            "version": f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 40)}",
            "version2": ".".join(str(rng.randint(0, 9)) for _ in range(4)),
            "sha": hexes(rng.choice([7, 40])),
            "sha256": hexes(64),
            "uuid": "-".join(hexes(n) for n in (8, 4, 4, 4, 12)),
            "isbn": f"{isbn13[:3]}-{isbn13[3]}-{isbn13[4:8]}-{isbn13[8:12]}-{check}",
            "lat": f"{rng.uniform(-80, 80):.4f}",
            "lon": f"{rng.uniform(-170, 170):.4f}",
            "tracking": rng.choice([f"1Z{d(3)}AA{d(10)}", f"JD{d(18)}", d(12)]),
            "temp": f"{rng.uniform(-20, 40):.1f}",
            "n2": str(rng.randint(1, 99)),
            "n2b": str(rng.randint(1, 99)),
            "n3": str(rng.randint(100, 999)),
            "n4": str(rng.randint(1000, 9999)),
            "n4b": str(rng.randint(1000, 9999)),
            "n6": d(6),
            "float": f"{rng.uniform(0, 10):.3f}",
            "port": str(rng.randint(1024, 65535)),
            "bignum": f"{rng.randint(1, 999)},{d(3)},{d(3)}",
            "hex6": hexes(6),
            "epoch": str(rng.randint(1_500_000_000, 1_800_000_000)),
            "iso": f"{year}-{month:02d}-{day:02d}T{rng.randint(0, 23):02d}:{d(1)}{d(1)}:00Z",
            "pct": f"{rng.uniform(0, 100):.1f}",
            "kernel": f"6.{rng.randint(1, 9)}.{rng.randint(0, 40)}-{d(2)}-generic",
            "chrome": f"{rng.randint(100, 130)}.0.{d(4)}.{rng.randint(10, 200)}",
            "windows": f"10.0.{d(5)}",
            "serial": f"SN-{d(4)}-{d(4)}-{d(4)}",
            "zip": d(5),
        }
        examples.append(
            Example(
                template.format(**fields), [], "mixed", f"benign-{index % len(BENIGN_TEMPLATES)}"
            )
        )
    return examples


def generate() -> tuple[list[Example], list[Example]]:
    rng = random.Random(SEED)
    return positives(rng), benign(rng)


def _write(path: Path, examples: list[Example]) -> None:
    path.write_bytes(b"".join(msgspec.json.encode(item) + b"\n" for item in examples))


def _read(path: Path) -> list[Example]:
    return [
        msgspec.json.decode(line, type=Example)
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def load() -> tuple[list[Example], list[Example]]:
    """The positive and the benign examples: generated plus hand-written."""
    positive = _read(DATA / "positive.jsonl") + _read(DATA / "tricky_positive.jsonl")
    negative = _read(DATA / "benign.jsonl") + _read(DATA / "tricky_benign.jsonl")
    return positive, negative


class Quality(msgspec.Struct):
    recall: dict[str, float]  # entity -> share of labelled spans found exactly, with their type
    spans: dict[str, int]  # entity -> labelled spans
    missed: list[tuple[str, str]]  # (entity, text) of the spans missed
    benign_texts: int
    false_positive_rate: float  # share of benign texts with any finding
    false_positives: list[tuple[str, str]]  # (entity, value) found in benign texts
    spurious_in_positives: int  # findings in positive texts that no label asked for


def measure(detector: Detector, positive: list[Example], negative: list[Example]) -> Quality:
    """Recall per entity type on the positives, false-positive rate on the benign texts."""
    total: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    missed: list[tuple[str, str]] = []
    spurious = 0
    for example in positive:
        found = {(item.start, item.end, item.entity) for item in detector.find(example.text)}
        labelled = {tuple(span) for span in example.spans}
        for start, end, entity in example.spans:
            total[entity] += 1
            if (start, end, entity) in found:
                hit[entity] += 1
            else:
                missed.append((entity, example.text))
        spurious += len(found - labelled)
    flagged: list[tuple[str, str]] = []
    flagged_texts = 0
    for example in negative:
        found_here = detector.find(example.text)
        flagged_texts += bool(found_here)
        flagged += [(item.entity, example.text[item.start : item.end]) for item in found_here]
    return Quality(
        recall={entity: hit[entity] / total[entity] for entity in sorted(total)},
        spans=dict(sorted(total.items())),
        missed=missed,
        benign_texts=len(negative),
        false_positive_rate=flagged_texts / max(1, len(negative)),
        false_positives=flagged,
        spurious_in_positives=spurious,
    )


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    generated_positive, generated_benign = generate()
    _write(DATA / "positive.jsonl", generated_positive)
    _write(DATA / "benign.jsonl", generated_benign)
    print(f"{len(generated_positive)} positive, {len(generated_benign)} benign examples written")
