"""Upstream adapters: a provider is a dialect plus a base URL, credentials and one shared pool.
What differs between kinds of provider (URL shape, authentication) is its ``Transport``, found
by its ``kind`` in the registry of ``tokenrelay.transports``.

Each upstream stream is read as raw chunks through our own SSE parser, so an event is handed on
the moment its bytes arrive and no line-length limit of an HTTP client applies. The pool is
``http_client.UpstreamPool``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from tokenrelay import dialects, transports
from tokenrelay.deadline import Deadline
from tokenrelay.dialects.eventstream import FramingError
from tokenrelay.dialects.responses import hosted
from tokenrelay.dialects.responses.hosted import HostedPolicy
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.gate.keys import KEY_PREFIX
from tokenrelay.http_client import ConnectTimeout, UpstreamPool
from tokenrelay.idle_watch import IdleWatches
from tokenrelay.model import Error, Event, Request, Untranslatable
from tokenrelay.transports.base import CredentialsError

if TYPE_CHECKING:
    from tokenrelay.settings import ProviderSettings, TargetSettings

__all__ = ["Provider", "UpstreamPool", "build_providers"]

log = logging.getLogger("tokenrelay.providers")

_MAX_ERROR_BODY = 65_536

# Client headers never passed upstream, whatever ``forward_headers`` says: the client's
# credentials for us (a provider would see our users' keys), cookies, and what belongs to one
# HTTP hop rather than to the request.
_NEVER_FORWARDED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Comma lists of betas: the gateway's own (a provider's ``headers``) and the client's are joined.
_BETA_LISTS = frozenset({"anthropic-beta", "openai-beta"})
# An upstream that refuses our credentials: the client hears of it only in general terms.
_AUTH_STATUSES = frozenset({401, 403})
# Credential-shaped text in an upstream's message (``Bearer ...``, ``sk-...``), for the log.
_CREDENTIALS = re.compile(r"(?i)(bearer\s+|\b(?:sk|rk|pk)-)[^\s\"',;]+")
# Header names whose values are secrets, to be masked wherever an upstream quotes them.
_SECRET_NAME = re.compile(r"(?i)auth|key|token|secret|cookie|signature")


class Endpoint(NamedTuple):
    """One API of a provider: the dialect module that speaks it and the URL it is posted to."""

    dialect: Any
    url: str


class Provider:
    """One configured upstream API; ``stream`` yields batches of normalized events."""

    def __init__(
        self, name: str, settings: ProviderSettings, pool: UpstreamPool, idle_timeout: float
    ) -> None:
        self.name = name
        self.kind = settings.kind
        self.transport = transports.get(settings.kind)
        self.settings = settings
        # e.g. kind "openai" with api "auto": Chat Completions, and the Responses API for a
        # client of the Responses API (``for_request``)
        dialect, alternative = self.transport.dialects(settings)
        self.endpoint = self._endpoint(dialect)
        self.dialect, self.url = self.endpoint
        self._alternative = self._endpoint(alternative) if alternative is not None else None
        self._pool = pool
        self._idle_timeout = idle_timeout
        self._idle_watches: IdleWatches | None = None  # this loop's, made by the first stream
        self._forward = tuple(prefix.lower() for prefix in settings.forward_headers)
        self._headers = self._base_headers()
        self._tokens = self.transport.token_source(settings)  # expiring credentials, if any
        self._by_model: dict[str, Endpoint] = {}  # a kind whose URL names the model

    def _endpoint(self, dialect: str) -> Endpoint:
        return Endpoint(dialects.get(dialect), self.transport.url(self.settings, dialect))

    @property
    def counts_tokens(self) -> bool:
        """Whether the upstream counts a request's tokens (``post_json("/count_tokens")``)."""
        return self.transport.COUNTS_TOKENS

    def for_request(self, request: Request, model: str | None = None) -> Endpoint:
        """The API a request is sent to: the provider's second API when it speaks the client's
        dialect (``api = "auto"``: a Responses client's hosted tools, item types and fields
        arrive as sent), the model's own where the URL names the model (Vertex, Bedrock,
        Azure, Gemini), else its own."""
        if model is not None:
            endpoint = self._by_model.get(model)
            if endpoint is not None:
                return endpoint
            try:
                named = self.transport.model_endpoint(self.settings, model)
            except ValueError as exc:  # a model it cannot address: the target is skipped
                raise Untranslatable(str(exc), param="model") from None
            if named is not None:
                dialect, url = named
                endpoint = self._by_model[model] = Endpoint(dialects.get(dialect), url)
                return endpoint
        endpoint = self.endpoint
        alternative = self._alternative
        if alternative is not None and request.dialect == alternative.dialect.NAME:
            endpoint = alternative
        if model is not None:
            url = self.transport.target_url(endpoint.url, model)
            if url != endpoint.url:
                return Endpoint(endpoint.dialect, url)
        if model is not None and self.transport.MODEL_IN_URL:
            dialect = endpoint.dialect
            return Endpoint(dialect, self.transport.url(self.settings, dialect.NAME, model))
        return endpoint

    def _base_headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "accept-encoding": "identity",
            "user-agent": "tokenrelay",
        }
        headers.update(self.transport.auth_headers(self.settings, self.settings.resolved_key()))
        headers.update({name.lower(): value for name, value in self.settings.headers.items()})
        return headers

    def build_body(
        self, request: Request, target: TargetSettings, hosted_tools: HostedPolicy = "refuse"
    ) -> tuple[bytes, list[str]]:
        """The upstream body and the hosted tools dropped from it (``hosted_tools = "drop"``);
        raises ``Untranslatable`` when the request cannot be translated."""
        dialect = self.for_request(request, target.model).dialect
        added: dict[str, Any] = {}
        dropped: list[str] = []
        if request.dialect != dialect.NAME and "tools" in request.extra:
            plan = hosted.plan(request, dialect.NAME, target.model, hosted_tools)
            if plan is not None:
                request, added, dropped = plan.request, plan.added, plan.dropped
        body = dialect.encode_request(request, target.model, stream=True)
        # the name the upstream knows the model by (an Azure deployment's), after the dialect
        # has judged the model by its own name (whether it reasons, say)
        params = target.params
        wire = self.transport.wire_model(self.settings, target.model)
        if wire != target.model:
            params = {**params, "model": wire}
        if params or added:
            merged: dict[str, Any] = msgspec.json.decode(body)
            for key, value in added.items():  # Anthropic's server tools join the custom ones
                merged[key] = merged.get(key, []) + value if key == "tools" else value
            merged.update(params)
            body = msgspec.json.encode(merged)
        return self.transport.finish_body(self.settings, dialect.NAME, body), dropped

    def build_headers(
        self,
        target: TargetSettings,
        client_headers: Mapping[str, str],
        forward: Sequence[str] = (),
    ) -> dict[str, str]:
        """The upstream request's headers. A client header matching ``forward_headers`` or
        ``forward`` (the route's ``forward_client_headers``) goes along unless it is a
        credential (ours: ``authorization``, ``x-api-key``, any value holding a ``trk_`` key),
        a cookie, a hop-by-hop header, or one the gateway sets; of ``forward``, an
        ``anthropic-*`` header goes to an Anthropic upstream only and an ``openai-*`` one to an
        OpenAI upstream only. A beta list the gateway sets too is joined with the client's."""
        headers = dict(self._headers)
        if target.headers:
            headers.update({name.lower(): value for name, value in target.headers.items()})
        prefixes = self._forward
        if forward:
            prefixes += tuple(p.lower() for p in forward if self._carries(p.lower()))
        if prefixes:
            ours = set(headers)
            for name, value in client_headers.items():
                name = name.lower()
                if not name.startswith(prefixes) or name in _NEVER_FORWARDED or KEY_PREFIX in value:
                    continue
                if name not in ours:
                    headers[name] = value
                elif name in _BETA_LISTS:
                    headers[name] = _joined(headers[name], value)
        return headers

    def _carries(self, prefix: str) -> bool:
        """Whether a client header of this prefix means anything to this upstream's API."""
        owner = transports.header_owner(prefix)
        return owner is None or owner is self.transport

    async def post_json(
        self, suffix: str, body: bytes, headers: Mapping[str, str], within: float
    ) -> bytes | Error:
        """One JSON call beside the streams, at ``url + suffix`` (``/count_tokens``): the body
        of a 200, else the failure as an ``Error`` (the upstream's own, screened as a stream's
        is; a timeout; an unreachable upstream)."""
        if self._tokens is not None:
            try:
                headers = {**headers, **await self._tokens.headers()}
            except CredentialsError as exc:
                return Error("upstream_unavailable", f"{self.name}: {exc}", 502)
        try:
            async with asyncio.timeout(within):
                url = self.url + suffix
                if self.transport.SIGNS:
                    headers = self.transport.sign(self.settings, "POST", url, dict(headers), body)
                response = await self._pool.post(
                    url, body, headers, connect_timeout=self.settings.connect_timeout
                )
                try:
                    raw = await response.read(_MAX_ERROR_BODY)  # an answer, not a stream
                except BaseException:
                    response.close()
                    raise
        except TimeoutError:
            return Error("timeout", f"{self.name} did not answer within {within:g}s", 504)
        except OSError as exc:
            reason = f"could not reach {self.name}: {_describe(exc)}"
            return Error("upstream_unavailable", reason, 502)
        if response.at_eof():
            self._pool.recycle(response)
        else:
            response.close()
        if response.status != 200:
            error = self.dialect.parse_error(response.status, raw, response.headers)
            return self._screened(error, headers)
        return raw

    async def stream(
        self, body: bytes, headers: Mapping[str, str], endpoint: Endpoint | None = None
    ) -> AsyncGenerator[list[Event], None]:
        """Events in the batches the network delivered them (from ``endpoint``, the one
        ``for_request`` chose; the provider's own by default). Failures become an ``Error``
        event; closing the generator early closes the upstream connection (no reuse of a
        half-read response), which is what stops the provider generating."""
        dialect, url = endpoint or self.endpoint
        if self._tokens is not None:
            try:
                headers = {**headers, **await self._tokens.headers()}
            except CredentialsError as exc:
                yield [Error("upstream_unavailable", f"{self.name}: {exc}", 502)]
                return
        if self.transport.SIGNS:
            headers = self.transport.sign(self.settings, "POST", url, dict(headers), body)
        try:
            async with Deadline(self._idle_timeout):
                response = await self._pool.post(
                    url, body, headers, connect_timeout=self.settings.connect_timeout
                )
        except TimeoutError as exc:  # first: it is an OSError too
            if isinstance(exc, ConnectTimeout):
                waited = f"could not connect within {self.settings.connect_timeout:g}s"
            else:
                waited = f"did not answer within {self._idle_timeout:g}s"
            yield [Error("timeout", f"{self.name} {waited}", 504)]
            return
        except OSError as exc:
            yield [
                Error("upstream_unavailable", f"could not reach {self.name}: {_describe(exc)}", 502)
            ]
            return
        del body  # sent: a long prompt is not held for the whole answer
        finished = False
        watches = self._watches()
        watch = watches.watch(response)
        try:
            if response.status != 200:
                raw = await response.read(_MAX_ERROR_BODY)
                error = dialect.parse_error(response.status, raw, response.headers)
                yield [self._screened(error, headers)]
                finished = response.at_eof()
                return
            if response.content_type == "application/json":
                raw = await response.read()
                yield self._screened_all(dialect.parse_response(raw).events(), headers)
                finished = True
                return
            response.forget_headers()  # a 200 stream's are read by nothing from here on
            parser = getattr(dialect, "FRAMER", SSEParser)()  # the dialect's framing
            reader = dialect.stream_reader()
            clock = watches.clock
            next_chunk = response.next_chunk
            while (chunk := await next_chunk()) is not None:
                watch.last = clock()
                try:
                    items = parser.feed(chunk)
                except FramingError as exc:  # binary framing: a corrupt frame ends the stream
                    batch = []
                    for item in exc.frames:  # after the good ones before it
                        batch.extend(reader.feed(item))
                    reason = f"{self.name} sent a corrupt stream ({exc}); it was ended here"
                    yield [*batch, Error("upstream_unavailable", reason, 502)]
                    return
                if len(items) == 1:  # a chunk per token, as most upstreams send: its list as is
                    batch = reader.feed(items[0])
                else:
                    batch = []
                    for sse in items:
                        batch.extend(reader.feed(sse))
                if reader.done:  # an upstream's error event ends its stream: it is in here
                    batch = self._screened_all(batch, headers)
                if batch:
                    yield batch
                if reader.done:
                    finished = True
                    return
                # nothing of this chunk is held while the next is awaited (seconds, on a slow
                # stream, and thousands of them at once)
                chunk = items = sse = None
                del batch
            yield [
                Error(
                    "upstream_unavailable", f"{self.name} closed the stream before it finished", 502
                )
            ]
        except TimeoutError:
            yield [Error("timeout", f"{self.name} sent nothing for {self._idle_timeout:g}s", 504)]
        except OSError as exc:
            yield [
                Error(
                    "upstream_unavailable",
                    f"lost the connection to {self.name}: {_describe(exc)}",
                    502,
                )
            ]
        finally:
            watches.end(watch)
            if finished:
                self._pool.recycle(response)
            else:
                response.close()  # a half-read response is never reused

    def _watches(self) -> IdleWatches:
        """The idle timer of this loop's streams (one for all of them, ``idle_watch``)."""
        loop = asyncio.get_running_loop()
        watches = self._idle_watches
        if watches is None or watches.loop is not loop:
            watches = self._idle_watches = IdleWatches(loop, self._idle_timeout)
        return watches

    def _screened(self, error: Error, headers: Mapping[str, str]) -> Error:
        """An upstream's error as the rest of the gateway may pass it on: our secrets masked
        and, for a refused credential, only a generic message (its status kept, so failover
        does not retry it). The upstream's own words go to the log, loudly and masked: an
        upstream may quote the key it refused."""
        error = self.transport.classify(error)
        message = self._masked(error.message, headers)
        if error.status in _AUTH_STATUSES:
            log.error(
                "CONFIGURATION ERROR: %s refused the gateway's credentials (HTTP %d: %s); "
                "check its API key. Requests move on to the route's next target.",
                self.name,
                error.status,
                message[:500],
            )
            message = f"the gateway's credentials for {self.name} were refused; the operator "
            message += "has been told"
        if message == error.message:
            return error
        return msgspec.structs.replace(error, message=message)

    def _screened_all(self, events: list[Event], headers: Mapping[str, str]) -> list[Event]:
        return [self._screened(e, headers) if type(e) is Error else e for e in events]

    def _masked(self, text: str, headers: Mapping[str, str]) -> str:
        """``text`` without the secrets sent in ``headers``, nor anything shaped like a key."""
        for name, value in headers.items():
            if _SECRET_NAME.search(name):
                for secret in (value, value.partition(" ")[2]):  # and the token of "Bearer ..."
                    if len(secret) >= 8:
                        text = text.replace(secret, "[redacted]")
        return _CREDENTIALS.sub(lambda match: match.group(1) + "[redacted]", text)


def _joined(ours: str, theirs: str) -> str:
    """Two comma lists as one, ours first, each value once."""
    values = [v.strip() for v in f"{ours},{theirs}".split(",") if v.strip()]
    return ",".join(dict.fromkeys(values))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def build_providers(
    settings: Mapping[str, ProviderSettings], pool: UpstreamPool, idle_timeout: float
) -> dict[str, Provider]:
    return {
        name: Provider(name, provider, pool, idle_timeout) for name, provider in settings.items()
    }
