"""The audit log: masking, the keyed prompt hash, what a line holds (never the prompt or the
answer), and a writer that never blocks the caller."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tokenrelay.gate.identity import Identity
from tokenrelay.model import Completion, Message, Request, TextPart, Usage
from tokenrelay.observe import AuditLog, AuditSettings, fingerprint, mask, masked_prefix
from tokenrelay.records import Attempt, StreamRecord
from tokenrelay.screening import Verdict

SECRET = "correct horse battery staple"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to jane.doe+news@mail.example.co.uk today", "write to [email] today"),
        ("Contact: Jöhn_O'Neil@exämple.org.", "Contact: [email]."),
        ("visa 4111 1111 1111 1111, ok", "visa [card], ok"),
        ("mc 5555-5555-5555-4444 and amex 378282246310005", "mc [card] and amex [card]"),
        ("id 4111 1111 1111 1112 is not a card", "id 4111 1111 1111 1112 is not a card"),
        ("call +1 (555) 123-4567 or 555.123.4567", "call [phone] or [phone]"),
        ("tel +44 20 7946 0958 / 0612345678", "tel [phone] / [phone]"),
        ("on 2026-11-05 at 10:30, pi is 3.14159265", "on 2026-11-05 at 10:30, pi is 3.14159265"),
        ("from 192.168.100.200, order 12345, 05.11.2026", "from 192.168.100.200, order 12345, "
         "05.11.2026"),
        ("version 1.2.3 costs $1,299.99", "version 1.2.3 costs $1,299.99"),
    ],
)  # fmt: skip
def test_mask(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_masking_happens_before_the_cut() -> None:
    text = "x" * 44 + " mail a.very.long.address@example.com please"
    assert masked_prefix(text, 50) == "x" * 44 + " mail "  # the prompt's first 50 characters
    assert masked_prefix(text, 52) == "x" * 44 + " mail [email]"  # cut inside: masked whole
    for cut in range(51, 90):
        assert "a.ve" not in masked_prefix(text, cut) and "[email]" in masked_prefix(text, cut)
    card = "my card: 4111 1111 1111 1111 exp 12/29"
    for cut in range(9, 30):
        assert "4111" not in masked_prefix(card, cut)
    assert masked_prefix("\ue000\ue001 sneaky", 50) == "\ufffd\ufffd sneaky"
    long = "a " * 200 + "bob@example.com"
    assert masked_prefix(long, 50) == long[:50]


def test_masking_is_linear_time() -> None:
    started = time.perf_counter()
    for text in ("a" * 5000, "1" * 5000, "1 " * 2500, "a." * 2500, "a@" * 2500):
        mask(text)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "text",
    [
        "no digits, no at sign, no key",
        "a key sk-ant-abcdefghijklmnop12 here",
        "rk_live_abcdefghijklmnop and trk_abcdefghijklmn",
        "ask-me-anything about sk-abcdefghijklmnopq",
        "mail bob@example.com",
        "call \u0660\u0661\u0662\u0663\u0664\u0665\u0666"  # Arabic-Indic digits
        " or \uff10\uff16\uff11\uff12\uff13\uff14\uff15",  # fullwidth ones
        "IBAN GB82 WEST 1234 5698 7654 32",
        "\ue000 a mark \ue001 sent by the client 4111 1111 1111 1111",
    ],
)
def test_skipped_matchers_could_not_have_matched(text: str) -> None:
    """``_marks`` skips a matcher whose item the text cannot hold: the same result as all."""
    from tokenrelay.observe import audit

    def every_matcher(text: str) -> str:
        text = audit._EMAIL.sub(audit._email, text)
        text = audit._KEY.sub(audit._key, text)
        text = audit._IBAN.sub(audit._iban, text)
        text = audit._CARD.sub(audit._card, text)
        return audit._PHONE.sub(audit._phone, text)

    assert audit._marks(text) == every_matcher(text)
    normalized, _ = audit._normalized(text.translate(audit._NEUTRAL))
    assert audit._marks(normalized) == every_matcher(normalized)


def test_keyed_hash_correlates_only_under_the_same_secret() -> None:
    key = SECRET.encode()
    one = fingerprint("What is SSE?", key, 50)
    assert one == fingerprint("What is SSE?", key, 50)
    assert one.hmac != fingerprint("What is SSE? ", key, 50).hmac
    other = fingerprint("What is SSE?", b"another secret, as long as the first", 50)
    assert other.hmac != one.hmac
    assert one.hmac == hmac.new(key, b"What is SSE?", hashlib.sha256).hexdigest()
    assert one.hmac != hashlib.sha256(b"What is SSE?").hexdigest()  # not a bare digest
    assert one.chars == 12 and one.prefix == "What is SSE?"


def _record(prompt: str) -> StreamRecord:
    record = StreamRecord(
        "req_1",
        "openai",
        "default",
        "completed",
        200,
        provider="openai",
        model="gpt-5.5",
        usage=Usage(1200, 80, 1000, None, 10),
        ttft_ms=123.456,
        duration_ms=2345.678,
        attempts=[
            Attempt("anthropic", "claude-sonnet-5-5", "overloaded", 529, 41.26),
            Attempt("openai", "gpt-5.5", "ok", 200, 2300.04),
        ],
        identity=Identity("key", "203.0.113.9", user="alice", org="acme", key_id="key_a"),
        verdict=Verdict(0.31234, False, ("persona",), 0.4, None),
    )
    record.request = Request(
        dialect="openai",
        model="default",
        system="You are terse.",
        messages=[
            Message("user", [TextPart("an earlier question")]),
            Message("assistant", [TextPart("an earlier answer")]),
            Message("user", [TextPart(prompt)]),
        ],
    )
    record.completion = Completion(text="THE ANSWER TEXT")
    return record


def _lines(settings: AuditSettings, *records: StreamRecord, cost: int | None = None) -> list[Any]:
    out = io.BytesIO()
    audit = AuditLog(settings, cost=lambda record: cost, stream=out)
    for record in records:
        audit(record)
    audit.close()
    raw = out.getvalue()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]


def test_a_line_holds_the_request_never_the_prompt_or_answer() -> None:
    prompt = "Please email me at ann@example.com about the SECRET-PLAN-XYZ, it is urgent"
    settings = AuditSettings(secret=SECRET)
    [line] = _lines(settings, _record(prompt), cost=1_234_567)
    assert line["prompt"] == {
        "chars": len(prompt),
        "hmac": hmac.new(SECRET.encode(), prompt.encode(), hashlib.sha256).hexdigest(),
        "prefix": "Please email me at [email] about the SECRE",
    }
    text = json.dumps(line)
    assert "PLAN" not in text and "ann@" not in text and "urgent" not in text
    assert "THE ANSWER" not in text and "earlier" not in text and "terse" not in text
    assert line["time"].endswith("Z") and len(line["time"]) == 24
    del line["time"], line["prompt"]
    assert line == {
        "request_id": "req_1",
        "dialect": "openai",
        "route": "default",
        "outcome": "completed",
        "status": 200,
        "error_type": None,
        "client_ip": "203.0.113.9",
        "identity": {"kind": "key", "user": "alice", "org": "acme", "key_id": "key_a"},
        "attempts": [
            {"provider": "anthropic", "model": "claude-sonnet-5-5", "outcome": "overloaded",
             "status": 529, "ms": 41.3},
            {"provider": "openai", "model": "gpt-5.5", "outcome": "ok", "status": 200,
             "ms": 2300.0},
        ],
        "provider": "openai",
        "model": "gpt-5.5",
        "ttft_ms": 123.5,
        "duration_ms": 2345.7,
        "tokens": {"input": 1200, "output": 80, "cache_read": 1000, "cache_write": None,
                   "reasoning": 10},
        "cost_usd": "0.001234567",
        "screening": {"score": 0.312, "injection": False, "rules": ["persona"],
                      "classifier": None},
        "dropped_tools": [],
        "guard": {}, "guard_output": {}, "guard_blocked": None,
    }  # fmt: skip


def test_prefix_off_and_other_lengths() -> None:
    prompt = "Tell me about card 4111111111111111 please " * 3
    [off] = _lines(AuditSettings(secret=SECRET, prefix_chars=0), _record(prompt))
    assert off["prompt"].keys() == {"chars", "hmac"} and "4111" not in json.dumps(off)
    [short] = _lines(AuditSettings(secret=SECRET, prefix_chars=24), _record(prompt))
    assert short["prompt"]["prefix"] == "Tell me about card [card]"


def test_rejected_request_without_identity_or_prompt() -> None:
    record = StreamRecord("req_2", "anthropic", "", "rejected", 400, error_type="invalid_request")
    [line] = _lines(AuditSettings(secret=SECRET), record)
    assert line["prompt"] is None and line["identity"] is None and line["client_ip"] is None
    assert line["cost_usd"] is None and line["attempts"] == [] and line["status"] == 400


def test_settings() -> None:
    read = msgspec.convert({"destination": "/var/log/x.jsonl", "prefix_chars": 0}, AuditSettings)
    assert read.enabled and read.secret is None
    with pytest.raises(msgspec.ValidationError, match="at least 16"):
        msgspec.convert({"secret": "short"}, AuditSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"prefix_chars": -1}, AuditSettings)


def test_one_log_hashes_each_prompt_afresh_under_its_secret() -> None:
    """The log keys its HMAC once and copies it per prompt: no prompt leaks into the next."""
    log = AuditLog(AuditSettings(secret=SECRET), stream=io.BytesIO())
    try:
        for text in ("first", "second", "first", "", "ünï\ud800code"):
            data = text.encode("utf-8", "surrogatepass")
            expected = hmac.new(SECRET.encode(), data, hashlib.sha256).hexdigest()
            assert log.fingerprint(text).hmac == expected
            assert fingerprint(text, SECRET.encode(), 50).hmac == expected
        log.secret = b"another secret of enough length"  # a new key is a new keyed state
        assert log.fingerprint("first").hmac == fingerprint("first", log.secret, 50).hmac
    finally:
        log.close()


def test_a_random_secret_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    first = AuditLog(AuditSettings(), stream=io.BytesIO())
    second = AuditLog(AuditSettings(), stream=io.BytesIO())
    try:
        assert "TOKENRELAY_AUDIT__SECRET" in caplog.text
        assert first.fingerprint("hi").hmac != second.fingerprint("hi").hmac
    finally:
        first.close()
        second.close()


def test_file_destination_appends(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "requests.jsonl"
    for _ in range(2):
        audit = AuditLog(AuditSettings(destination=str(path), secret=SECRET))
        audit(_record("hello"))
        audit.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["request_id"] == "req_1" for line in lines)


def test_disabled_writes_nothing() -> None:
    out = io.BytesIO()
    audit = AuditLog(AuditSettings(enabled=False, secret=SECRET), stream=out)
    audit(_record("hello"))
    audit.close()
    assert out.getvalue() == b""


class _Stuck(io.BytesIO):
    """A destination that blocks (a full pipe, a hung disk) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, data: Any) -> int:
        self.release.wait(5)
        return super().write(data)


