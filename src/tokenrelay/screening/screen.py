"""The prompt screen: settings, what gets screened, the verdict, and the errors a client sees.

``Screen.check_text`` runs the rules (synchronous, well under a millisecond for a 2000-character
prompt); ``Screen.check`` adds the optional classifier, consulted only when the rules have not
already found an injection, under a timeout with a configurable fail-open or fail-closed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from tokenrelay.model import GatewayError, Request, Role, TextPart, ToolResultPart

if TYPE_CHECKING:
    from tokenrelay.screening.classifier import Classifier, HTTPClassifier

Source = Literal["user", "untrusted"]

TOOL_ONLY: tuple[Role, ...] = ("tool",)
CACHE_SIZE = 2048  # screened texts remembered, so a long chat's history is not screened again


class ScreenSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A route's prompt screening.

    ``mode``: ``block`` refuses an injection, ``flag`` serves it and records the verdict, ``off``
    screens nothing (the length cap still applies). ``threshold``: the score at or above which a
    prompt is an injection. ``canary``: put a secret marker in the route's system prompt and cut
    a stream that leaks it. ``classifier_url``: an HTTP guard service (see ``HTTPClassifier``).
    ``untrusted_roles``: roles whose text is screened as possible indirect injection (tool
    results always are); ``document_tags``: ``<document>...</document>`` inside a user message
    marks pasted content as untrusted.
    """

    mode: Literal["block", "flag", "off"] = "block"
    max_prompt_chars: Annotated[int, msgspec.Meta(ge=1)] | None = None
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    canary: bool = False
    classifier_url: str | None = None
    classifier_timeout: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    classifier_fail: Literal["open", "closed"] = "open"
    untrusted_roles: tuple[Role, ...] = TOOL_ONLY
    document_tags: bool = True


@dataclass(frozen=True, slots=True)
class ScreenText:
    """One piece of prompt text: the user's own words, or content they passed along."""

    text: str
    source: Source


@dataclass(slots=True)
class Verdict:
    """What the screen concluded. ``rules`` name what matched, for logs only: never tell the
    client. ``classifier`` is None when none is configured, else ``"ok"``, ``"skipped"`` (the
    rules had decided), or ``"timeout-open"``, ``"error-closed"`` and the like."""

    score: float
    injection: bool
    rules: tuple[str, ...]
    elapsed_ms: float
    classifier: str | None = None
    source: Source | None = None  # the kind of text that scored highest


class Screen:
    """Screens the texts of one request against a route's settings."""

    def __init__(self, settings: ScreenSettings, classifier: Classifier | None = None) -> None:
        self.settings = settings
        self._owned: HTTPClassifier | None = None
        if classifier is None and settings.classifier_url:
            from tokenrelay.screening.classifier import HTTPClassifier

            classifier = self._owned = HTTPClassifier(
                settings.classifier_url, timeout=settings.classifier_timeout
            )
        self.classifier = classifier
        # The rules' scorer, imported here (off the cold start of a gateway that screens
        # nothing) and kept, so a request does not pay an import statement.
        self._score: Callable[[str, Source], tuple[float, tuple[str, ...]]] | None = None
        if settings.mode != "off":
            from tokenrelay.screening.rules import prepare, score

            prepare()
            self._score = score
        self._cache: dict[tuple[Source, int, int], tuple[float, tuple[str, ...]]] = {}

    def check_length(self, texts: Sequence[ScreenText], *, param: str = "messages") -> None:
        """Refuse a prompt longer than ``max_prompt_chars`` (counted over every screened text)."""
        limit = self.settings.max_prompt_chars
        if limit is not None:
            chars = sum(len(item.text) for item in texts)
            if chars > limit:
                raise length_error(chars, limit, param=param)

    def check_text(self, texts: Sequence[ScreenText]) -> Verdict:
        """The rules' verdict: the highest score of any one text, with what it tripped."""
        started = time.perf_counter()
        if self.settings.mode == "off":
            return Verdict(0.0, False, (), 0.0)
        score = self._score
        if score is None:
            from tokenrelay.screening import rules

            score = rules.score

        best, names, source = 0.0, tuple[str, ...](), None
        for item in texts:
            key = (item.source, len(item.text), hash(item.text))
            found = self._cache.get(key)
            if found is None:
                found = score(item.text, item.source)
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = found
            if found[0] > best or source is None:
                best, names, source = found[0], found[1], item.source
        elapsed = (time.perf_counter() - started) * 1000
        injection = best >= self.settings.threshold
        return Verdict(round(best, 4), injection, names, elapsed, source=source if texts else None)

    async def check(self, texts: Sequence[ScreenText]) -> Verdict:
        """The rules, then the classifier when the rules found no injection.

        The classifier sees the texts joined by blank lines; its score counts when higher than
        the rules'. A timeout or a failure lets the prompt through (``classifier_fail = "open"``)
        or counts as an injection (``"closed"``), and the verdict says which.
        """
        verdict = self.check_text(texts)
        if self.classifier is None or self.settings.mode == "off" or not texts:
            return verdict
        if verdict.injection:
            verdict.classifier = "skipped"
            return verdict
        started = time.perf_counter()
        fail = self.settings.classifier_fail
        try:
            async with asyncio.timeout(self.settings.classifier_timeout):
                found = await self.classifier.score("\n\n".join(item.text for item in texts))
        except TimeoutError:
            verdict.classifier = f"timeout-{fail}"
            verdict.injection = fail == "closed"
        except Exception:  # a guard that fails must not take the gateway down with it
            verdict.classifier = f"error-{fail}"
            verdict.injection = fail == "closed"
        else:
            verdict.classifier = "ok"
            if found > verdict.score:
                verdict.score = round(found, 4)
                verdict.rules = (*verdict.rules, "classifier")
            verdict.injection = verdict.score >= self.settings.threshold
        verdict.elapsed_ms += (time.perf_counter() - started) * 1000
        return verdict

    async def aclose(self) -> None:
        """Close the HTTP classifier this screen made from ``classifier_url`` (not one given)."""
        if self._owned is not None:
            await self._owned.aclose()

    def blocks(self, verdict: Verdict) -> bool:
        """Whether the route refuses this prompt (``mode = "block"`` and an injection)."""
        return self.settings.mode == "block" and verdict.injection


