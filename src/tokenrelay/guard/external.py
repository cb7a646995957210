"""An external detector the operator runs: a Presidio analyzer over HTTP, or a Python entry point.

Its findings add to the built-in ones (names, addresses, whatever it knows). The HTTP contract is
Presidio analyzer's, so a stock ``presidio-analyzer`` container works as it is::

    POST <url>   content-type: application/json   {"text": "<the prompt>", "language": "en"}
    200 application/json
    [{"entity_type": "EMAIL_ADDRESS", "start": 5, "end": 22, "score": 1.0}, ...]

Presidio's names map to ours (``EMAIL_ADDRESS`` -> ``email``); any other type it reports becomes
``custom:<name in lower case>`` (``PERSON`` -> ``custom:person``). Any other status, a body that is
not such a list, or spans outside the text are an error. An entry point is ``"module:attribute"``
or the name of an entry point in the ``tokenrelay.pii_detectors`` group: a callable (or an object
with ``find``) taking the text and returning ``(start, end, entity)`` triples, sync (run in a worker
thread) or async. A timeout or an error returns no findings (``fail="open"``: logged once, counted)
or raises ``DetectorUnavailable`` (``fail="closed"``: the caller refuses the request).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from tokenrelay.guard.entities import CUSTOM_PREFIX, ENTITY_TYPES, Found

log = logging.getLogger("tokenrelay.guard")

ENTRY_POINT_GROUP = "tokenrelay.pii_detectors"

# Presidio's predefined entity names that are ours under another name.
PRESIDIO_NAMES: dict[str, str] = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
    "US_SSN": "us_ssn",
}


class DetectorUnavailable(Exception):
    """The external detector was slow, down or answered garbage, and it is set to fail closed."""


class UnloadableDetector:
    """An entry point that could not be loaded: every call fails as ``fail`` says, counted as
    an ``error`` (logged once, at once: only a settings change mends it), never a 500."""

    def __init__(self, fail: Literal["open", "closed"], reason: str) -> None:
        self.fail = fail
        self.reason = reason
        self.failures: dict[str, int] = {}
        log.error("external PII detector cannot be loaded (fail %s): %s", fail, reason)

    async def find(self, text: str) -> list[Found]:
        self.failures["error"] = self.failures.get("error", 0) + 1
        if self.fail == "closed":
            raise DetectorUnavailable(f"the external PII detector failed (error): {self.reason}")
        return []

    async def aclose(self) -> None:
        return None


class _Result(msgspec.Struct):
    entity_type: str
    start: int
    end: int


def entity_name(reported: str) -> str:
    """Our name for an entity type an external detector reports (Presidio's or ours)."""
    if reported in PRESIDIO_NAMES:
        return PRESIDIO_NAMES[reported]
    if (reported in ENTITY_TYPES and reported != "custom") or reported.startswith(CUSTOM_PREFIX):
        return reported
    return CUSTOM_PREFIX + reported.lower()


def load_entry_point(spec: str) -> Any:
    """The object named by ``"module:attribute"``, or by an entry point of our group."""
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
    if not found:
        raise ValueError(
            f"no PII detector entry point {spec!r}: give 'module:attribute' or the name of "
            f"an entry point in the {ENTRY_POINT_GROUP!r} group"
        )
    return next(iter(found)).load()


class ExternalDetector:
    """An operator's detector with a timeout per call and a fail-open or fail-closed policy.

    Pass the gateway's shared ``aiohttp.ClientSession`` as ``pool`` to reuse its connections;
    without one, the detector opens its own on first use and ``aclose`` closes it.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        entry_point: str | None = None,
        timeout: float = 0.5,
        fail: Literal["open", "closed"] = "open",
        entities: Iterable[str] | None = None,
        pool: Any = None,
        language: str = "en",
    ) -> None:
        if (url is None) == (entry_point is None):
            raise ValueError("an external PII detector needs exactly one of url or entry_point")
        if fail not in ("open", "closed"):
            raise ValueError(f"fail must be 'open' or 'closed', not {fail!r}")
        if timeout <= 0:
            raise ValueError(f"the external PII detector's timeout must be positive, not {timeout}")
        self.url = url
        self.timeout = timeout
        self.fail = fail
        self.entities = None if entities is None else frozenset(entities)
        self.language = language
        self._pool = pool
        self._owned: Any = None
        self._target = load_entry_point(entry_point) if entry_point is not None else None
        self.failures: dict[str, int] = {}  # "timeout" / "error" / "garbage" -> count
        self._logged: set[str] = set()

    async def find(self, text: str) -> list[Found]:
        """The external findings in ``text`` (of the kept entities), sorted by position."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._target is None:
                    raw = await self._ask_http(text)
                else:
                    raw = await self._ask_local(self._target, text)
            found = self._check(raw, len(text))
        except TimeoutError:
            return self._failed("timeout", f"no answer within {self.timeout} s")
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
            return self._failed("garbage", str(exc))
        except Exception as exc:  # a detector that fails must not take the gateway down with it
            return self._failed("error", f"{type(exc).__name__}: {exc}")
        return found

    async def _ask_http(self, text: str) -> list[tuple[int, int, str]]:
        import aiohttp

        session = self._pool or self._owned
        if session is None:
            session = self._owned = aiohttp.ClientSession()
        body = msgspec.json.encode({"text": text, "language": self.language})
        headers = {"content-type": "application/json"}
        async with session.post(self.url, data=body, headers=headers) as reply:
            payload = await reply.read()
            if reply.status != 200:
                raise ConnectionError(f"the detector answered HTTP {reply.status}")
        results = msgspec.json.decode(payload, type=list[_Result])
        return [(item.start, item.end, item.entity_type) for item in results]

    async def _ask_local(self, target: Any, text: str) -> Any:
        call = getattr(target, "find", target)
        if inspect.iscoroutinefunction(call):
            return await call(text)
        return await asyncio.to_thread(call, text)

    def _check(self, raw: Any, length: int) -> list[Found]:
        found: list[Found] = []
        for item in raw:
            start, end, reported = item
            if not (isinstance(start, int) and isinstance(end, int) and isinstance(reported, str)):
                raise TypeError(f"a finding must be (start, end, entity), not {item!r}")
            if not 0 <= start < end <= length:
                raise ValueError(f"a finding's span {start}..{end} is outside the text")
            entity = entity_name(reported)
            if self._keeps(entity):
                found.append(Found(start, end, entity))
        found.sort()
        return found

    def _keeps(self, entity: str) -> bool:
        if self.entities is None:
            return True
        return entity in self.entities or (
            entity.startswith(CUSTOM_PREFIX) and "custom" in self.entities
        )

    def _failed(self, kind: str, reason: str) -> list[Found]:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if self.fail == "closed":
            raise DetectorUnavailable(f"the external PII detector failed ({kind}): {reason}")
        if kind not in self._logged:  # once per kind: a detector that is down would flood
            self._logged.add(kind)
            log.warning("external PII detector failed (%s), letting text through: %s", kind, reason)
        return []

    async def aclose(self) -> None:
        """Close the HTTP session this detector opened (not a pool it was given)."""
        if self._owned is not None:
            await self._owned.close()
            self._owned = None
