"""The reconnect side of resumable streams (docs/resume.md), as plain ASGI like the relay:

- the same POST path with ``Last-Event-ID`` (the body is read, not re-run);
- ``GET /v1/streams/{stream id}`` with ``Last-Event-ID`` or ``?after=<seq>``;
- ``GET /api/chat/{chat id}/stream``, the AI SDK's ``useChat({ resume: true })``: the caller's
  stream still generating for that chat, replayed from its start, or 204 when there is none;
- ``DELETE /v1/streams/{stream id}`` (and ``DELETE /api/chat/{chat id}/stream``): the owner's
  deliberate Stop, which stops the upstream at once, on whichever instance runs it.

Replay sends the events after the one named, exactly once, then each new one as it comes. Only
the caller who started a stream may resume it (anyone else gets 404). The reconnect counts
against the caller's request rate limit, but it is no new request: no ledger row, no budget
charge, no upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from tokenrelay.gate.identity import Identity, request_headers
from tokenrelay.model import GatewayError
from tokenrelay.relay import ClientGone, RelayEndpoint, read_body
from tokenrelay.resume import StreamGone, owner_of, parse_event_id
from tokenrelay.resume.ids import is_stream_id
from tokenrelay.resume.info import StreamUnavailable
from tokenrelay.types import Receive, Scope, Send

if TYPE_CHECKING:
    from tokenrelay.resume import ResumeStore, StreamInfo

STREAMS = "/v1/streams/"
CHAT = "/api/chat/"
_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def is_resume_path(path: str) -> bool:
    """A GET this module serves."""
    return path.startswith(STREAMS) or (path.startswith(CHAT) and path.endswith("/stream"))


def is_reconnect(scope: Scope) -> bool:
    """A front's POST that continues a stream: it names the last event its client received."""
    return any(name == b"last-event-id" for name, _ in scope["headers"])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _bad_id(value: str) -> GatewayError:
    return GatewayError(
        "invalid_request",
        f"Last-Event-ID {value[:80]!r} is not an event id this gateway sent: send the `id:` of "
        "the last event received, as is (<stream id>:<seq>)",
        400,
        param="Last-Event-ID",
    )


def _unknown(stream_id: str) -> GatewayError:
    return GatewayError(
        "not_found",
        f"there is no stream {stream_id} to resume for this caller; send the request again",
        404,
    )


def _unavailable(stream_id: str, detail: str) -> GatewayError:
    return GatewayError(
        "overloaded",
        f"stream {stream_id} cannot be reached from this instance right now ({detail}); retry "
        "in a moment (the instance running it can serve it), or send the request again",
        503,
        retry_after=1,
    )


# A refusal's status -> its result in tokenrelay_resume_total (a 204 "no stream" is not one).
_RESULTS = {404: "not_found", 410: "expired", 503: "unavailable"}


def _expired(stream_id: str, detail: str) -> GatewayError:
    return GatewayError(
        "not_found",
        f"stream {stream_id} can no longer be resumed ({detail}): its events are kept a short "
        "window after it ends (the route's resume.window); send the request again, which is a "
        "new request",
        410,
    )


async def _caller(endpoint: RelayEndpoint, scope: Scope) -> Identity:
    """Who reconnects; counted against the caller's request rate limit like any request."""
    client = scope.get("client")
    headers = request_headers(scope["headers"])
    admission = await endpoint.gateway.gate.admit_caller(headers, client[0] if client else None)
    assert admission.identity is not None  # the gate found out
    return admission.identity


