"""The external PII detector wired into routes, through the gateway and the simulator: a
Presidio-style analyzer on loopback finds a name the built-in detectors do not, the upstream gets
its placeholder and the client the name; slow, down and garbage analyzers under ``fail = "open"``
(the built-in masking only, the failure counted and logged once) and ``fail = "closed"`` (a 503
in the client's dialect, nothing sent upstream); ``block`` naming the external type; an entry
point named in the settings."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_guard_http import FRONTS, body_for, post, upstream_body
from tests.test_pii_external import Analyzer, analyzer, closed_port_url
from tokenrelay.guard.external import ExternalDetector, UnloadableDetector
from tokenrelay.settings import ConfigError, load
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

__all__ = ["analyzer"]  # the loopback analyzer's fixture, shared with test_pii_external

NAME, EMAIL = "Alice Martin", "alice@example.com"
PROMPT = f"Write to {NAME} at {EMAIL} about the invoice."
# The analyzer's misbehaving paths and the failure each is counted as (tests.test_pii_external).
FAILURES = {
    "slow": "timeout",  # answers after 2 s; the routes wait 0.3 s
    "down": "error",  # a closed port
    "fail": "error",  # HTTP 500
    "junk": "garbage",  # not JSON
    "shape": "garbage",  # JSON, not a list of results
    "outside": "garbage",  # a span past the text's end
}


def find_names(text: str) -> list[tuple[int, int, str]]:
    """An operator's detector named by an entry point in the settings."""
    return [(m.start(), m.end(), "PERSON") for m in re.finditer(NAME, text)]


def external_route(url: str, fail: str = "open", pii: str = "mask") -> str:
    return json.dumps({"pii": pii, "external": {"url": url, "timeout": 0.3, "fail": fail}})


def routes(analyzer: Analyzer) -> dict[str, str]:
    urls = {kind: f"{analyzer.url}/{kind}" for kind in FAILURES}
    urls["down"] = closed_port_url()
    env = {
        "TOKENRELAY_ROUTES__EXT__GUARD": external_route(f"{analyzer.url}/analyze", "closed"),
        "TOKENRELAY_ROUTES__EXTBLOCK__GUARD": external_route(
            f"{analyzer.url}/analyze", pii="block"
        ),
        "TOKENRELAY_ROUTES__EXTEMAIL__GUARD": json.dumps(
            {"pii": "mask", "entities": ["email"], "external": {"url": f"{analyzer.url}/analyze"}}
        ),
        "TOKENRELAY_ROUTES__EXTCUSTOM__GUARD": json.dumps(
            {
                "pii": "mask",
                "entities": ["email", "custom"],
                "external": {"url": f"{analyzer.url}/analyze"},
            }
        ),
        "TOKENRELAY_ROUTES__ENTRY__GUARD": json.dumps(
            {"pii": "mask", "external": {"entry_point": f"{__name__}:find_names"}}
        ),
        # an entry point that cannot be loaded: a detector failing every call, not a 500
        "TOKENRELAY_ROUTES__NOENTRY__GUARD": json.dumps(
            {"pii": "mask", "external": {"entry_point": "tokenrelay_no_such_module:find"}}
        ),
        "TOKENRELAY_ROUTES__NOENTRYCLOSED__GUARD": json.dumps(
            {"pii": "mask", "external": {"entry_point": f"{__name__}:nothing", "fail": "closed"}}
        ),
        "TOKENRELAY_ROUTES__NOENTRYCLOSED__MAX_CONCURRENT_STREAMS": "1",
        "TOKENRELAY_AUDIT__ENABLED": "false",
    }
    for kind, url in urls.items():
        for fail in ("open", "closed"):
            env[f"TOKENRELAY_ROUTES__{fail.upper()}{kind.upper()}__GUARD"] = external_route(
                url, fail
            )
    for name in {key.split("__")[1] for key in env if key.startswith("TOKENRELAY_ROUTES__")}:
        env[f"TOKENRELAY_ROUTES__{name}__TARGETS"] = "openai:gpt-5.5"
    return env


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator, analyzer: Analyzer) -> AsyncIterator[RunningGateway]:
    environ = {**gateway_environ(simulator.url), **routes(analyzer)}
    async with gateway_server(environ) as running:
        yield running


