"""A Python client for the gateway's ``/api/generate`` endpoint, sync and async, streaming and
cancellable. It reads the stream with the same SSE parser and dialect code the gateway uses.

    with Client().stream("Explain SSE") as answer:
        for text in answer.text():
            print(text, end="", flush=True)
    print(answer.info.provider, answer.info.ttft_s)

Leaving the ``with`` block early closes the connection, which the gateway passes on upstream.
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tokenrelay.dialects import generate
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import (
    Error,
    Event,
    Finish,
    Message,
    Request,
    TextDelta,
    TextPart,
    Usage,
    merge_usage,
)

if TYPE_CHECKING:
    import aiohttp

DEFAULT_URL = "http://127.0.0.1:8787"


class GatewayRequestError(Exception):
    """The gateway refused the request (a 4xx/5xx before the stream began)."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"HTTP {status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message


@dataclass
class StreamInfo:
    """What the response head and the closing events said about the answer."""

    request_id: str | None = None
    provider: str | None = None
    model: str | None = None
    demo: bool = False
    ttft_s: float | None = None
    duration_s: float | None = None
    usage: Usage = field(default_factory=Usage)
    finish: Finish | None = None
    error: Error | None = None
    text_events: int = 0


def _body(prompt: str, route: str, max_tokens: int | None) -> bytes:
    request = Request(
        dialect="generate",
        model=route,
        messages=[Message("user", [TextPart(prompt)])],
        max_tokens=max_tokens,
        front_options={"include": ["usage", "finish"]},
    )
    return generate.encode_request(request, route, stream=True)


class _Decoder:
    def __init__(self, info: StreamInfo, started: float) -> None:
        self.parser = SSEParser()
        self.reader = generate.stream_reader()
        self.info = info
        self.started = started

    def head(self, headers: Any) -> None:
        self.info.request_id = headers.get("x-request-id")
        self.info.provider = headers.get("x-tokenrelay-provider")
        self.info.model = headers.get("x-tokenrelay-model")
        self.info.demo = headers.get("x-tokenrelay-demo") == "true"

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        for sse in self.parser.feed(chunk):
            events.extend(self.reader.feed(sse))
        info = self.info
        for event in events:
            if isinstance(event, TextDelta):
                if info.ttft_s is None:
                    info.ttft_s = time.perf_counter() - self.started
                info.text_events += 1
            elif isinstance(event, Usage):
                info.usage = merge_usage(info.usage, event)
            elif isinstance(event, Finish):
                info.finish = event
            elif isinstance(event, Error):
                info.error = event
        return events

    def end(self) -> None:
        self.info.duration_s = time.perf_counter() - self.started
        if not self.reader.done and self.info.error is None:
            self.info.error = Error("upstream_unavailable", "the stream ended before [DONE]", 502)


def _raise_for(status: int, body: bytes) -> None:
    error = generate.parse_error(status, body, {})
    raise GatewayRequestError(status, error.type, error.message)


class SyncStream:
    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        decoder: _Decoder,
    ) -> None:
        self._connection = connection
        self._response = response
        self._decoder = decoder
        self.info = decoder.info

    def __iter__(self) -> Iterator[Event]:
        try:
            while chunk := self._response.read1(65536):
                yield from self._decoder.feed(chunk)
        finally:
            self._decoder.end()

    def text(self) -> Iterator[str]:
        for event in self:
            if isinstance(event, TextDelta):
                yield event.text

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """Blocking client on the standard library (no event loop needed, cheap to import)."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 300.0
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (443 if self._https else 80)
        self._prefix = parsed.path.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout

    def stream(
        self, prompt: str, *, route: str = "default", max_tokens: int | None = None
    ) -> SyncStream:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = cls(self._host, self._port, timeout=self._timeout)
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        started = time.perf_counter()
        try:
            connection.request(
                "POST", self._prefix + "/api/generate", _body(prompt, route, max_tokens), headers
            )
            response = connection.getresponse()
            if response.status != 200:
                _raise_for(response.status, response.read())
        except BaseException:
            connection.close()
            raise
        decoder = _Decoder(StreamInfo(), started)
        decoder.head(response.headers)
        return SyncStream(connection, response, decoder)


class AsyncStream:
    def __init__(self, response: aiohttp.ClientResponse, decoder: _Decoder) -> None:
        self._response = response
        self._decoder = decoder
        self.info = decoder.info

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            async for chunk in self._response.content.iter_any():
                for event in self._decoder.feed(chunk):
                    yield event
        finally:
            self._decoder.end()

    async def text(self) -> AsyncIterator[str]:
        async for event in self:
            if isinstance(event, TextDelta):
                yield event.text

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._response.close()


class AsyncClient:
    """asyncio client on aiohttp; cancelling the task or leaving the block closes the stream."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 300.0
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def stream(
        self, prompt: str, *, route: str = "default", max_tokens: int | None = None
    ) -> AsyncStream:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_read=self._timeout)
            )
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        started = time.perf_counter()
        response = await self._session.post(
            self._base_url + "/api/generate", data=_body(prompt, route, max_tokens), headers=headers
        )
        if response.status != 200:
            body = await response.read()
            response.close()
            _raise_for(response.status, body)
        decoder = _Decoder(StreamInfo(), started)
        decoder.head(response.headers)
        return AsyncStream(response, decoder)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
