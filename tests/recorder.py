"""A loopback listener that records every HTTP request a client sends (method, path, query,
headers, body) and answers with the smallest valid reply of the dialect, so a real coding agent
can be pointed at it and its traffic kept as a fixture, independent of the gateway under test.

A WebSocket upgrade is recorded and refused with ``websocket_status`` (426 by default: the one
status Codex takes as "this server speaks HTTP only" and falls back to POST at once).

Run it alone: ``python -m tests.recorder --port 8799 --out capture.json`` (Ctrl-C writes the file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

REPLY_TEXT = "hi"
_HOP = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}
)
_KEPT = 64 * 1024  # of a forwarded answer, for the record
_CLIENT_MAX = 64 * 1024 * 1024


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket"


class Recorder:
    """The records (in arrival order, ``at`` in seconds since the recorder started) and the
    handler answering them."""

    def __init__(
        self,
        *,
        websocket_status: int = 426,
        tool_call: dict[str, Any] | None = None,
        upstream: str | None = None,
    ) -> None:
        self.websocket_status = websocket_status
        # Answered once, to the first model request that offers tools: {"name": ..., "input":
        # ...} for Messages, {"name": ..., "arguments": "..."} (or "input" for a custom tool) for
        # Responses. Its result comes back in the next request.
        self.tool_call = tool_call
        self.upstream = upstream  # forward everything there (after recording) instead
        self.records: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._serial = 0
        self._session: ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        upgrade = _is_upgrade(request)
        self.records.append(
            {
                "at": round(time.monotonic() - self.started, 4),
                "method": request.method,
                "path": request.path,
                "query": [[k, v] for k, v in request.query.items()],
                "headers": [[k.lower(), v] for k, v in request.headers.items()],
                "websocket_upgrade": upgrade,
                "body": body,
            }
        )
        self._serial += 1
        if self.upstream is not None:
            return await self._forward(request, raw, self.records[-1])
        if upgrade:
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": "WebSocket not supported"}},
                status=self.websocket_status,
                headers={"connection": "close"},
            )
        path = request.path
        wants = body if isinstance(body, dict) else {}
        if request.method == "POST" and path.endswith("/messages/count_tokens"):
            return web.json_response({"input_tokens": max(1, len(raw) // 4)})
        if request.method == "POST" and path.endswith("/messages"):
            return await self._messages(request, wants)
        if request.method == "POST" and path.endswith("/responses"):
            return await self._responses(request, wants)
        return web.json_response(
            {"error": {"type": "not_found_error", "message": f"recorder: no {path}"}}, status=404
        )

    async def _forward(
        self, request: web.Request, raw: bytes, record: dict[str, Any]
    ) -> web.StreamResponse:
        """Pass the request on (a WebSocket upgrade as the plain GET it is), stream the answer
        back, and keep its status, headers and first bytes in the record."""
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=None), auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = f"{self.upstream}{request.path_qs}"
        async with self._session.request(
            request.method, url, headers=headers, data=raw or None
        ) as upstream:
            answer: dict[str, Any] = {
                "status": upstream.status,
                "headers": [[k.lower(), v] for k, v in upstream.headers.items()],
                "body": "",
            }
            record["response"] = answer
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP},
            )
            await response.prepare(request)
            kept = bytearray()
            async for chunk in upstream.content.iter_any():
                if len(kept) < _KEPT:
                    kept += chunk[: _KEPT - len(kept)]
                await response.write(chunk)
            await response.write_eof()
        text = kept.decode("utf-8", "replace")
        try:
            answer["body"] = json.loads(text)
        except ValueError:
            answer["body"] = text
        return response

    def _take_tool_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        call = self.tool_call
        if call is None or not body.get("tools"):
            return None
        self.tool_call = None
        return call

    async def _stream(self, request: web.Request, chunks: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _messages(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = str(body.get("model", "unknown"))
        message_id = f"msg_rec_{self._serial:06d}"
        usage = {"input_tokens": 10, "output_tokens": 1}
        call = self._take_tool_call(body)
        if call is not None:
            return await self._messages_tool_use(request, body, call, message_id, model)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": REPLY_TEXT}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 0},
        }
        return await self._stream(
            request,
            [
                _sse("message_start", {"type": "message_start", "message": start}),
                _sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": REPLY_TEXT},
                    },
                ),
                _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
                _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 1},
                    },
                ),
                _sse("message_stop", {"type": "message_stop"}),
            ],
        )

    async def _messages_tool_use(
        self,
        request: web.Request,
        body: dict[str, Any],
        call: dict[str, Any],
        message_id: str,
        model: str,
    ) -> web.StreamResponse:
        block = {"type": "tool_use", "id": f"toolu_rec_{self._serial:06d}", "name": call["name"]}
        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 0},
        }
        return await self._stream(
            request,
            [
                _sse("message_start", {"type": "message_start", "message": start}),
                _sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {**block, "input": {}},
                    },
                ),
                _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": json.dumps(call["input"]),
                        },
                    },
                ),
                _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
                _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                        "usage": {"output_tokens": 5},
                    },
                ),
                _sse("message_stop", {"type": "message_stop"}),
            ],
        )

    async def _responses(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = str(body.get("model", "unknown"))
        response_id = f"resp_rec_{self._serial:06d}"
        item_id = f"msg_rec_{self._serial:06d}"
        part = {"type": "output_text", "text": REPLY_TEXT, "annotations": []}
        item = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
        usage = {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 1,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 11,
        }
        created = int(time.time())
        call = self._take_tool_call(body)
        if call is not None:
            item_id = f"fc_rec_{self._serial:06d}"
            if "input" in call:
                item = {
                    "id": item_id,
                    "type": "custom_tool_call",
                    "status": "completed",
                    "call_id": f"call_rec_{self._serial:06d}",
                    "name": call["name"],
                    "input": call["input"],
                }
            else:
                item = {
                    "id": item_id,
                    "type": "function_call",
                    "status": "completed",
                    "call_id": f"call_rec_{self._serial:06d}",
                    "name": call["name"],
                    "arguments": call["arguments"],
                }

        def response(status: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "model": model,
                "output": output,
                "usage": usage if with_usage else None,
            }

        if not body.get("stream"):
            return web.json_response(response("completed", [item], True))
        events: list[tuple[str, dict[str, Any]]]
        if call is not None:
            events = [
                ("response.created", {"response": response("in_progress", [], False)}),
                ("response.in_progress", {"response": response("in_progress", [], False)}),
                ("response.output_item.added", {"output_index": 0, "item": item}),
                ("response.output_item.done", {"output_index": 0, "item": item}),
                ("response.completed", {"response": response("completed", [item], True)}),
            ]
            return await self._stream(
                request,
                [
                    _sse(name, {"type": name, "sequence_number": number, **data})
                    for number, (name, data) in enumerate(events)
                ],
            )
        events = [
            ("response.created", {"response": response("in_progress", [], False)}),
            ("response.in_progress", {"response": response("in_progress", [], False)}),
            (
                "response.output_item.added",
                {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
            ),
            (
                "response.content_part.added",
                {
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": {**part, "text": ""},
                },
            ),
            (
                "response.output_text.delta",
                {"item_id": item_id, "output_index": 0, "content_index": 0, "delta": REPLY_TEXT},
            ),
            (
                "response.output_text.done",
                {"item_id": item_id, "output_index": 0, "content_index": 0, "text": REPLY_TEXT},
            ),
            (
                "response.content_part.done",
                {"item_id": item_id, "output_index": 0, "content_index": 0, "part": part},
            ),
            ("response.output_item.done", {"output_index": 0, "item": item}),
            ("response.completed", {"response": response("completed", [item], True)}),
        ]
        chunks = [
            _sse(name, {"type": name, "sequence_number": number, **data})
            for number, (name, data) in enumerate(events)
        ]
        return await self._stream(request, chunks)


class RunningRecorder:
    """A recorder serving on a loopback port; ``url`` has no trailing slash."""

    def __init__(self, runner: web.AppRunner, recorder: Recorder, port: int) -> None:
        self._runner = runner
        self.recorder = recorder
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.recorder.records

    async def stop(self) -> None:
        await self._runner.cleanup()
        if self.recorder._session is not None:
            await self.recorder._session.close()


async def start(
    port: int = 0,
    *,
    websocket_status: int = 426,
    tool_call: dict[str, Any] | None = None,
    upstream: str | None = None,
) -> RunningRecorder:
    """Serve a recorder on ``127.0.0.1:port`` (0: a free one) in the running event loop."""
    recorder = Recorder(websocket_status=websocket_status, tool_call=tool_call, upstream=upstream)
    app = web.Application(client_max_size=_CLIENT_MAX)
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return RunningRecorder(runner, recorder, int(runner.addresses[0][1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--websocket-status", type=int, default=426)
    parser.add_argument("--upstream", help="forward every request there after recording it")
    args = parser.parse_args()

    async def serve() -> None:
        running = await start(
            args.port, websocket_status=args.websocket_status, upstream=args.upstream
        )
        print(f"recorder listening on {running.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            args.out.write_text(json.dumps(running.records, indent=1) + "\n")
            await running.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
