"""The guard's stream parts without HTTP: masking a request, restoring placeholders split at
every boundary (text and JSON tool arguments), and the output guard's mask and block."""

from __future__ import annotations

import itertools
import re
from typing import NamedTuple

import msgspec
import pytest

from tokenrelay.guard.mask import Masker, label
from tokenrelay.guard.output import CANARY, OutputGuard, OutputRules, longest_match
from tokenrelay.guard.rehydrate import RestoreFlow, Restorer
from tokenrelay.guard.settings import GuardSettings, OutputGuardSettings
from tokenrelay.model import (
    Accumulator,
    Error,
    Event,
    Finish,
    Message,
    Request,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)


class Found(NamedTuple):
    start: int
    end: int
    entity: str


class Emails:
    """A small stand-in detector: emails and 16-digit cards (the real ones have their tests)."""

    pattern = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|\b\d{4}(?: ?\d{4}){3}\b|O\"Brien\\\\x")
    max_match_chars = 254

    def find(self, text: str) -> list[Found]:
        return [
            Found(m.start(), m.end(), "card" if m.group()[0].isdigit() else "email")
            for m in self.pattern.finditer(text)
        ]


def request(*texts: str, **fields: object) -> Request:
    return Request(
        dialect="openai",
        model="m",
        messages=[Message("user", [TextPart(t)]) for t in texts],
        **fields,  # type: ignore[arg-type]
    )


# --- masking ---------------------------------------------------------------------------------


def test_the_same_value_gets_the_same_placeholder_everywhere_in_the_request() -> None:
    req = request("mail ann@example.com or bob@example.org", "again ann@example.com")
    req.system = "the operator is ops@example.net"
    req.messages.append(
        Message(
            "assistant",
            [ToolCallPart("c1", "send", '{"to": "bob@example.org", "n": 2, "ok": true}')],
        )
    )
    req.messages.append(Message("tool", [ToolResultPart("c1", "sent to bob@example.org")]))
    masking = Masker(Emails()).request(req)
    dumped = msgspec.json.encode(req).decode()
    assert "@example" not in dumped  # no value leaves
    assert req.system == "the operator is <EMAIL_1>"
    assert req.messages[0].content[0] == TextPart("mail <EMAIL_2> or <EMAIL_3>")
    assert req.messages[1].content[0] == TextPart("again <EMAIL_2>")
    call = req.messages[2].content[0]
    assert isinstance(call, ToolCallPart)
    assert msgspec.json.decode(call.arguments) == {"to": "<EMAIL_3>", "n": 2, "ok": True}
    assert req.messages[3].content[0] == ToolResultPart("c1", "sent to <EMAIL_3>")
    assert masking.counts == {"EMAIL": 6}
    assert masking.values["<EMAIL_2>"] == "ann@example.com"


def test_masking_leaves_shared_lists_and_unmasked_parts_alone() -> None:
    original = [Message("user", [TextPart("hi"), TextPart("x@y.io")])]
    req = request()
    req.messages = original
    Masker(Emails()).request(req)
    assert original[0].content[1] == TextPart("x@y.io")  # the caller's list is not changed
    assert req.messages[0].content[0] is original[0].content[0]


def test_a_placeholder_already_in_the_prompt_is_not_reused() -> None:
    req = request("the template says <EMAIL_1>; mine is me@site.dev")
    masking = Masker(Emails()).request(req)
    assert masking.values == {"<EMAIL_2>": "me@site.dev"}


def test_anthropic_system_blocks_and_opaque_extras_are_masked_too() -> None:
    req = request("hi")
    req.system_blocks = [{"type": "text", "text": "owner: a@b.co", "cache_control": {"x": 1}}]
    req.extra = {"metadata": {"user_id": "a@b.co"}, "image": {"type": "base64", "data": "a@b.co"}}
    Masker(Emails()).request(req)
    assert req.system_blocks == [
        {"type": "text", "text": "owner: <EMAIL_1>", "cache_control": {"x": 1}}
    ]
    assert req.extra["metadata"] == {"user_id": "<EMAIL_1>"}
    assert req.extra["image"]["data"] == "a@b.co"  # base64 data is not words


def test_custom_entities_become_their_own_word() -> None:
    assert label("custom:employee_id") == "EMPLOYEE_ID"
    assert label("api_key") == "API_KEY"


def test_settings_refuse_a_bad_regex() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"guard\.custom\.bad"):
        msgspec.convert({"custom": {"bad": "("}}, GuardSettings)
    with pytest.raises(msgspec.ValidationError, match=r"output\.rules"):
        msgspec.convert({"output": {"rules": ["[a"]}}, GuardSettings)


# --- rehydration -------------------------------------------------------------------------------