def test_a_stuck_destination_never_blocks_the_listener(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "tokenrelay.audit")
    out = _Stuck()
    audit = AuditLog(AuditSettings(secret=SECRET, queue_size=4), stream=out)
    record = _record("hello")
    started = time.perf_counter()
    for _ in range(20):
        audit(record)
    assert time.perf_counter() - started < 0.2
    assert audit.dropped >= 15 and "not keeping up" in caplog.text
    out.release.set()
    assert audit.flush()
    audit.close()
    assert audit.written + audit.dropped == 20
    assert len(out.getvalue().splitlines()) == audit.written


# --- evasions: fullwidth forms and hidden characters (issue 13) ----------------------------------


def wide(text: str) -> str:
    """``text`` in fullwidth forms (U+FF21 for A ...), written so the source stays ASCII."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


ZERO_WIDTH = ("\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail jane\uff20example.com now", "mail [email] now"),
        (f"mail {wide('jane@example.com')}!", "mail [email]!"),
        ("key sk-ant-api03-AbCdEfGhIjKlMnOp_qr end", "key [key] end"),
        ("key sk-proj-AbCdEfGhIjKlMnOp1234, ok", "key [key], ok"),
        ("sk-AbCdEfGhIjKlMnOp1234", "[key]"),
        ("trk_AbCdEfGh12345678901234567890", "[key]"),
        ("iban DE89 3704 0044 0532 0130 00 ok", "iban [iban] ok"),
        ("iban DE89370400440532013000.", "iban [iban]."),
        ("pay GB82 WEST 1234 5698 7654 32 NOW", "pay [iban] NOW"),
        (wide("DE89 3704 0044 0532 0130 00"), "[iban]"),
        ("part DE12 3456 7890 1234 5678 is not one", "part DE12 3456 7890 1234 5678 is not one"),
        ("sk-short and task-AbCdEfGhIjKlMnOp", "sk-short and task-AbCdEfGhIjKlMnOp"),
    ],
)  # fmt: skip
def test_mask_keys_ibans_and_fullwidth(text: str, masked: str) -> None:
    assert mask(text) == masked


@pytest.mark.parametrize("hidden", ZERO_WIDTH)
def test_hidden_characters_inside_an_item_do_not_hide_it(hidden: str) -> None:
    items = {
        "jane.doe@example.com": "[email]",
        "sk-ant-api03-AbCdEfGhIjKlMnOp": "[key]",
        "trk_AbCdEfGh1234567890": "[key]",
        "DE89 3704 0044 0532 0130 00": "[iban]",
        "4111 1111 1111 1111": "[card]",
    }
    for item, placeholder in items.items():
        for at in range(1, len(item)):
            hidden_item = item[:at] + hidden + item[at:]
            assert mask(f"see {hidden_item} here") == f"see {placeholder} here", hidden_item
            # and cut by the prefix, the hidden character counts as the prompt's own
            text = "x" * 10 + " " + hidden_item + " tail"
            for cut in range(12, len(text)):
                assert item[:6] not in masked_prefix(text, cut).replace(hidden, "")


def test_normalizing_keeps_the_rest_as_written() -> None:
    """Only the items are replaced: other text keeps its fullwidth forms and hidden characters
    (the prefix is the prompt's own first characters)."""
    text = wide("hi") + "\u200b there, mail a\u00adb@example.com, \ufb01ne"
    assert mask(text) == wide("hi") + "\u200b there, mail [email], \ufb01ne"


def test_masking_non_ascii_is_linear_time() -> None:
    started = time.perf_counter()
    for text in (
        "é" * 5000,
        "\u200b1" * 2500,
        wide("AB12") * 1250,
        "a\u00ad@" * 1700,
        "DE89 " * 1000,
    ):
        mask(text)
    assert time.perf_counter() - started < 1.0


# --- the secret's strength (issue 13) -------------------------------------------------------------


def example_secret() -> str:
    """The audit secret exactly as deploy/tokenrelay.env.example ships it."""
    example = Path(__file__).parent.parent / "deploy" / "tokenrelay.env.example"
    for line in example.read_text().splitlines():
        if line.startswith("TOKENRELAY_AUDIT__SECRET="):
            return line.partition("=")[2]
    raise AssertionError("the example env file has no audit secret")


@pytest.mark.parametrize(
    "secret", [example_secret(), "change-me-please-0123456789abcdef", "sixteen-chars-ok!"]
)
def test_a_placeholder_or_short_secret_is_logged_loudly(
    secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tokenrelay.settings import load

    settings = load(environ={"TOKENRELAY_AUDIT__SECRET": secret})
    with caplog.at_level(logging.WARNING, logger="tokenrelay.audit"):
        audit = AuditLog(settings.audit, stream=io.BytesIO())
        audit.close()
    [warning] = [r for r in caplog.records if r.name == "tokenrelay.audit"]
    assert warning.levelno == logging.WARNING
    assert "audit.secret" in warning.getMessage() and secret not in warning.getMessage()


def test_a_strong_secret_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenrelay.audit"):
        AuditLog(
            AuditSettings(secret="k" * 8 + "Zq3vN8rT1xWb6yPa0sLm4dHe"), stream=io.BytesIO()
        ).close()
    assert not [r for r in caplog.records if r.name == "tokenrelay.audit"]


def test_require_strong_secret_refuses_to_start() -> None:
    from tokenrelay.settings import ConfigError, load

    environ = {"TOKENRELAY_AUDIT__REQUIRE_STRONG_SECRET": "true"}
    with pytest.raises(ConfigError, match="placeholder"):
        load(environ={**environ, "TOKENRELAY_AUDIT__SECRET": example_secret()})
    with pytest.raises(ConfigError, match="at least 32"):
        load(environ={**environ, "TOKENRELAY_AUDIT__SECRET": "x" * 20})
    assert load(environ={**environ, "TOKENRELAY_AUDIT__SECRET": "Zq3vN8rT1xWb6yPa0sLm4dHe" * 2})
