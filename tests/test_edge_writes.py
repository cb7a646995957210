"""How a stream's bytes leave the edge: a head marked ``BODY_FOLLOWS`` goes out with the first
body part in one write (one syscall, one TCP segment), any other head at once as before, and a
stream through the edge arrives whole."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.test_edge_attacks import Raw, edge_server, environ
from tokenrelay.edge.cycle import Cycle
from tokenrelay.types import BODY_FOLLOWS

pytestmark = pytest.mark.asyncio(loop_scope="session")

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x/y")]}


class Recording:
    """A transport that keeps each write apart (the edge's real one is uvloop's)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Connection:
    """What a cycle needs of its connection, with the transport above."""

    def __init__(self, transport: Recording) -> None:
        self.transport = transport
        self.write_paused = False
        self.default_headers: list[tuple[bytes, bytes]] = []
        self.completed = 0

    async def drain(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def on_response_complete(self) -> None:
        self.completed += 1


def cycle(transport: Recording, keep_alive: bool = True) -> Cycle:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    return Cycle(Connection(transport), scope, keep_alive, False)  # type: ignore[arg-type]


async def test_a_marked_head_leaves_with_the_first_part_in_one_write() -> None:
    transport = Recording()
    answer = cycle(transport)
    await answer.send({**START, BODY_FOLLOWS: True})
    assert transport.writes == [] and not answer.response_started
    await answer.send({"type": "http.response.body", "body": b"first", "more_body": True})
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n5\r\nfirst\r\n")
    await answer.send({"type": "http.response.body", "body": b"", "more_body": False})
    assert transport.writes[1:] == [b"0\r\n\r\n"] and answer.response_complete


async def test_an_unmarked_head_is_written_at_once() -> None:
    transport = Recording()
    answer = cycle(transport)
    await answer.send(START)
    assert len(transport.writes) == 1 and answer.response_started


async def test_a_held_head_whose_app_failed_gives_way_to_the_500() -> None:
    transport = Recording()
    answer = cycle(transport)
    await answer.send({**START, BODY_FOLLOWS: True})
    await answer.send_500_response()  # what the edge does when the app raises before a body
    assert transport.writes[0].startswith(b"HTTP/1.1 500 ")
    assert b"x/y" not in b"".join(transport.writes)


async def test_a_whole_answer_on_a_closing_connection_is_written_then_closed() -> None:
    transport = Recording()
    answer = cycle(transport, keep_alive=False)
    await answer.send({**START, BODY_FOLLOWS: True})
    await answer.send({"type": "http.response.body", "body": b"all", "more_body": False})
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"3\r\nall\r\n0\r\n\r\n")
    assert transport.closed


async def test_a_stream_through_the_edge_arrives_whole(simulator: Any) -> None:
    body = msgspec.json.encode(
        {"model": "gpt-5.5", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    async with edge_server(environ(simulator)) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"x-sim-tokens: 5\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        answer = await raw.answer(within=10)
    head, _, stream = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    assert stream.count(b'"content":"') >= 5
    assert stream.endswith(b"0\r\n\r\n") and b"data: [DONE]" in stream