VALUES = {"<EMAIL_1>": "ann@example.com", "<CARD_1>": "4111 1111 1111 1111", "<EMAIL_12>": "z@q.io"}
MODEL_TEXT = "Sure <EMAIL_1>, card <CARD_1> and <EMAIL_12>; a < b, <EMAIL_2> <EMAIL_1"
RESTORED = "Sure ann@example.com, card 4111 1111 1111 1111 and z@q.io; a < b, <EMAIL_2> <EMAIL_1"


def run(restorer: Restorer, pieces: list[str], *, json: bool = False) -> str:
    out, held = [], ""
    longest = max(map(len, VALUES))
    for piece in pieces:
        text, held = restorer.feed(held, piece, json=json)
        assert len(held) < longest  # never more than a placeholder's proper prefix
        assert not held or any(p.startswith(held) for p in VALUES)
        out.append(text)
    return "".join(out) + held


def test_placeholders_split_at_every_pair_of_boundaries_are_restored_exactly() -> None:
    restorer = Restorer(VALUES)
    n = len(MODEL_TEXT)
    for i, j in itertools.combinations(range(n + 1), 2):
        pieces = [MODEL_TEXT[:i], MODEL_TEXT[i:j], MODEL_TEXT[j:]]
        assert run(restorer, pieces) == RESTORED, (i, j)
    assert run(restorer, list(MODEL_TEXT)) == RESTORED  # one character per event


def test_text_that_cannot_start_a_placeholder_goes_out_at_once() -> None:
    restorer = Restorer(VALUES)
    assert restorer.feed("", "a < b and <X") == ("a < b and <X", "")
    assert restorer.feed("", "mail <EMA") == ("mail ", "<EMA")
    assert restorer.feed("<EMA", "IL_3>") == ("<EMAIL_3>", "")  # not ours: as written
    assert restorer.feed("", "<EMAIL_1") == ("", "<EMAIL_1")  # <EMAIL_12> may still come


def test_tool_arguments_get_json_escaped_values() -> None:
    values = {"<NAME_1>": 'O"Brien\\x\n', "<EMAIL_1>": "a@b.co"}
    restorer = Restorer(values)
    arguments = '{"who": "<NAME_1>", "to": ["<EMAIL_1>"]}'
    for i, j in itertools.combinations(range(len(arguments) + 1), 2):
        pieces = [arguments[:i], arguments[i:j], arguments[j:]]
        out, held = [], ""
        for piece in pieces:
            text, held = restorer.feed(held, piece, json=True)
            out.append(text)
        parsed = msgspec.json.decode("".join(out) + held)
        assert parsed == {"who": 'O"Brien\\x\n', "to": ["a@b.co"]}, (i, j)


def fold(events: list[Event]) -> Accumulator:
    accumulator = Accumulator()
    for event in events:
        accumulator.add(event)
    return accumulator


def test_the_flow_keeps_texts_and_tool_calls_apart_and_flushes_at_the_end() -> None:
    flow = RestoreFlow(VALUES)
    out = flow.feed([TextDelta("Hi <EMA"), TextDelta("<CAR", choice=1), Usage(input_tokens=3)])
    assert out == [TextDelta("Hi "), Usage(input_tokens=3)]
    out = flow.feed(
        [
            TextDelta("IL_1> then <EMAIL_"),
            ToolCallDelta(0, "call_1", "send", '{"to": "<EMAI'),
            ToolCallDelta(0, arguments='L_12>"}'),
            Finish("tool_calls"),
            TextDelta("D_1>", choice=1),
        ]
    )
    assert out == [
        TextDelta("ann@example.com then "),
        TextDelta("<EMAIL_"),  # the text's tail goes out before the tool call starts
        ToolCallDelta(0, "call_1", "send", '{"to": "'),
        ToolCallDelta(0, arguments='z@q.io"}'),
        Finish("tool_calls"),
        TextDelta("4111 1111 1111 1111", choice=1),
    ]
    assert flow.feed([TextDelta("<EMAIL_1", choice=1)]) == []
    assert flow.close() == [TextDelta("<EMAIL_1", choice=1)]


def test_an_error_flushes_what_is_held() -> None:
    flow = RestoreFlow(VALUES)
    error = Error("overloaded", "gone", 529)
    assert flow.feed([TextDelta("x <CA"), error]) == [TextDelta("x "), TextDelta("<CA"), error]


def test_the_whole_body_is_restored_from_the_same_events() -> None:
    flow = RestoreFlow(VALUES)
    pieces = [TextDelta(c) for c in "to <EMAIL_1>!"]
    completion = fold(flow.feed([*pieces, Finish()])).result()
    assert completion.text == "to ann@example.com!"


