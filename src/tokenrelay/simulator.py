"""A wire-exact stand-in for the Anthropic Messages, OpenAI Chat Completions, OpenAI Responses and
AWS Bedrock Converse APIs, with fault injection, for tests, demos and benchmarks.

It reads requests and writes responses through the same dialect modules the gateway uses (front,
provider, simulator and client share one codec per API), so whatever the simulator says is what
the dialect believes the real API says.

Knobs (``SimulatorSettings``) are server defaults; every one but ``api_key`` can be overridden per
request with an ``x-sim-<knob>`` header (``_`` written as ``-``) or a ``?<knob>=`` query parameter
(the query wins). ``GET /stats`` reports requests, completed responses, tokens sent, the last
requests received and every client disconnect with its ``time.monotonic()``.

Faults (``fault``): ``429``, ``500``, ``503``, ``529``, ``401``, ``400`` answer at once with that
status and the dialect's error body (``retry-after`` on 429/503/529, plus ``retry-after-ms`` for
OpenAI); ``error_after`` streams ``fault_after`` tokens then an in-band overloaded error;
``error_before_content`` sends the 200 head then the error; ``hang_before_first_byte`` never
answers; ``hang_mid`` goes silent after ``fault_after`` tokens; ``reset`` aborts the TCP
connection with an RST after ``fault_after`` tokens; ``corrupt_frame`` sends, after
``fault_after`` tokens, a frame whose CRC does not match (Bedrock; a torn event elsewhere).
``token_delay_max_ms`` (above ``token_delay_ms``) draws each gap between tokens uniformly from
that range (long, slow generations: a reasoning model's one token every 200-1000 ms).
``slow_fraction`` of requests, drawn at random, wait ``slow_ttft_ms`` instead of ``ttft_ms``
before their first token (a primary that is slow now and then, for hedging). ``served_model``
names another model in the answer than the one asked for (an alias resolved to a dated
snapshot, as real APIs do). ``echo`` (> 0) answers with the last user message's text in pieces
of that many characters, and makes it a tool call's ``query`` argument: what the upstream
received, played back split at chosen points (the guard's tests). ``fault_key`` limits the
fault to requests carrying that API key (one key of several rate limited, for load balancing's
tests).

Azure OpenAI's URLs are served too (``/openai/v1/chat/completions``, ``/openai/v1/responses``,
``/openai/deployments/{deployment}/chat/completions`` and ``/openai/responses``, the last two
with ``api-version`` required), with an ``api-key`` or bearer credential required, Azure's
content-filter fields in every answer, and its faults ``content_filter`` (a 400),
``content_filter_finish`` and ``deployment_not_found`` (``simulator_azure``).

``POST /v1/embeddings`` answers OpenAI's embeddings API with deterministic hashed bag-of-words
vectors (``simulator_embeddings``), for the semantic cache's tests and quality bench.

``POST /v1/messages/count_tokens`` answers Anthropic's token counting API: the same checks as
the real one (the generation fields are refused), the status faults, and the ``input_tokens`` a
Messages call with the same prompt reports here.

Vertex AI (``/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/
{model}:{method}``): Claude's ``rawPredict`` and ``streamRawPredict`` answer as the Messages API
does, after checking the body as Vertex does (``anthropic_version`` present, no ``model``: the
URL names it; the version may also be a date, as the anthropic SDK's Vertex client sends
it); a bearer token is required (``api_key`` when set, and a token
``sim-expires-<unix seconds>`` is refused from that time on, as an expired OAuth token is).
Gemini's methods (publisher ``google``) are served by the Gemini flavor where the simulator has
one, else answer 501.

``POST /model/{modelId}/converse-stream`` and ``/converse`` answer Bedrock's Converse API in
event-stream frames (errors named by ``x-amzn-errortype``, or exception frames in a stream); a
request must carry a SigV4-shaped ``Authorization`` (and ``x-amz-date``) or a bearer key.

Importing this module is cheap: aiohttp and the dialect modules load when an app is created.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import re
import signal
import socket
import struct
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from tokenrelay import simulator_azure as azure
from tokenrelay.model import (
    Completion,
    Error,
    ErrorType,
    Event,
    Finish,
    FinishReason,
    GatewayError,
    Request,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from aiohttp import web

    from tokenrelay.dialects import Dialect

__all__ = ["FAULTS", "RunningSimulator", "SimulatorSettings", "create_app", "run", "start"]


class SimulatorSettings(msgspec.Struct, kw_only=True):
    """Server-wide defaults of every knob; see the module docstring for per-request overrides."""

    ttft_ms: float = 150
    tokens: int = 60
    token_delay_ms: float = 25
    # > token_delay_ms: each gap is drawn uniformly from [token_delay_ms, token_delay_max_ms]
    # (slow reasoning models: one token every 200-1000 ms)
    token_delay_max_ms: float = 0
    text: str | None = None
    fault: str | None = None
    fault_after: int = 3
    retry_after: float = 1
    thinking_tokens: int = 0
    tool: str | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    slow_fraction: float = 0  # this share of requests, drawn at random, waits slow_ttft_ms
    slow_ttft_ms: float = 1000
    served_model: str | None = None  # the model the answer names, when not the one asked for
    # > 0: answer with the last user message's text, in pieces of this many characters (and a
    # tool call's one argument, "query", is that text too)
    echo: int = 0
    fault_key: str | None = None  # the fault hits only requests carrying this API key
    api_key: str | None = None


# fault -> (model error type, status, message); these answer at once, before any byte of a stream
STATUS_FAULTS: dict[str, tuple[ErrorType, int, str]] = {
    "429": ("rate_limit", 429, "simulated rate limit"),
    "500": ("api_error", 500, "simulated internal server error"),
    "503": ("upstream_unavailable", 503, "simulated service unavailable"),
    "529": ("overloaded", 529, "simulated overload"),
    "401": ("authentication", 401, "simulated authentication failure: invalid API key"),
    "400": ("invalid_request", 400, "simulated invalid request"),
}
_RETRY_AFTER_STATUSES = frozenset({429, 503, 529})
STREAM_FAULTS = (
    "error_after",
    "error_before_content",
    "hang_before_first_byte",
    "hang_mid",
    "reset",
    "corrupt_frame",
)
FAULTS: tuple[str, ...] = (*STATUS_FAULTS, *STREAM_FAULTS, *azure.FAULTS)
_MID_FAULTS = frozenset({"error_after", "hang_mid", "reset", "corrupt_frame"})
# A SigV4 Authorization header as Bedrock expects it (its shape; the signature is not checked).
_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=[A-Z0-9]{16,128}/\d{8}/[a-z0-9-]+/bedrock/aws4_request, "
    r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, Signature=[0-9a-f]{64}$"
)

_MAX_LAST_REQUESTS = 50
_DATED_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_BODY = 32 * 1024 * 1024

# --- knobs ---------------------------------------------------------------------------------------


def _float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError
    return number


def _int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError
    return number


def _optional(value: str) -> str | None:
    return value or None


def _fault(value: str) -> str | None:
    if not value or value.lower() == "none":
        return None
    if value not in FAULTS:
        raise ValueError
    return value


_KNOBS: dict[str, tuple[Callable[[str], object], str]] = {
    "ttft_ms": (_float, "a number of milliseconds >= 0"),
    "tokens": (_int, "an integer >= 0"),
    "token_delay_ms": (_float, "a number of milliseconds >= 0"),
    "token_delay_max_ms": (_float, "a number of milliseconds >= 0 (0: every gap token_delay_ms)"),
    "text": (_optional, "a string"),
    "fault": (_fault, "one of " + ", ".join(FAULTS) + " (or empty for none)"),
    "fault_after": (_int, "an integer >= 0"),
    "retry_after": (_float, "a number of seconds >= 0"),
    "thinking_tokens": (_int, "an integer >= 0"),
    "tool": (_optional, 'a tool name, or "auto" for the first tool of the request'),
    "cache_read_tokens": (_int, "an integer >= 0"),
    "cache_write_tokens": (_int, "an integer >= 0"),
    "slow_fraction": (_fraction, "a number from 0 to 1"),
    "slow_ttft_ms": (_float, "a number of milliseconds >= 0"),
    "served_model": (_optional, "a model name (empty: the one asked for)"),
    "echo": (_int, "an integer >= 0 (characters per piece; 0: off)"),
    "fault_key": (_optional, "an API key (empty: every request)"),
}
_HEADER_KNOBS = {"x-sim-" + name.replace("_", "-"): name for name in _KNOBS}


def _validate(settings: SimulatorSettings) -> None:
    """Refuse server defaults a request could not have set (a typo in ``--fault`` fails at once)."""
    for name, (parse, kind) in _KNOBS.items():
        value = getattr(settings, name)
        if value is None or (isinstance(value, str) and name != "fault"):
            continue
        try:
            parse(str(value))
        except ValueError:
            raise ValueError(f"simulator setting {name}={value!r}: must be {kind}") from None


def _carries_key(headers: Any, key: str) -> bool:
    """Whether a request's credential is ``key`` (in any of the APIs' headers)."""
    return key in (
        headers.get("x-api-key"),
        headers.get("api-key"),
        headers.get("x-goog-api-key"),
        headers.get("authorization", "").removeprefix("Bearer "),
    )


def _maybe_slow(knobs: SimulatorSettings) -> SimulatorSettings:
    """``slow_fraction`` of requests, drawn at random, get ``slow_ttft_ms`` as their ttft_ms."""
    if knobs.slow_fraction and random.random() < knobs.slow_fraction:
        return msgspec.structs.replace(knobs, ttft_ms=knobs.slow_ttft_ms)
    return knobs


# --- deterministic text --------------------------------------------------------------------------

_WORD_TEXT = (
    "the stream of tokens arrives one at a time from the model while the gateway relays each "
    "piece to the client without waiting for the rest so a reader sees words appear as soon as "
    "they exist and can stop the answer early when it has seen enough every event carries a small "
    "delta of text usage counts finish reasons and errors travel in the same channel a careful "
    "server flushes each chunk at once keeps the connection open sends the first byte quickly and "
    "notices when the listener leaves latency throughput buffering backpressure retries failover "
    "timeouts limits metering caching signals protocols messages requests responses headers bodies "
    "events lines frames bytes sockets queues tasks loops timers clocks budgets quotas prompts "
    "answers questions examples details reasons results patterns choices systems networks models "
    "providers routes targets clients servers simple clear fast steady quiet bright useful gentle "
    "careful honest modern robust"
)
_WORDS = tuple(_WORD_TEXT.split())
_SENTENCE = 12  # words per simulated sentence


def _word_stream(seed: int, count: int) -> list[str]:
    """``count`` words picked by a 64-bit LCG seeded from ``seed``; same seed, same words."""
    state = (seed * 2654435761 + 1) & 0xFFFFFFFFFFFFFFFF
    n = len(_WORDS)
    out = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append(_WORDS[(state >> 33) % n])
    return out


def _sentences(words: list[str]) -> list[str]:
    """Word tokens with their leading space, sentences capitalized and ended with a period."""
    tokens = []
    last = len(words) - 1
    for i, word in enumerate(words):
        if i % _SENTENCE == 0:
            word = word.capitalize()
        if i == last or i % _SENTENCE == _SENTENCE - 1:
            word += "."
        tokens.append(word if i == 0 else " " + word)
    return tokens


@functools.lru_cache(maxsize=256)
def _generated_text(seed: int, count: int) -> tuple[TextDelta, ...]:
    return tuple(TextDelta(token) for token in _sentences(_word_stream(seed, count)))


@functools.lru_cache(maxsize=256)
def _fixed_text(text: str) -> tuple[TextDelta, ...]:
    return tuple(TextDelta(token) for token in re.findall(r"\s*\S+|\s+$", text))


@functools.lru_cache(maxsize=256)
def _thinking(seed: int, count: int) -> tuple[tuple[ThinkingDelta, ...], str]:
    words = _sentences(_word_stream(seed ^ 0x7468696E6B, count))
    signature = f"sim_sig_{zlib.crc32(''.join(words).encode()):08x}{seed:08x}"
    return tuple(ThinkingDelta(word) for word in words), signature


def _last_user_text(request: Request) -> str:
    """The text of the last user turn (the ``echo`` knob's answer)."""
    for message in reversed(request.messages):
        if message.role == "user":
            return "".join(getattr(part, "text", "") for part in message.content)
    return ""


def prompt_tokens(request: Request) -> int:
    """The simulator's input token count of a prompt: a quarter of its characters, at least 1."""
    return max(1, len(request.prompt_text()) // 4)


# --- one response, planned before the first byte -------------------------------------------------


class _Flavor(NamedTuple):
    """What differs between the two simulated APIs besides the dialect's own codec."""

    dialect: Dialect
    request_id_header: str
    message_id_prefix: str
    tool_id_prefix: str
    usage_first: bool  # Anthropic reports input usage in message_start, before any content
    retry_after_ms: bool  # OpenAI also sends retry-after-ms
    azure: bool = False  # Azure OpenAI's checks, faults and content-filter fields


class _Plan:
    """Every content event of one answer, in order: thinking tokens, the thinking signature, text
    tokens, tool-call pieces. Only thinking and text deltas count as tokens."""

    __slots__ = (
        "events",
        "finish",
        "signature",
        "text",
        "text_tokens",
        "thinking",
        "thinking_tokens",
        "tool_call",
        "usage_first",
        "usage_last",
    )

    def __init__(
        self, request: Request, knobs: SimulatorSettings, flavor: _Flavor, serial: int
    ) -> None:
        prompt = request.prompt_text()
        seed = zlib.crc32(prompt.encode())
        echoed = _last_user_text(request) if knobs.echo else None
        if echoed is not None:
            step = knobs.echo
            text = tuple(TextDelta(echoed[i : i + step]) for i in range(0, len(echoed), step))
        elif knobs.text is not None:
            text = _fixed_text(knobs.text)
        else:
            text = _generated_text(seed, knobs.tokens)
        budget = request.max_tokens if request.max_tokens is not None else sys.maxsize
        thinking: tuple[ThinkingDelta, ...] = ()
        self.signature: str | None = None
        if knobs.thinking_tokens:
            thinking, self.signature = _thinking(seed, knobs.thinking_tokens)
        thinking_n = min(len(thinking), budget)
        text_n = min(len(text), budget - thinking_n)
        truncated = thinking_n < len(thinking) or text_n < len(text)
        self.thinking = thinking[:thinking_n]
        self.text = text[:text_n] if text_n < len(text) else text
        self.thinking_tokens = thinking_n
        self.text_tokens = text_n
        events: list[Event] = list(self.thinking)
        if self.signature is not None:
            events.append(ThinkingDelta("", self.signature))
        events.extend(self.text)
        self.tool_call: ToolCall | None = None
        finish: FinishReason = "length" if truncated else "stop"
        if knobs.tool is not None and not truncated:
            name = knobs.tool
            if name == "auto":
                if not request.tools:
                    raise GatewayError(
                        "invalid_request",
                        "simulator knob tool=auto needs a request with tools",
                        400,
                        param="tool",
                    )
                name = request.tools[0].name
            call_id = f"{flavor.tool_id_prefix}{serial}"
            query = echoed if echoed is not None else " ".join(_word_stream(seed ^ 0x746F6F6C, 4))
            arguments = msgspec.json.encode({"query": query}).decode()
            self.tool_call = ToolCall(call_id, name, arguments)
            events.append(ToolCallDelta(0, call_id, name))
            cut = len(arguments) // 3
            pieces = (
                [arguments[i : i + knobs.echo] for i in range(0, len(arguments), knobs.echo)]
                if echoed is not None
                else [arguments[:cut], arguments[cut : 2 * cut], arguments[2 * cut :]]
            )
            for piece in pieces:
                events.append(ToolCallDelta(0, arguments=piece))
            finish = "tool_calls"
        self.events = events
        self.finish = Finish(finish)
        cache_read, cache_write = knobs.cache_read_tokens, knobs.cache_write_tokens
        input_tokens = prompt_tokens(request) + cache_read + cache_write
        self.usage_first = Usage(
            input_tokens=input_tokens,
            output_tokens=0,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
        self.usage_last = Usage(
            input_tokens=input_tokens,
            output_tokens=thinking_n + text_n,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=thinking_n or None,
        )

    def tokens_in(self, events: int) -> int:
        """How many tokens the first ``events`` content events hold."""
        thinking = self.thinking_tokens
        if events <= thinking:
            return events
        if self.signature is not None:
            events -= 1
        return thinking + max(0, min(events - thinking, self.text_tokens))

    def events_for(self, tokens: int) -> int:
        """How many content events carry the first ``tokens`` tokens (all of them if more)."""
        thinking = self.thinking_tokens
        if tokens >= thinking + self.text_tokens:
            return len(self.events)
        if tokens <= thinking:
            return tokens
        return tokens + (1 if self.signature is not None else 0)

    def completion(self) -> Completion:
        return Completion(
            text="".join(delta.text for delta in self.text),
            thinking="".join(delta.text for delta in self.thinking),
            thinking_signature=self.signature,
            tool_calls=[self.tool_call] if self.tool_call is not None else [],
            usage=self.usage_last,
            finish=self.finish,
        )


# --- statistics ----------------------------------------------------------------------------------


class _Stats:
    __slots__ = ("completed", "disconnects", "last_requests", "requests", "tokens_sent")

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.completed = 0
        self.tokens_sent = 0
        # (path, headers, raw body): decoded only when someone asks, off the hot path
        self.last_requests: deque[tuple[str, Mapping[str, str], bytes]] = deque(
            maxlen=_MAX_LAST_REQUESTS
        )
        self.disconnects: list[dict[str, Any]] = []

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "completed": self.completed,
            "tokens_sent": self.tokens_sent,
            "last_requests": [
                {
                    "path": path,
                    "headers": {name.lower(): value for name, value in headers.items()},
                    "body": _json_or_text(body),
                }
                for path, headers, body in self.last_requests
            ],
            "disconnects": [dict(item) for item in self.disconnects],
        }


def _json_or_text(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", "replace")


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


# --- the server ----------------------------------------------------------------------------------


class _Simulator:
    def __init__(self, settings: SimulatorSettings) -> None:
        from tokenrelay import dialects

        _validate(settings)
        self.settings = settings
        self.stats = _Stats()
        self.serial = 0
        self.anthropic = _Flavor(
            dialects.get("anthropic"), "request-id", "msg_sim_", "toolu_sim_", True, False
        )
        self.openai = _Flavor(
            dialects.get("openai"), "x-request-id", "chatcmpl-sim", "call_sim_", False, True
        )
        self.responses = _Flavor(
            dialects.get("responses"), "x-request-id", "resp_sim_", "call_sim_", False, True
        )
        self.bedrock = _Flavor(
            dialects.get("converse"), "x-amzn-requestid", "msg_bdrk_", "tooluse_sim_", False, False
        )
        self.bedrock_invoke = _Flavor(
            dialects.get("bedrock_invoke"),
            "x-amzn-requestid",
            "msg_bdrk_",
            "toolu_bdrk_",
            True,
            False,
        )
        self.azure_chat = self.openai._replace(request_id_header="apim-request-id", azure=True)
        self.azure_resp = self.responses._replace(request_id_header="apim-request-id", azure=True)
        self.gemini = _Flavor(dialects.get("gemini"), "x-request-id", "sim-", "call_", False, False)

    # routes

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.anthropic)

    async def count_tokens(self, http: web.Request) -> web.StreamResponse:
        """``POST /v1/messages/count_tokens``: the ``input_tokens`` a Messages call with the
        same prompt reports here (cache knobs aside), so a count can be checked against usage.
        Status faults apply; stream faults do not (there is no stream)."""
        from tokenrelay.dialects import count_tokens as counts

        flavor = self.anthropic
        stats = self.stats
        path = http.path
        stats.requests[path] = stats.requests.get(path, 0) + 1
        self.serial += 1
        request_id = f"req_sim_{self.serial:012d}"
        body = await http.read()
        stats.last_requests.append((path, http.headers, body))
        if not self._authorized(http):
            error = GatewayError("authentication", "invalid API key (simulator)", 401)
            return self._error(flavor, error, request_id, None)
        try:
            knobs = self._knobs(http)
            request = counts.parse_request(body)
            if knobs.fault is not None and knobs.fault in STATUS_FAULTS:
                kind, status, message = STATUS_FAULTS[knobs.fault]
                retry = knobs.retry_after if status in _RETRY_AFTER_STATUSES else None
                error = GatewayError(kind, message, status, retry_after=retry)
                return self._error(flavor, error, request_id, retry)
        except GatewayError as exc:
            return self._error(flavor, exc, request_id, exc.retry_after)
        return _json(counts.encode_response(prompt_tokens(request)), {"request-id": request_id})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.openai)

    async def responses_create(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.responses)

    async def converse_stream(self, request: web.Request) -> web.StreamResponse:
        """Bedrock's ``/model/{modelId}/converse-stream``: event-stream frames."""
        return await self._serve(
            request, self.bedrock, model=request.match_info["model"], stream=True
        )

    async def converse(self, request: web.Request) -> web.StreamResponse:
        """Bedrock's ``/model/{modelId}/converse``: one JSON answer."""
        return await self._serve(
            request, self.bedrock, model=request.match_info["model"], stream=False
        )

    async def invoke_stream(self, request: web.Request) -> web.StreamResponse:
        """Bedrock's ``/model/{modelId}/invoke-with-response-stream`` with Anthropic's body."""
        return await self._serve(
            request, self.bedrock_invoke, model=request.match_info["model"], stream=True
        )

    async def azure_v1_chat(self, request: web.Request) -> web.StreamResponse:
        """``/openai/v1/chat/completions``: the deployment is the body's ``model``."""
        return await self._azure(request, self.azure_chat, dated=False)

    async def azure_v1_responses(self, request: web.Request) -> web.StreamResponse:
        return await self._azure(request, self.azure_resp, dated=False)

    async def azure_deployment_chat(self, request: web.Request) -> web.StreamResponse:
        """``/openai/deployments/{deployment}/chat/completions?api-version=...``."""
        return await self._azure(request, self.azure_chat, dated=True)

    async def azure_responses(self, request: web.Request) -> web.StreamResponse:
        """``/openai/responses?api-version=...`` (dated versions' Responses API)."""
        return await self._azure(request, self.azure_resp, dated=True)

    async def _azure(self, http: web.Request, flavor: _Flavor, dated: bool) -> web.StreamResponse:
        refused = azure.refusal(http.headers, http.query, self.settings.api_key, dated)
        if refused is not None:
            stats = self.stats
            stats.requests[http.path] = stats.requests.get(http.path, 0) + 1
            stats.last_requests.append((http.path, http.headers, await http.read()))
            return _raw_json(*refused)
        return await self._serve(http, flavor)

    async def generate_content(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1beta/models/{model}:streamGenerateContent`` and ``:generateContent``."""
        return await self._serve(request, self.gemini)

    async def embeddings(self, http: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings``: deterministic vectors (``simulator_embeddings``). The status
        faults apply, ``ttft_ms`` delays the answer and ``corrupt_frame`` tears its body."""
        from tokenrelay import simulator_embeddings

        self.stats.requests[http.path] = self.stats.requests.get(http.path, 0) + 1
        body = await http.read()
        self.stats.last_requests.append((http.path, http.headers, body))
        self.serial += 1
        request_id = f"req_sim_{self.serial:012d}"
        try:
            if not self._authorized(http, self.openai):
                raise GatewayError("authentication", "invalid API key (simulator)", 401)
            knobs = self._knobs(http)
            if knobs.fault in STATUS_FAULTS:
                kind, status, message = STATUS_FAULTS[knobs.fault]
                retry = knobs.retry_after if status in _RETRY_AFTER_STATUSES else None
                raise GatewayError(kind, message, status, retry_after=retry)
            answer = simulator_embeddings.answer(body)
        except GatewayError as exc:
            return self._error(self.openai, exc, request_id, exc.retry_after)
        await asyncio.sleep(knobs.ttft_ms / 1000)
        if knobs.fault == "corrupt_frame":
            answer = answer[: len(answer) // 2]
        return _json(answer, {self.openai.request_id_header: request_id})

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return _json(b'{"status":"ok"}')

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(msgspec.json.encode(self.stats.snapshot()))

    async def reset_stats(self, request: web.Request) -> web.StreamResponse:
        self.stats = _Stats()
        return _json(b'{"status":"reset"}')

    # one API request

    def _knobs(self, request: web.Request) -> SimulatorSettings:
        """The server defaults with this request's ``x-sim-*`` headers and knob queries applied."""
        given: dict[str, str] = {}
        for name, value in request.headers.items():
            if name[:6].lower() == "x-sim-":
                lower = name.lower()
                knob = _HEADER_KNOBS.get(lower)
                if knob is None:
                    hint = (
                        "api_key is a server setting, not a per-request knob"
                        if lower == "x-sim-api-key"
                        else "the knobs are " + ", ".join(_HEADER_KNOBS)
                    )
                    raise GatewayError(
                        "invalid_request",
                        f"unknown simulator header {lower}: {hint}",
                        400,
                        param=lower,
                    )
                given[knob] = value
        if request.query_string:
            query = request.query
            for knob in _KNOBS:
                if knob in query:
                    given[knob] = query[knob]
        if not given:
            return _maybe_slow(self.settings)
        changes = {}
        for knob, value in given.items():
            parse, kind = _KNOBS[knob]
            try:
                changes[knob] = parse(value.strip())
            except ValueError:
                raise GatewayError(
                    "invalid_request",
                    f"simulator knob {knob}={value!r} is invalid: it must be {kind}",
                    400,
                    param=knob,
                ) from None
        knobs = msgspec.structs.replace(self.settings, **changes)
        if knobs.fault_key is not None and not _carries_key(request.headers, knobs.fault_key):
            knobs = msgspec.structs.replace(knobs, fault=None)  # another key: served normally
        return _maybe_slow(knobs)

    def _authorized(self, request: web.Request, flavor: _Flavor | None = None) -> bool:
        key = self.settings.api_key
        headers = request.headers
        if flavor is self.bedrock or flavor is self.bedrock_invoke:  # SigV4's shape, or an API key
            given = headers.get("authorization", "")
            if given.startswith("Bearer "):
                return key is None or given == "Bearer " + key
            return bool(_SIGV4.match(given)) and "x-amz-date" in headers
        if key is None:
            return True
        return (
            headers.get("x-api-key") == key
            or headers.get("x-goog-api-key") == key
            or headers.get("authorization") == "Bearer " + key
            or headers.get("api-key") == key
        )

    def _error(
        self, flavor: _Flavor, error: GatewayError, request_id: str, retry_after: float | None
    ) -> web.Response:
        from tokenrelay.simulator_web import web

        if flavor is self.gemini and error.status == 529:  # Google says overloaded with a 503
            error = GatewayError(error.type, error.message, 503, retry_after=error.retry_after)
        headers = {flavor.request_id_header: request_id}
        named = getattr(flavor.dialect, "error_headers", None)  # Bedrock's x-amzn-errortype
        if named is not None:
            headers.update(named(error))
        if retry_after is not None:
            headers["retry-after"] = _seconds(retry_after)
            if flavor.retry_after_ms:
                headers["retry-after-ms"] = str(round(retry_after * 1000))
        return web.Response(
            status=error.status,
            body=flavor.dialect.encode_error(error),
            headers=headers,
            content_type="application/json",
        )

    async def vertex(self, http: web.Request) -> web.StreamResponse:
        """Vertex AI's ``publishers/{publisher}/models/{model}:{method}``."""
        info = http.match_info
        model, _, method = info["target"].partition(":")
        self.serial += 1
        request_id = f"req_sim_vx{self.serial:010d}"
        token = _bearer(http.headers.get("authorization", ""))
        problem = self._vertex_token_problem(token)
        if problem is not None:
            body = {"error": {"code": 401, "message": problem, "status": "UNAUTHENTICATED"}}
            return _json(msgspec.json.encode(body), status=401)
        gemini = getattr(self, "gemini", None)  # the Gemini flavor, where the simulator has one
        if info["publisher"] == "google" and gemini is not None:
            return await self._serve(http, gemini)  # it reads model and method off the path
        if info["publisher"] != "anthropic" or method not in ("rawPredict", "streamRawPredict"):
            message = f"the simulator does not serve {info['publisher']} models' {method} yet"
            body = {"error": {"code": 501, "message": message, "status": "UNIMPLEMENTED"}}
            return _json(msgspec.json.encode(body), status=501)
        raw = await http.read()
        try:
            fields = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            fields = None
        if not isinstance(fields, dict) or "model" in fields:
            why = "model: Extra inputs are not permitted (Vertex names the model in the URL)"
            error = GatewayError("invalid_request", why, 400)
            return self._error(self.anthropic, error, request_id, None)
        version = fields.get("anthropic_version")
        if version != "vertex-2023-10-16" and not _DATED_VERSION.fullmatch(str(version)):
            # Anthropic's Vertex docs name "vertex-2023-10-16"; the anthropic SDK's Vertex
            # client sends its API version (a date), so both are taken
            why = 'anthropic_version: required on Vertex AI, e.g. "vertex-2023-10-16"'
            error = GatewayError("invalid_request", why, 400)
            return self._error(self.anthropic, error, request_id, None)
        del fields["anthropic_version"]
        fields["model"] = model
        fields["stream"] = method == "streamRawPredict"
        return await self._serve(http, self.anthropic, msgspec.json.encode(fields))

    def _vertex_token_problem(self, token: str | None) -> str | None:
        """Why Vertex would refuse this bearer token, or ``None``."""
        if not token:
            return "Request is missing required authentication credential (simulator)"
        if token.startswith("sim-expires-"):
            try:
                valid = time.time() < float(token.removeprefix("sim-expires-"))
            except ValueError:
                valid = False
            return None if valid else "Request had invalid authentication credentials: expired"
        key = self.settings.api_key
        if key is not None and token != key:
            return "Request had invalid authentication credentials (simulator)"
        return None

    async def _serve(
        self,
        http: web.Request,
        flavor: _Flavor,
        rewritten: bytes | None = None,
        *,
        model: str | None = None,
        stream: bool | None = None,
    ) -> web.StreamResponse:
        """One API request; ``rewritten`` is the body as the dialect reads it, when a Vertex
        path had to put the URL's model into it (the stats keep the body received); ``model``
        and ``stream`` are the URL's, for an API that says them there (Bedrock)."""
        stats = self.stats
        path = http.path
        stats.requests[path] = stats.requests.get(path, 0) + 1
        self.serial += 1
        serial = self.serial
        request_id = f"req_sim_{serial:012d}"
        body = await http.read()
        stats.last_requests.append((path, http.headers, body))
        if not (self._authorized(http, flavor) or http.path.startswith("/v1/projects/")):
            error = GatewayError("authentication", "invalid API key (simulator)", 401)
            return self._error(flavor, error, request_id, None)
        try:
            knobs = self._knobs(http)
            request = flavor.dialect.parse_request(rewritten or body)
            if model is not None:
                request.model = model
            if stream is not None:
                request.stream = stream
            if flavor is self.gemini:  # the model and streaming are in Gemini's URL
                from tokenrelay.dialects.gemini import parse_call

                call = parse_call(path)
                if call is None:
                    raise GatewayError("not_found", f"no such method: {path}", 404)
                request.model, request.stream = call
            fault = knobs.fault
            if fault is not None and fault in STATUS_FAULTS:
                kind, status, message = STATUS_FAULTS[fault]
                retry = knobs.retry_after if status in _RETRY_AFTER_STATUSES else None
                error = GatewayError(kind, message, status, retry_after=retry)
                return self._error(flavor, error, request_id, retry)
            refused = azure.fault(fault) if flavor.azure else None
            if refused is not None:
                return _raw_json(*refused, {flavor.request_id_header: request_id})
            plan = _Plan(request, knobs, flavor, serial)
            if fault in azure.FAULTS:  # the others answer at once; this one cuts the answer
                if fault == "content_filter_finish" and flavor.azure:
                    kept = plan.events_for(knobs.fault_after)
                    plan.events = plan.events[:kept]
                    plan.text = tuple(e for e in plan.events if type(e) is TextDelta)
                    sent = plan.tokens_in(kept)
                    plan.usage_last = msgspec.structs.replace(plan.usage_last, output_tokens=sent)
                    plan.finish = Finish("content_filter")
                knobs = msgspec.structs.replace(knobs, fault=None)
        except GatewayError as exc:
            return self._error(flavor, exc, request_id, exc.retry_after)
        message_id = f"{flavor.message_id_prefix}{serial:012d}"
        if request.stream:
            return await self._stream(http, flavor, request, knobs, plan, request_id, message_id)
        return await self._whole(http, flavor, request, knobs, plan, request_id, message_id)

    def _disconnected(self, path: str, tokens: int) -> None:
        self.stats.disconnects.append(
            {"path": path, "at_monotonic": time.monotonic(), "tokens_sent": tokens}
        )

    async def _whole(
        self,
        http: web.Request,
        flavor: _Flavor,
        request: Request,
        knobs: SimulatorSettings,
        plan: _Plan,
        request_id: str,
        message_id: str,
    ) -> web.StreamResponse:
        from tokenrelay.simulator_web import web

        fault = knobs.fault
        try:
            if fault == "hang_before_first_byte":
                await asyncio.get_running_loop().create_future()
            await asyncio.sleep(knobs.ttft_ms / 1000)
            if fault == "hang_mid":
                await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self._disconnected(http.path, 0)
            raise
        if fault == "reset":
            _reset(http)
            return web.Response()
        if fault in ("error_after", "error_before_content"):
            error = GatewayError("overloaded", "simulated overload", 529)
            return self._error(flavor, error, request_id, knobs.retry_after)
        encode_for = getattr(flavor.dialect, "encode_response_for", None)  # Responses
        served = knobs.served_model or request.model
        if encode_for is not None:
            body = encode_for(request, plan.completion(), id=message_id, model=served)
        else:
            body = flavor.dialect.encode_response(plan.completion(), id=message_id, model=served)
            if flavor.azure:
                body = azure.annotate_whole(body)
        self.stats.completed += 1
        self.stats.tokens_sent += plan.tokens_in(len(plan.events))
        return web.Response(
            body=body,
            headers={flavor.request_id_header: request_id},
            content_type="application/json",
        )

    async def _stream(
        self,
        http: web.Request,
        flavor: _Flavor,
        request: Request,
        knobs: SimulatorSettings,
        plan: _Plan,
        request_id: str,
        message_id: str,
    ) -> web.StreamResponse:
        from tokenrelay.simulator_web import web

        fault = knobs.fault
        events = plan.events
        if fault == "error_before_content":
            events = []
        elif fault in _MID_FAULTS:
            events = events[: plan.events_for(knobs.fault_after)]
        writer = flavor.dialect.stream_writer(
            request, id=message_id, model=knobs.served_model or request.model
        )
        if flavor.azure and flavor.dialect.NAME == "openai":
            writer = azure.FilteredWriter(writer, plan.finish.reason == "content_filter")
        write = writer.write
        response = web.StreamResponse(
            headers={
                "content-type": flavor.dialect.CONTENT_TYPE,
                "cache-control": "no-cache",
                flavor.request_id_header: request_id,
            }
        )
        loop = asyncio.get_running_loop()
        sleep = asyncio.sleep
        send = response.write
        step = knobs.token_delay_ms / 1000
        spread = max(0.0, knobs.token_delay_max_ms / 1000 - step)
        uniform = random.random
        written = 0
        try:
            if fault == "hang_before_first_byte":
                await loop.create_future()
            await response.prepare(http)
            due = loop.time() + knobs.ttft_ms / 1000
            if flavor.usage_first:
                data = write(plan.usage_first)
                if data:
                    await send(data)
            for event in events:
                wait = due - loop.time()
                await sleep(wait if wait > 0 else 0)
                await send(write(event))
                written += 1
                due += step + spread * uniform() if spread else step
            if fault is None:
                if not events:  # nothing to say (tokens=0): the end still comes after ttft
                    await sleep(max(0.0, due - loop.time()))
                await send(write(plan.usage_last) + write(plan.finish) + writer.close())
                self.stats.completed += 1
            elif fault == "error_after" or fault == "error_before_content":
                wait = due - loop.time()
                await sleep(wait if wait > 0 else 0)
                sent = plan.tokens_in(written)
                error = Error("overloaded", f"simulated overload after {sent} tokens", 529)
                await send(write(error) + writer.close())
            elif fault == "hang_mid":
                await loop.create_future()
            elif fault == "reset":
                _reset(http)
            elif fault == "corrupt_frame":
                frame = bytearray(write(TextDelta(" corrupt")))
                frame[-1] ^= 0xFF  # the message CRC no longer matches (SSE: a torn event)
                await send(bytes(frame) if frame[:1] != b"d" else b"data: {corrupt\n\n")
        except asyncio.CancelledError:
            self._disconnected(http.path, plan.tokens_in(written))
            self.stats.tokens_sent += plan.tokens_in(written)
            raise
        except ConnectionResetError:
            self._disconnected(http.path, plan.tokens_in(written))
        self.stats.tokens_sent += plan.tokens_in(written)
        return response


def _reset(http: web.Request) -> None:
    """Abort the connection with a TCP RST instead of an orderly close."""
    transport = http.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _raw_json(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    from tokenrelay.simulator_web import web

    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _json(body: bytes, headers: Mapping[str, str] | None = None, status: int = 200) -> web.Response:
    from tokenrelay.simulator_web import web

    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _bearer(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# --- public API ----------------------------------------------------------------------------------


def create_app(settings: SimulatorSettings | None = None) -> web.Application:
    """The simulator as an aiohttp application (serve it with ``handler_cancellation=True`` so a
    client that leaves cancels its handler, which is how disconnects are seen)."""
    return _build(settings)[0]


def _build(settings: SimulatorSettings | None) -> tuple[web.Application, _Simulator]:
    from tokenrelay.simulator_web import web

    simulator = _Simulator(settings or SimulatorSettings())
    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_post("/v1/messages", simulator.messages)
    app.router.add_post("/v1/messages/count_tokens", simulator.count_tokens)
    app.router.add_post("/v1/chat/completions", simulator.chat_completions)
    app.router.add_post("/v1/responses", simulator.responses_create)
    app.router.add_post("/v1/embeddings", simulator.embeddings)
    app.router.add_post(
        "/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{target}",
        simulator.vertex,
    )
    app.router.add_post("/model/{model}/converse-stream", simulator.converse_stream)
    app.router.add_post("/model/{model}/converse", simulator.converse)
    app.router.add_post("/model/{model}/invoke-with-response-stream", simulator.invoke_stream)
    app.router.add_post("/openai/v1/chat/completions", simulator.azure_v1_chat)
    app.router.add_post("/openai/v1/responses", simulator.azure_v1_responses)
    app.router.add_post(
        "/openai/deployments/{deployment}/chat/completions", simulator.azure_deployment_chat
    )
    app.router.add_post("/openai/responses", simulator.azure_responses)
    app.router.add_post("/v1beta/models/{call}", simulator.generate_content)
    app.router.add_get("/healthz", simulator.healthz)
    app.router.add_get("/stats", simulator.get_stats)
    app.router.add_post("/stats/reset", simulator.reset_stats)
    return app, simulator


class RunningSimulator:
    """A simulator serving on a loopback port; ``url`` has no trailing slash."""

    def __init__(self, runner: web.AppRunner, simulator: _Simulator, host: str, port: int) -> None:
        self._runner = runner
        self._simulator = simulator
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

    @property
    def settings(self) -> SimulatorSettings:
        return self._simulator.settings

    def stats(self) -> dict[str, Any]:
        """What ``GET /stats`` would answer, read straight from memory."""
        return self._simulator.stats.snapshot()

    def reset_stats(self) -> None:
        self._simulator.stats = _Stats()

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start(
    settings: SimulatorSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 2.0,
) -> RunningSimulator:
    """Serve the simulator on ``host:port`` (port 0: a free one) in the running event loop."""
    from tokenrelay.simulator_web import web

    app, simulator = _build(settings)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    return RunningSimulator(runner, simulator, host, bound)


def run(
    settings: SimulatorSettings | None = None, host: str = "127.0.0.1", port: int = 8790
) -> None:
    """Serve until Ctrl-C or SIGTERM (``tokenrelay simulate``); uses uvloop when installed."""

    async def serve() -> None:
        simulator = await start(settings, host, port)
        print(f"tokenrelay simulator listening on {simulator.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await simulator.stop()

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with (
        asyncio.Runner(loop_factory=loop_factory) as runner,
        contextlib.suppress(KeyboardInterrupt),
    ):
        runner.run(serve())
