"""The external PII detector: a Presidio-style analyzer on loopback (real HTTP) and entry points,
with slow, down and garbage answers under fail open and fail closed."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tokenrelay.guard.entities import Found
from tokenrelay.guard.external import DetectorUnavailable, ExternalDetector, entity_name

TEXT = "Write to Alice Martin at alice@example.com or call +44 20 7946 0958."
NAMES = re.compile(r"Alice Martin")
EMAILS = re.compile(r"\S+@\S+\.com")


class Analyzer:
    """Presidio analyzer's wire format on loopback: ``/analyze`` answers like Presidio does;
    ``/slow``, ``/fail`` (HTTP 500), ``/junk`` (not JSON), ``/shape`` (JSON, not a list of
    results) and ``/outside`` (a span past the text's end) misbehave."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        text = body["text"]
        kind = request.match_info["kind"]
        if kind == "slow":
            await asyncio.sleep(2)
        if kind == "fail":
            return web.Response(status=500, text="analyzer down")
        if kind == "junk":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if kind == "shape":
            return web.json_response({"error": "no recognizers"})
        if kind == "outside":
            return web.json_response([{"entity_type": "PERSON", "start": 0, "end": 999}])
        results = [
            {"entity_type": entity, "start": m.start(), "end": m.end(), "score": 0.85,
             "analysis_explanation": None, "recognition_metadata": {"recognizer_name": "x"}}
            for entity, regex in (("PERSON", NAMES), ("EMAIL_ADDRESS", EMAILS))
            for m in regex.finditer(text)
        ]  # fmt: skip
        return web.json_response(results)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def analyzer() -> AsyncIterator[Analyzer]:
    service = Analyzer()
    app = web.Application()
    app.router.add_post("/{kind}", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    service.url = f"http://{host}:{port}"
    try:
        yield service
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/analyze"  # nothing listens there any more


async def test_presidio_answers_map_to_our_entities(analyzer: Analyzer) -> None:
    detector = ExternalDetector(url=f"{analyzer.url}/analyze", language="de")
    try:
        found = await detector.find(TEXT)
    finally:
        await detector.aclose()
    assert found == [Found(9, 21, "custom:person"), Found(25, 42, "email")]
    assert analyzer.bodies[-1] == {"text": TEXT, "language": "de"}
    assert detector.failures == {}


async def test_entities_filter_keeps_only_the_types_asked(analyzer: Analyzer) -> None:
    async with aiohttp.ClientSession() as pool:
        only_email = ExternalDetector(url=f"{analyzer.url}/analyze", entities=["email"], pool=pool)
        assert [f.entity for f in await only_email.find(TEXT)] == ["email"]
        customs = ExternalDetector(url=f"{analyzer.url}/analyze", entities=["custom"], pool=pool)
        assert [f.entity for f in await customs.find(TEXT)] == ["custom:person"]
        await customs.aclose()  # a pool it was given stays open
        assert not pool.closed


def test_entity_names() -> None:
    assert entity_name("CREDIT_CARD") == "card"
    assert entity_name("IBAN_CODE") == "iban"
    assert entity_name("US_SSN") == "us_ssn"
    assert entity_name("UK_NHS") == "custom:uk_nhs"
    assert entity_name("email") == "email"
    assert entity_name("custom:badge") == "custom:badge"


BAD_ANSWERS = [
    ("slow", "timeout"),
    ("fail", "error"),
    ("junk", "garbage"),
    ("shape", "garbage"),
    ("outside", "garbage"),
]


@pytest.mark.parametrize(("path", "kind"), BAD_ANSWERS)
async def test_fail_open_lets_the_text_through(analyzer: Analyzer, path: str, kind: str) -> None:
    detector = ExternalDetector(url=f"{analyzer.url}/{path}", timeout=0.3, fail="open")
    try:
        assert await detector.find(TEXT) == []
        assert detector.failures == {kind: 1}
    finally:
        await detector.aclose()


@pytest.mark.parametrize(("path", "kind"), BAD_ANSWERS)
async def test_fail_closed_raises(analyzer: Analyzer, path: str, kind: str) -> None:
    detector = ExternalDetector(url=f"{analyzer.url}/{path}", timeout=0.3, fail="closed")
    try:
        with pytest.raises(DetectorUnavailable, match=f"failed \\({kind}\\)"):
            await detector.find(TEXT)
        assert detector.failures == {kind: 1}
    finally:
        await detector.aclose()


async def test_a_detector_that_is_down(caplog: pytest.LogCaptureFixture) -> None:
    url = closed_port_url()
    closed = ExternalDetector(url=url, fail="closed")
    with pytest.raises(DetectorUnavailable, match="failed \\(error\\)"):
        await closed.find(TEXT)
    await closed.aclose()
    opened = ExternalDetector(url=url, fail="open")
    with caplog.at_level(logging.WARNING, logger="tokenrelay.guard"):
        for _ in range(3):
            assert await opened.find(TEXT) == []
    await opened.aclose()
    assert opened.failures == {"error": 3}
    warnings = [r for r in caplog.records if r.name == "tokenrelay.guard"]
    assert len(warnings) == 1  # logged once, counted every time
    assert TEXT not in warnings[0].getMessage()


# --- entry points -------------------------------------------------------------------------------


def find_names(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), "PERSON") for m in NAMES.finditer(text)]