def detector_failures(gw: RunningGateway, route: str) -> dict[str, int]:
    """The failures the route's external detector counted since its first request."""
    settings = gw.gateway.router.routes[route].settings.guard
    found = gw.gateway.guards.external(settings)
    assert isinstance(found, ExternalDetector | UnloadableDetector)
    return found.failures


async def post_headers(
    gw: RunningGateway, front: str, body: dict[str, object]
) -> tuple[int, str, str, str | None]:
    """The answer's status, request id, body and retry-after header."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + front, json=body) as response,
    ):
        raw = (await response.read()).decode()
        return (
            response.status,
            response.headers.get("x-request-id", ""),
            raw,
            response.headers.get("retry-after"),
        )


@pytest.mark.parametrize("front", FRONTS)
async def test_the_analyzer_finds_a_name_the_upstream_never_sees(
    front: str, gw: RunningGateway, simulator: RunningSimulator, analyzer: Analyzer
) -> None:
    status, request_id, raw = await post(
        gw, front, body_for(front, "ext", PROMPT), **{"x-sim-echo": "2"}
    )
    assert status == 200, raw
    assert PROMPT in str(analyzer.bodies[-1]["text"])  # the analyzer was asked, over HTTP
    sent = await upstream_body(simulator)
    assert NAME not in sent and EMAIL not in sent
    assert "<PERSON_1>" in sent and "<EMAIL_1>" in sent
    assert NAME in raw and EMAIL in raw and "<PERSON_" not in raw
    record = await gw.wait_record(request_id)
    assert record.outcome == "completed"
    assert record.guard == {"PERSON": 1, "EMAIL": 1}


@pytest.mark.parametrize(("route", "masked"), [("extemail", False), ("extcustom", True)])
async def test_listed_entities_keep_the_analyzers_own_types_only_with_custom(
    route: str, masked: bool, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    front = "/v1/chat/completions"
    status, request_id, raw = await post(gw, front, body_for(front, route, PROMPT))
    assert status == 200, raw
    sent = await upstream_body(simulator)
    assert EMAIL not in sent and (NAME not in sent) == masked
    expected = {"PERSON": 1, "EMAIL": 1} if masked else {"EMAIL": 1}
    assert (await gw.wait_record(request_id)).guard == expected


async def test_an_entry_point_named_in_the_settings(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    front = "/v1/chat/completions"
    status, request_id, raw = await post(
        gw, front, body_for(front, "entry", PROMPT), **{"x-sim-echo": "1"}
    )
    assert status == 200, raw
    sent = await upstream_body(simulator)
    assert NAME not in sent and "<PERSON_1>" in sent and "<EMAIL_1>" in sent
    assert NAME in raw and EMAIL in raw
    assert (await gw.wait_record(request_id)).guard == {"PERSON": 1, "EMAIL": 1}


@pytest.mark.parametrize("kind", FAILURES)
async def test_fail_open_masks_with_the_built_in_detectors_only(
    kind: str, gw: RunningGateway, simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    route, front = f"open{kind}", "/v1/chat/completions"
    with caplog.at_level(logging.WARNING, logger="tokenrelay.guard"):
        for _ in range(2):
            body = body_for(front, route, PROMPT)
            status, request_id, raw = await post(gw, front, body, **{"x-sim-echo": "500"})
            assert status == 200, raw
            sent = await upstream_body(simulator)
            assert EMAIL not in sent and "<EMAIL_1>" in sent  # the built-in detector's
            assert NAME in sent  # what only the analyzer finds went through as it was
            assert NAME in raw and EMAIL in raw
            assert (await gw.wait_record(request_id)).guard == {"EMAIL": 1}
    assert detector_failures(gw, route) == {FAILURES[kind]: 2}  # each counted
    warnings = [r.getMessage() for r in caplog.records if r.name == "tokenrelay.guard"]
    assert len(warnings) == 1 and f"({FAILURES[kind]})" in warnings[0]  # logged once
    assert NAME not in warnings[0] and EMAIL not in warnings[0]


@pytest.mark.parametrize("kind", FAILURES)
async def test_fail_closed_refuses_with_a_503_and_sends_nothing(
    kind: str, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    route, front = f"closed{kind}", "/v1/chat/completions"
    before = simulator.stats()["requests"]
    status, request_id, raw, retry_after = await post_headers(
        gw, front, body_for(front, route, PROMPT)
    )
    assert status == 503 and retry_after == "1"
    assert "personal-data detector did not answer" in raw
    assert NAME not in raw and EMAIL not in raw
    assert simulator.stats()["requests"] == before  # nothing went upstream
    record = await gw.wait_record(request_id)
    assert record.outcome == "rejected" and record.reject_reason == "guard_detector"
    assert detector_failures(gw, route) == {FAILURES[kind]: 1}
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        page = await response.text()
    assert f'tokenrelay_guard_blocked_total{{route="{route}",rule="detector"}} 1' in page


MESSAGE = (
    "this route's personal-data detector did not answer and the route is set to fail closed, "
    "so the request was not sent; retry shortly"
)


def dialect_error(front: str, raw: str) -> bool:
    """The refusal is the error body each front's clients read (``/api/chat``: the AI SDK's
    ``useChat`` shows a failed response's text)."""
    if front == "/api/chat":
        return raw == MESSAGE
    error: dict[str, Any] = json.loads(raw)
    if front == "/v1/messages":
        return error == {"type": "error", "error": {"type": "api_error", "message": MESSAGE}}
    return bool(error["error"]["message"] == MESSAGE)  # Chat Completions, Responses, /api/generate


