"""What our bounded HTTP protocol (``tokenrelay.edge.protocol``) costs per request against
uvicorn's plain httptools one, in one process.

    .venv/bin/python bench/edge_protocol.py

Each protocol parses the same 200-byte request with six headers, many times, over a transport
that writes nothing, on uvloop; the ASGI task is not started, so the figure is the protocol's
own work (parse, callbacks, timers), the median of several repetitions, in microseconds per
request.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tokenrelay.edge.protocol import EdgeProtocol

REQUEST = (
    b"POST /v1/messages HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
    b"x-api-key: trk_example\r\nanthropic-version: 2023-06-01\r\nuser-agent: bench\r\n"
    b"content-length: 60\r\n\r\n" + b"x" * 60
)


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """Never run: the protocols below do not start their ASGI task."""


class _Transport(asyncio.Transport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8787), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def _without_app(base: type[Any]) -> type[Any]:
    class Parsing(base):  # type: ignore[valid-type,misc]
        __slots__ = ()

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            pass  # answered below, once the request is in

        def _start(self, cycle: Any, app: Any) -> None:
            pass  # the same, in ours

    return Parsing


async def per_request_us(base: type[Any], n: int = 50_000, repeats: int = 7) -> float:
    config = Config(_app, log_level="warning")
    config.load()
    protocol = _without_app(base)(config, ServerState(), {})
    protocol.connection_made(_Transport())
    times = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(n):
            protocol.data_received(REQUEST)
            protocol.cycle.response_complete = True
            protocol.on_response_complete()
        times.append((time.perf_counter_ns() - started) / n / 1000)
    return statistics.median(times)


async def main() -> None:
    for name, base in (("httptools (uvicorn)", HttpToolsProtocol), ("edge", EdgeProtocol)):
        print(f"{name:20} {await per_request_us(base):6.2f} µs per request")


if __name__ == "__main__":
    import uvloop  # as `tokenrelay serve` runs

    uvloop.run(main())
