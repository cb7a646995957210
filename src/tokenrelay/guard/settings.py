"""A route's ``guard`` settings: personal-data masking of the request, the output guard."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from tokenrelay.guard.entities import check_entities


class ExternalDetectorSettings(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True
):
    """An operator's own detector (a Presidio analyzer, ...), consulted besides the built-in one."""

    url: str | None = None  # an HTTP endpoint (see docs/guard-detection.md for its contract)
    entry_point: str | None = None  # or "package.module:callable", loaded once
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 0.5  # seconds, before the upstream
    fail: Literal["open", "closed"] = "open"  # closed: refuse the request when it cannot answer

    def __post_init__(self) -> None:
        if self.url and self.entry_point:
            raise ValueError("guard.external: give url or entry_point, not both")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"guard.external.url: {self.url!r} is not an http(s):// URL")

    @property
    def configured(self) -> bool:
        return bool(self.url or self.entry_point)


class OutputGuardSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Rules checked on the answer as it streams; a match is masked in place or ends the stream."""

    rules: tuple[str, ...] = ()  # regular expressions
    terms: tuple[str, ...] = ()  # words or phrases, matched case-insensitively
    secrets: bool = False  # the personal-data detectors (guard.entities) applied to the answer
    action: Literal["mask", "block"] = "block"  # block: an in-band error ends the stream
    mask_with: str = "[redacted]"  # what a masked match becomes
    # The longest match of a rule with no bound of its own (``\d+``, ``.*``): the look-behind
    # kept between events, so a match split across them is still seen.
    max_match_chars: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 256
    canary: bool = True  # cut a stream that leaks the route's canary (screen.canary puts it in)

    @property
    def active(self) -> bool:
        return bool(self.rules or self.terms or self.secrets)


class GuardSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Personal data in the request (``pii``) and rules on the answer (``output``)."""

    # mask: values become placeholders (<EMAIL_1>) the answer's stream turns back into them;
    # block: a request holding any is refused with a 400 naming the types found
    pii: Literal["off", "mask", "block"] = "off"
    # entity types detected (docs/guard-detection.md); None: the detector's defaults
    entities: tuple[str, ...] | None = None
    custom: dict[str, str] = msgspec.field(default_factory=dict)  # name -> regex (<NAME_1>)
    external: ExternalDetectorSettings = msgspec.field(default_factory=ExternalDetectorSettings)
    output: OutputGuardSettings = msgspec.field(default_factory=OutputGuardSettings)

    def __post_init__(self) -> None:
        if self.entities is not None:
            check_entities(self.entities)  # at load, not as a 500 at the route's first request
        if self.custom:  # names, regexes, no empty match: the detector's own checks, at load
            from tokenrelay.guard.detectors import compile_custom

            for name, pattern in self.custom.items():
                try:
                    compile_custom({name: pattern})
                except ValueError as error:
                    raise ValueError(f"guard.custom.{name}: {error}") from None
        for pattern in self.output.rules:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"guard.output.rules: {pattern!r}: {error}") from None