async def resume_post(endpoint: RelayEndpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """A front's POST with ``Last-Event-ID``: continue that stream in the same dialect."""
    last_event_id = _header(scope, b"last-event-id") or ""
    scope = endpoint.caller_scope(scope)
    try:
        identity = await _caller(endpoint, scope)
        await read_body(scope, receive, endpoint.gateway.settings.max_body_bytes)
        parsed = parse_event_id(last_event_id)
        if parsed is None:
            raise _bad_id(last_event_id)
        stream_id, after = parsed
        store = _store(endpoint)
        info = await store.info(stream_id)
        if info is None or info.owner != owner_of(identity):
            raise _unknown(stream_id)
        if info.dialect != endpoint.dialect_name:
            raise GatewayError(
                "invalid_request",
                f"stream {stream_id} was started on another endpoint ({info.dialect}); resume "
                f"it there or with GET {STREAMS}{stream_id}",
                400,
            )
        _check(info)
    except ClientGone:
        return
    except StreamUnavailable as error:
        await _refuse(endpoint, send, _unavailable(stream_id, str(error)))
        return
    except GatewayError as error:
        await _refuse(endpoint, send, error)
        return
    await _replay(endpoint, store, stream_id, after, scope, receive, send)


def _check(info: StreamInfo) -> None:
    """A stream the caller owns that cannot be replayed: over, or its copy here has a hole."""
    if info.expired:
        raise _expired(info.stream_id, "its window is over")
    if info.copy_lost:
        raise StreamUnavailable("its copy in Redis lost events in an outage")


class ResumeEndpoint:
    """``GET`` and ``DELETE`` of ``/v1/streams/{id}`` and ``/api/chat/{chat id}/stream``."""

    def __init__(self, relays: dict[str, Any]) -> None:
        self.by_dialect = {
            relay.dialect_name: relay
            for relay in relays.values()
            if isinstance(relay, RelayEndpoint)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["method"] == "DELETE":
            await cancel(self.by_dialect["openai"], scope, send)
        elif path.startswith(CHAT):
            await self._chat(unquote(path[len(CHAT) : -len("/stream")]), scope, receive, send)
        else:
            await self._stream(path[len(STREAMS) :], scope, receive, send)

    async def _stream(self, stream_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.by_dialect["openai"]  # the dialect of errors until the stream's is known
        try:
            identity = await _caller(endpoint, scope)
            store = _store(endpoint)
            if not is_stream_id(stream_id):
                raise _unknown(stream_id[:40])
            info = await store.info(stream_id)
            if info is None or info.owner != owner_of(identity):
                raise _unknown(stream_id)
            endpoint = self.by_dialect.get(info.dialect, endpoint)
            _check(info)
            after = _after(scope, stream_id)
        except StreamUnavailable as error:
            await _refuse(endpoint, send, _unavailable(stream_id, str(error)))
            return
        except GatewayError as error:
            await _refuse(endpoint, send, error)
            return
        await _replay(endpoint, store, stream_id, after, scope, receive, send)

    async def _chat(self, chat: str, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.by_dialect["uichat"]
        try:
            identity = await _caller(endpoint, scope)
            store = _store(endpoint)
            stream_id = await store.active_for_chat(owner_of(identity), chat)
            if stream_id is None:  # useChat: nothing to resume
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            after = _after(scope, stream_id)
        except StreamUnavailable as error:
            await _refuse(endpoint, send, _unavailable(f"of chat {chat[:80]}", str(error)))
            return
        except GatewayError as error:
            await _refuse(endpoint, send, error)
            return
        await _replay(endpoint, store, stream_id, after, scope, receive, send)


async def cancel(endpoint: RelayEndpoint, scope: Scope, send: Send) -> None:
    """``DELETE``: the owner stops its stream (idempotent: 204 again once it ended); anyone
    else gets 404. The chat form stops the chat's running stream, or answers 204 when none."""
    path: str = scope["path"]
    stream_id: str | None = None
    try:
        identity = await _caller(endpoint, scope)
        store = _store(endpoint)
        if path.startswith(CHAT):
            chat = unquote(path[len(CHAT) : -len("/stream")])
            stream_id = await store.active_for_chat(owner_of(identity), chat)
        else:
            stream_id = path[len(STREAMS) :]
            if not is_stream_id(stream_id):
                raise _unknown(stream_id[:40])
        if stream_id is not None:
            info = await store.info(stream_id)
            if info is None or info.owner != owner_of(identity):
                raise _unknown(stream_id)
            if not info.expired:
                await store.cancel(stream_id)
            store.count("cancelled")
    except StreamUnavailable as error:
        await _refuse(endpoint, send, _unavailable(stream_id or "", str(error)))
        return
    except GatewayError as error:
        await _refuse(endpoint, send, error)
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _after(scope: Scope, stream_id: str) -> int:
    """The seq to continue after: ``Last-Event-ID`` of this stream, else ``?after=``, else 0."""
    last_event_id = _header(scope, b"last-event-id")
    if last_event_id is not None:
        parsed = parse_event_id(last_event_id)
        if parsed is None or parsed[0] != stream_id:
            raise _bad_id(last_event_id)
        return parsed[1]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after")
    if query:
        if not query[0].isdigit():
            raise GatewayError(
                "invalid_request",
                "after must be an event's seq (a whole number)",
                400,
                param="after",
            )
        return int(query[0])
    return 0


def _store(endpoint: RelayEndpoint) -> ResumeStore:
    store = endpoint.gateway.resume
    if store is None:
        raise GatewayError("not_found", "this gateway keeps no resumable streams", 404)
    return store


async def _refuse(endpoint: RelayEndpoint, send: Send, error: GatewayError) -> None:
    """The error in the endpoint's dialect (a gate refusal keeps its own status: 401, 429)."""
    store = endpoint.gateway.resume
    result = _RESULTS.get(error.status)
    if store is not None and result is not None:
        store.count(result)
    await endpoint.send_error(send, error, "")


async def _replay(
    endpoint: RelayEndpoint,
    store: ResumeStore,
    stream_id: str,
    after: int,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """The events after ``after``, then live until the stream ends or the client leaves."""
    frames = store.replay(stream_id, after)
    try:
        first: list[bytes] = await anext(frames)
    except StopAsyncIteration:
        first = []
    except StreamGone as gone:
        await _refuse(endpoint, send, _expired(stream_id, str(gone)))
        return
    except StreamUnavailable as error:
        await _refuse(endpoint, send, _unavailable(stream_id, str(error)))
        return
    store.count("resumed")
    dialect = endpoint.dialect
    head = [
        (b"content-type", dialect.CONTENT_TYPE.encode()),
        (b"x-request-id", stream_id.encode()),
        (b"x-tokenrelay-stream-id", stream_id.encode()),
        (b"x-tokenrelay-resumed-after", str(after).encode()),
        *_HEADERS,
        *getattr(dialect, "STREAM_HEADERS", ()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_watch(receive, task))
    try:
        if first:
            await send({"type": "http.response.body", "body": b"".join(first), "more_body": True})
        async for more in frames:
            await send({"type": "http.response.body", "body": b"".join(more), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        task.uncancel()  # the client left; the stream goes on for the next reconnect
    except (StreamGone, StreamUnavailable):
        # a reader that fell behind the stream's byte bound, or Redis failed under a reader on
        # another instance: the stream ends here, and a reconnect from its last event gets the
        # 410 or 503 that says why
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()
        await frames.aclose()


async def _watch(receive: Receive, task: asyncio.Task[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()