# --- what gets screened ------------------------------------------------------------------------

# Pasted content, by convention: <document>...</document> (Anthropic's long-context advice),
# <document_content>, <untrusted>. An opening tag left unclosed marks the rest of the message.
_DOCUMENT = re.compile(
    r"<(document|document_content|untrusted)(?:\s[^<>]*)?>(.*?)(?:</\1\s*>|\Z)", re.S | re.I
)


def split_documents(text: str) -> list[ScreenText]:
    """A user message cut into the user's words and the documents they pasted (untrusted)."""
    if "<" not in text:
        return [ScreenText(text, "user")]
    pieces: list[ScreenText] = []
    end = 0
    for match in _DOCUMENT.finditer(text):
        if text[end : match.start()].strip():
            pieces.append(ScreenText(text[end : match.start()], "user"))
        if match.group(2).strip():
            pieces.append(ScreenText(match.group(2), "untrusted"))
        end = match.end()
    if text[end:].strip() or not pieces:
        pieces.append(ScreenText(text[end:], "user"))
    return pieces


def texts_of(
    request: Request,
    untrusted_roles: Collection[Role] = TOOL_ONLY,
    *,
    document_tags: bool = True,
) -> list[ScreenText]:
    """Every text of ``request`` worth screening, each marked user or untrusted.

    All user messages are screened, not only the last. Tool results are untrusted, as is all text
    of a role in ``untrusted_roles`` and, with ``document_tags``, whatever a user message wraps
    in ``<document>`` tags. Assistant turns (the application's record of what the model said),
    images and the client's own system prompt (allowed only where the route says the client may
    write it) are not screened.
    """
    texts: list[ScreenText] = []
    for message in request.messages:
        if message.role == "assistant" and "assistant" not in untrusted_roles:
            continue
        untrusted = message.role in untrusted_roles or message.role == "tool"
        for part in message.content:
            if isinstance(part, ToolResultPart):
                if part.content.strip():
                    texts.append(ScreenText(part.content, "untrusted"))
            elif isinstance(part, TextPart) and part.text.strip():
                if untrusted:
                    texts.append(ScreenText(part.text, "untrusted"))
                elif document_tags:
                    texts.extend(split_documents(part.text))
                else:
                    texts.append(ScreenText(part.text, "user"))
    return texts


# --- what the client sees ----------------------------------------------------------------------


def length_error(chars: int, limit: int, *, param: str = "messages") -> GatewayError:
    """413 ``request_too_large``, naming the limit and the length: nothing is truncated."""
    return GatewayError(
        "request_too_large",
        f"the prompt is {chars} characters long and this route accepts at most {limit}; "
        "shorten it and send it again (the gateway does not truncate prompts)",
        413,
        param=param,
    )


def refusal(*, param: str | None = None) -> GatewayError:
    """400 ``invalid_request``: every dialect maps it to its own invalid-request error. The
    message does not say which rule matched, so an attacker learns nothing to route around."""
    return GatewayError(
        "invalid_request",
        "the prompt was refused by this gateway's prompt screening",
        400,
        param=param,
    )
