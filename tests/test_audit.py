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

from tokenrelay.failover import Attempt
from tokenrelay.gate.identity import Identity
from tokenrelay.model import Completion, Message, Request, TextPart, Usage
from tokenrelay.observe import AuditLog, AuditSettings, fingerprint, mask, masked_prefix
from tokenrelay.records import StreamRecord
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
