"""One client process of ``bench/slow_streams.py``: its share of the streams on raw asyncio
connections (no HTTP library: one request written, the token markers counted across chunk edges
in what comes back, nothing kept), the starts spread over ``--ramp`` seconds; prints a JSON
summary (outcomes, first-byte times, durations, its own CPU seconds).

    python bench/slow_client.py --port 8787 --streams 5000 --ramp 60 --deadline <unix s> \
        --tokens 200
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time

BODY = json.dumps(
    {
        "model": "gpt-5.5",
        "stream": True,
        "messages": [{"role": "user", "content": "Think it over slowly, then answer."}],
    }
).encode()
MARKER, EMPTY = b'"content":"', b'"content":""'


class _Stream(asyncio.Protocol):
    """One streaming request on its own connection (``connection: close``): the status line,
    token markers counted across chunk edges, the end marker, and nothing kept."""

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self.request = request
        self.done = done
        self.status = 0
        self.tokens = 0
        self.empty = 0
        self.tail = b""
        self.first: float | None = None
        self.finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.status = int(data[9:12])
            self.first = time.perf_counter()
        window = self.tail + data
        self.tokens += window.count(MARKER)
        self.empty += window.count(EMPTY)
        self.tail = window[-(len(EMPTY) - 1) :]
        if b"data: [DONE]" in window:
            self.finished = True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _client(port: int, streams: int, ramp: float, deadline: float, tokens: int) -> dict:
    loop = asyncio.get_running_loop()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\nauthorization: Bearer bench\r\n"
        f"connection: close\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    outcomes: collections.Counter[str] = collections.Counter()
    first_bytes: list[float] = []
    durations: list[float] = []
    start = time.perf_counter()

    async def one(index: int) -> None:
        await asyncio.sleep(ramp * index / max(1, streams))
        began = time.perf_counter()
        done: asyncio.Future[None] = loop.create_future()
        stream = _Stream(request, done)
        try:
            transport, _ = await loop.create_connection(lambda: stream, "127.0.0.1", port)
        except OSError as exc:
            outcomes[f"connect: {exc.__class__.__name__}"] += 1
            return
        try:
            await asyncio.wait_for(done, max(0.1, deadline - time.time()))
        except TimeoutError:
            transport.abort()
            outcomes["timeout"] += 1
            return
        if stream.status != 200:
            outcomes[f"status {stream.status}"] += 1
        elif not stream.finished:
            outcomes["cut short"] += 1
        elif stream.tokens - stream.empty != tokens:
            outcomes[f"{stream.tokens - stream.empty} tokens"] += 1
        else:
            outcomes["completed"] += 1
            assert stream.first is not None
            first_bytes.append(stream.first - began)
            durations.append(time.perf_counter() - began)

    await asyncio.gather(*(one(i) for i in range(streams)))
    return {
        "outcomes": dict(outcomes),
        "first_bytes": first_bytes,
        "durations": durations,
        "wall": time.perf_counter() - start,
        "cpu": time.process_time(),
    }


def client_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_client(args.port, args.streams, args.ramp, args.deadline, args.tokens))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--ramp", type=float, default=0.0)
    parser.add_argument("--deadline", type=float, required=True, help="Unix time to give up")
    parser.add_argument("--tokens", type=int, required=True, help="tokens a stream must bring")
    client_main(parser.parse_args())