@pytest.mark.parametrize("front", FRONTS)
async def test_the_503_is_in_the_clients_dialect(
    front: str, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    before = simulator.stats()["requests"]
    status, _, raw, retry_after = await post_headers(
        gw, front, body_for(front, "closeddown", PROMPT)
    )
    assert status == 503 and retry_after == "1", raw
    assert dialect_error(front, raw), raw
    assert simulator.stats()["requests"] == before


@pytest.mark.parametrize("front", FRONTS)
async def test_block_names_the_type_the_analyzer_found(
    front: str, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    before = simulator.stats()["requests"]
    text = f"Please write to {NAME} today."  # nothing the built-in detectors find
    status, request_id, raw = await post(gw, front, body_for(front, "extblock", text))
    assert status == 400, raw
    assert "(PERSON)" in raw and NAME not in raw
    assert simulator.stats()["requests"] == before
    record = await gw.wait_record(request_id)
    assert record.reject_reason == "guard_pii" and record.guard == {"PERSON": 1}


async def test_an_entry_point_that_cannot_be_loaded_fails_as_the_settings_say(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    front = "/v1/chat/completions"
    body = body_for(front, "noentry", PROMPT)
    status, _, raw = await post(gw, front, body, **{"x-sim-echo": "500"})
    assert status == 200, raw  # fail open: the built-in detectors' masking only
    sent = await upstream_body(simulator)
    assert EMAIL not in sent and NAME in sent
    assert detector_failures(gw, "noentry") == {"error": 1}
    before = simulator.stats()["requests"]
    for _ in range(3):  # its stream slot (one per caller here) is given back each time
        body = body_for(front, "noentryclosed", PROMPT)
        status, _, raw, retry_after = await post_headers(gw, front, body)
        assert status == 503 and retry_after == "1", raw
    assert simulator.stats()["requests"] == before
    assert detector_failures(gw, "noentryclosed") == {"error": 3}


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        (
            {"external": {"url": "http://127.0.0.1:1/analyze", "entry_point": "m:f"}},
            "give url or entry_point, not both",
        ),
        ({"external": {"url": "presidio:3000/analyze"}}, "is not an http(s):// URL"),
        ({"external": {"url": "http://x/analyze", "timeout": 0}}, "Expected `float` > 0"),
        ({"external": {"url": "http://x/analyze", "fail": "maybe"}}, "Invalid enum value 'maybe'"),
        ({"entities": ["email", "person"]}, "unknown PII entity type person"),
        ({"custom": {"bad name": "x"}}, "custom PII pattern name 'bad name'"),
        ({"custom": {"maybe": "x*"}}, "custom PII pattern 'maybe' matches the empty string"),
    ],
)
async def test_guard_settings_are_checked_at_load(guard: dict[str, object], message: str) -> None:
    environ = {
        "TOKENRELAY_ROUTES__R__TARGETS": "openai:gpt-5.5",
        "TOKENRELAY_ROUTES__R__GUARD": json.dumps({"pii": "mask", **guard}),
    }
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(environ=environ)
