"""Plug-in classifiers: a second opinion for what the rules do not catch.

A classifier is anything with ``async def score(text) -> float`` (0 benign, 1 injection). Two
come with the gateway: ``HTTPClassifier`` for a guard service, and ``ThreadClassifier`` for a
local model the user installs (its blocking call runs in a worker thread). ``Screen.check``
applies the timeout and the fail-open or fail-closed policy around either.

The HTTP contract, kept small so any guard can be wrapped in a few lines::

    POST <classifier_url>   content-type: application/json   {"text": "<the prompt>"}
    200 application/json    {"score": 0.97}   # a number from 0 (benign) to 1 (injection)

Other fields in the answer are ignored; any other status, or a body without a numeric
``score`` in [0, 1], is an error (and handled as the route's ``classifier_fail`` says).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    import aiohttp


class Classifier(Protocol):
    async def score(self, text: str) -> float:
        """The probability that ``text`` is a prompt injection, from 0 to 1."""
        ...


class ClassifierError(Exception):
    """The classifier answered, but not with a score."""


class _Answer(msgspec.Struct):
    score: float


class HTTPClassifier:
    """A guard service over HTTP (see the module's contract), with a total timeout per call.

    Pass the gateway's shared ``aiohttp.ClientSession`` to reuse its connection pool; without
    one, the classifier opens its own on first use and ``aclose`` closes it.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.5,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = {"content-type": "application/json", **(headers or {})}
        self._session = session
        self._owned: aiohttp.ClientSession | None = None

    async def score(self, text: str) -> float:
        import aiohttp

        session = self._session or self._owned
        if session is None:
            session = self._owned = aiohttp.ClientSession()
        body = msgspec.json.encode({"text": text})
        limit = aiohttp.ClientTimeout(total=self.timeout)
        async with session.post(self.url, data=body, headers=self.headers, timeout=limit) as reply:
            payload = await reply.read()
            if reply.status != 200:
                raise ClassifierError(f"the classifier answered HTTP {reply.status}")
        try:
            found = msgspec.json.decode(payload, type=_Answer).score
        except msgspec.DecodeError as exc:
            raise ClassifierError(f"the classifier's answer has no usable score: {exc}") from None
        if not 0.0 <= found <= 1.0:
            raise ClassifierError(f"the classifier's score {found} is outside [0, 1]")
        return found

    async def aclose(self) -> None:
        if self._owned is not None:
            await self._owned.close()
            self._owned = None


class ThreadClassifier:
    """A blocking scorer (a local model) run in a worker thread, so the event loop never waits.

    For example, with ``transformers`` installed and a prompt-injection model downloaded::

        from transformers import pipeline
        guard = pipeline("text-classification", model="<a prompt-injection model>")
        classifier = ThreadClassifier(lambda text: guard(text, truncation=True)[0]["score"])

    (mapping the model's labels to an injection probability is the caller's part).
    """

    def __init__(self, scorer: Callable[[str], float]) -> None:
        self.scorer = scorer

    async def score(self, text: str) -> float:
        return float(await asyncio.to_thread(self.scorer, text))