# --- output guard ----------------------------------------------------------------------------


def guard(**settings: object) -> OutputGuard:
    canary = str(settings.pop("_canary")) if "_canary" in settings else None
    rules = OutputRules(
        msgspec.convert(settings, OutputGuardSettings), Emails(), Emails.max_match_chars, canary
    )
    return OutputGuard(rules)


def stream(g: OutputGuard, text: str, size: int) -> list[Event]:
    out: list[Event] = []
    for i in range(0, len(text), size):
        out.extend(g.feed([TextDelta(text[i : i + size])]))
    out.extend(g.feed([Finish()]))
    out.extend(g.close())
    return out


def test_mask_replaces_matches_split_anywhere_in_place() -> None:
    text = "the code is PROJ-12345 and mail me at x@y.io, not BlueBird either"
    for size in range(1, len(text) + 1):
        g = guard(rules=[r"PROJ-\d{5}"], terms=["bluebird"], secrets=True, action="mask")
        events = stream(g, text, size)
        assert isinstance(events[-1], Finish)
        said = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert said == "the code is [redacted] and mail me at [redacted], not [redacted] either"
        assert g.hits == {"rules[0]": 1, "secrets": 1, "terms": 1}, size


def test_mask_holds_back_no_more_than_the_longest_match() -> None:
    g = guard(rules=[r"PROJ-\d{5}"], action="mask")
    assert g.rules.longest == 10
    out = g.feed([TextDelta("a" * 30)])
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "a" * 21


def test_block_ends_the_stream_at_the_event_that_completes_a_match() -> None:
    text = "fine words then PROJ-12345 and the rest"
    for size in range(1, len(text) + 1):
        g = guard(rules=[r"PROJ-\d{5}"])
        events = stream(g, text, size)
        error = events[-1]
        assert isinstance(error, Error) and "rules[0]" in error.message, size
        said = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert "PROJ-12345" not in said and "the rest" not in said
        assert g.blocked == "rules[0]"


def test_the_canary_is_a_rule_that_always_cuts() -> None:
    canary = "tr-0123456789abcdef"
    for action in ("mask", "block"):
        g = guard(action=action, terms=["nope"], _canary=canary)
        events = stream(g, f"Internal reference: {canary.upper()}. more", 3)
        assert isinstance(events[-1], Error) and "protected instructions" in events[-1].message
        assert g.blocked == CANARY


def test_unbounded_rules_get_the_cap() -> None:
    assert longest_match(re.compile(r"\d+"), 256) == 256
    assert longest_match(re.compile(r"ab{2,5}"), 256) == 6


# --- mask: what is held back ---------------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def detector_guard() -> OutputGuard:
    from tokenrelay.guard.detectors import Detector

    detector = Detector()
    settings = OutputGuardSettings(secrets=True, action="mask", max_match_chars=4096)
    return OutputGuard(OutputRules(settings, detector, detector.max_match_chars))


def said(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_mask_with_the_detectors_sends_prose_at_once() -> None:
    """The JWT type makes the longest match 4,096 characters; prose is not held for that."""
    g = detector_guard()
    assert g.rules.longest == 4096
    sent = ""
    text = "The quarterly review covered the roadmap, the hiring plan and the budget. " * 3
    for word in text.split(" "):
        sent += said(g.feed([TextDelta(word + " ")]))
        assert len(sent) >= len(text[: text.find(word)]) - 1  # at most the last blank is held


@pytest.mark.parametrize(
    "text",
    [
        f"your token is {JWT} keep it safe",
        "write to ann.lee@example.com today",
        "call me on +44 20 7946 0958 tonight",
        "card 4111 1111 1111 1111, thanks",
        "use Authorization: Bearer abcdEFGH1234ijklMNOP5678qrst please",
        "the secret access key is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok",
        "IBAN GB82 WEST 1234 5698 7654 32 for the refund",
    ],
)
def test_mask_with_the_detectors_masks_values_split_anywhere(text: str) -> None:
    from tokenrelay.guard.detectors import Detector

    (found,) = Detector().find(text)
    expected = text[: found.start] + "[redacted]" + text[found.end :]
    for size in (1, 2, 3, 5, 7, 11, len(text)):
        events = stream(detector_guard(), text, size)
        assert said(events) == expected, size


def test_mask_holds_a_value_in_progress_until_it_is_complete() -> None:
    g = detector_guard()
    out = said(g.feed([TextDelta("token: " + JWT[:60])]))
    assert out == "token: "  # the JWT so far is held, the label is sent
    out += said(g.feed([TextDelta(JWT[60:] + " and more")]))
    out += said(g.feed([Finish()]))
    assert out == "token: [redacted] and more"