async def find_emails_async(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), "email") for m in EMAILS.finditer(text)]


class Badges:
    def find(self, text: str) -> list[tuple[int, int, str]]:
        return [(m.start(), m.end(), "custom:badge") for m in re.finditer(r"B-\d+", text)]


BADGES = Badges()


def sleepy(text: str) -> list[tuple[int, int, str]]:
    time.sleep(0.6)
    return []


def broken(text: str) -> list[tuple[int, int, str]]:
    raise RuntimeError("model not loaded")


def garbage(text: str) -> object:
    return [("zero", 3, "email")]


async def test_entry_points_sync_async_and_objects() -> None:
    sync = ExternalDetector(entry_point="tests.test_pii_external:find_names")
    assert await sync.find(TEXT) == [Found(9, 21, "custom:person")]
    asynchronous = ExternalDetector(entry_point="tests.test_pii_external:find_emails_async")
    assert await asynchronous.find(TEXT) == [Found(25, 42, "email")]
    badge = ExternalDetector(entry_point="tests.test_pii_external:BADGES")
    assert await badge.find("badge B-1234 please") == [Found(6, 12, "custom:badge")]


@pytest.mark.parametrize(
    ("name", "kind"), [("sleepy", "timeout"), ("broken", "error"), ("garbage", "garbage")]
)
async def test_entry_point_failures(name: str, kind: str) -> None:
    spec = f"tests.test_pii_external:{name}"
    opened = ExternalDetector(entry_point=spec, timeout=0.2, fail="open")
    assert await opened.find(TEXT) == []
    assert opened.failures == {kind: 1}
    closed = ExternalDetector(entry_point=spec, timeout=0.2, fail="closed")
    with pytest.raises(DetectorUnavailable, match=f"failed \\({kind}\\)"):
        await closed.find(TEXT)


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="exactly one of url or entry_point"):
        ExternalDetector()
    with pytest.raises(ValueError, match="exactly one of url or entry_point"):
        ExternalDetector(url="http://127.0.0.1:1/analyze", entry_point="x:y")
    with pytest.raises(ValueError, match="no PII detector entry point 'nope'"):
        ExternalDetector(entry_point="nope")
    with pytest.raises(ValueError, match="fail must be 'open' or 'closed'"):
        ExternalDetector(url="http://127.0.0.1:1/analyze", fail="maybe")  # type: ignore[arg-type]
    with pytest.raises(ModuleNotFoundError):
        ExternalDetector(entry_point="tokenrelay_no_such_module:find")
