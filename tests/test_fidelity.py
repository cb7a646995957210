"""Same dialect in and out is lossless: what an OpenAI upstream returns for ``logprobs`` and for
``n`` > 1 reaches an OpenAI client, streamed and whole, as the upstream sent it.

The upstream here is a small OpenAI-wire server that replays a stream shaped like the real API's
answer to ``n=2, logprobs=true, top_logprobs=1`` (the simulator has no log probabilities to give),
over real HTTP, and records what the gateway sent it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from aiohttp import web

from tests.servers import gateway_environ, gateway_server
from tokenrelay.model import TextDelta, Usage
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

MESSAGES: Any = [{"role": "user", "content": "Say hi"}]


def _logprob(token: str, logprob: float) -> dict[str, Any]:
    entry = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
    return {**entry, "top_logprobs": [entry]}


# (choice, text) in the order the upstream interleaves them
PIECES = [(0, "Hi"), (1, "Hello"), (0, " there"), (1, "!")]
LOGPROBS = {piece: _logprob(piece[1], -0.25 * i) for i, piece in enumerate(PIECES)}


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    data = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def upstream_stream(logprobs: bool) -> bytes:
    def lp(content: list[Any]) -> Any:
        return {"content": content, "refusal": None} if logprobs else None

    out = [
        _chunk(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": lp([]),
                    "finish_reason": None,
                }
            ]
        )
        for i in (0, 1)
    ]
    for choice, text in PIECES:
        delta = {"content": text}
        piece = [LOGPROBS[(choice, text)]]
        out.append(
            _chunk(
                [{"index": choice, "delta": delta, "logprobs": lp(piece), "finish_reason": None}]
            )
        )
    for choice, reason in ((0, "stop"), (1, "length")):
        out.append(
            _chunk([{"index": choice, "delta": {}, "logprobs": None, "finish_reason": reason}])
        )
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    out.append(_chunk([], usage=usage))
    return b"".join(out) + b"data: [DONE]\n\n"


class Upstream:
    """Replays the canned stream; ``bodies`` holds every request body it got."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(upstream_stream(bool(body.get("logprobs"))))
        await response.write_eof()
        return response


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    fake = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def oa(
    simulator: RunningSimulator, upstream: tuple[Upstream, str]
) -> AsyncIterator[openai.AsyncOpenAI]:
    environ = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_PROVIDERS__CANNED__KIND": "openai",
        "TOKENRELAY_PROVIDERS__CANNED__BASE_URL": upstream[1],
        "TOKENRELAY_PROVIDERS__CANNED__API_KEY": "test-canned-key",
        "TOKENRELAY_ROUTES__CANNED__TARGETS": "canned:gpt-4o",
    }
    async with gateway_server(environ) as gw:
        base = gw.url + "/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="-", max_retries=0) as client:
            yield client


def _sent(upstream: tuple[Upstream, str]) -> dict[str, Any]:
    return upstream[0].bodies[-1]


async def test_streamed_choices_and_logprobs_reach_the_client_as_sent(
    oa: openai.AsyncOpenAI, upstream: tuple[Upstream, str]
) -> None:
    stream = await oa.chat.completions.create(
        model="canned", messages=MESSAGES, n=2, logprobs=True, top_logprobs=1, stream=True
    )
    texts: dict[int, str] = {0: "", 1: ""}
    tokens: dict[int, list[Any]] = {0: [], 1: []}
    finishes: dict[int, str | None] = {}
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.logprobs is not None and choice.logprobs.content:
                tokens[choice.index].extend(t.model_dump() for t in choice.logprobs.content)
            if choice.finish_reason is not None:
                finishes[choice.index] = choice.finish_reason
    sent = _sent(upstream)
    assert (sent["n"], sent["logprobs"], sent["top_logprobs"]) == (2, True, 1)
    assert texts == {0: "Hi there", 1: "Hello!"}
    assert finishes == {0: "stop", 1: "length"}
    for index in (0, 1):
        expected = [LOGPROBS[p] for p in PIECES if p[0] == index]
        assert tokens[index] == expected


async def test_whole_response_has_every_choice_with_its_logprobs(
    oa: openai.AsyncOpenAI, upstream: tuple[Upstream, str]
) -> None:
    answer = await oa.chat.completions.create(
        model="canned", messages=MESSAGES, n=2, logprobs=True, top_logprobs=1
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert [c.message.content for c in answer.choices] == ["Hi there", "Hello!"]
    assert [c.finish_reason for c in answer.choices] == ["stop", "length"]
    for choice in answer.choices:
        assert choice.logprobs is not None and choice.logprobs.content is not None
        got = [t.model_dump() for t in choice.logprobs.content]
        assert got == [LOGPROBS[p] for p in PIECES if p[0] == choice.index]
    assert answer.usage is not None and answer.usage.completion_tokens == 4


async def test_without_logprobs_the_client_gets_null_as_the_upstream_sent(
    oa: openai.AsyncOpenAI, upstream: tuple[Upstream, str]
) -> None:
    answer = await oa.chat.completions.create(model="canned", messages=MESSAGES, n=2)
    assert "logprobs" not in _sent(upstream)
    assert [c.logprobs for c in answer.choices] == [None, None]
    assert [c.message.content for c in answer.choices] == ["Hi there", "Hello!"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")],
)
async def test_across_dialects_the_same_fields_are_refused_by_name(
    oa: openai.AsyncOpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await oa.chat.completions.create(model="an", messages=MESSAGES, **fields)
    assert raised.value.param == param
    assert "cannot be sent to an Anthropic model" in raised.value.message


async def test_a_whole_upstream_answer_round_trips_through_events() -> None:
    """An upstream that answers JSON (not a stream) goes ``parse_response`` -> events -> the
    client's ``encode_response``: every choice and its logprobs survive."""
    from tokenrelay.dialects import openai as dialect
    from tokenrelay.model import Accumulator

    lp = {"content": [_logprob("Hi", -0.5)], "refusal": None}
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "logprobs": lp,
            "finish_reason": "stop",
        }
        for i, text in enumerate(["Hi", "Hey", "Yo"])
    ]
    raw = json.dumps({"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 3}})
    accumulator = Accumulator()
    for event in dialect.parse_response(raw.encode()).events():
        accumulator.add(event)
    out = json.loads(dialect.encode_response(accumulator.result(), id="c", model="m"))
    assert [(c["index"], c["message"]["content"], c["logprobs"]) for c in out["choices"]] == [
        (0, "Hi", lp),
        (1, "Hey", lp),
        (2, "Yo", lp),
    ]


async def test_an_upstream_numbering_choices_past_the_limit_allocates_nothing() -> None:
    from tokenrelay.dialects import openai as dialect
    from tokenrelay.dialects.sse import SSEParser

    chunk = _chunk([{"index": 10**9, "delta": {"content": "x"}, "finish_reason": None}])
    reader = dialect.stream_reader()
    events = [e for sse in SSEParser().feed(chunk) for e in reader.feed(sse)]
    assert [e for e in events if not isinstance(e, Usage)] == []  # the served model only


async def test_the_role_chunk_with_empty_logprobs_is_not_a_first_token() -> None:
    """The upstream's first chunk carries ``logprobs: {"content": []}`` and no text; taking it
    for content would send the head and stop the first-token deadline before any token."""
    from tokenrelay.dialects import openai as dialect
    from tokenrelay.dialects.sse import SSEParser

    reader = dialect.stream_reader()
    events = [e for sse in SSEParser().feed(upstream_stream(True)) for e in reader.feed(sse)]
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert [(e.choice, e.text) for e in texts] == PIECES
