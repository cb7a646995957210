"""Hostile bodies at every POST endpoint of a running ``tokenrelay serve`` (demo mode, on its
built-in simulator): arbitrary bytes, arbitrary JSON (deep, huge numbers, NaN, lone surrogates)
and well-formed requests with one known field replaced by any JSON value. Never a 5xx; every
refusal in the path's own error shape; and the process still answers a normal request after.

Deterministic (``derandomize``, no example database) and bounded to run in well under a minute.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.servers import ServeProcess, clean_environ
from tokenrelay.dialects import passthrough

IMAGE = "data:image/png;base64,iVBORw0KGgo="
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "oa",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["zz"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
    },
    "/v1/messages": {
        "model": "an",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
            },
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "u1"},
        "stop_sequences": ["zz"],
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": True,
    },
    "/api/generate": {
        "prompt": "hi",
        "maxTokens": 5,
        "route": "an",
        "include": ["usage", "finish", "thinking", "meta"],
        "systemPrompt": "Be brief.",
        "temperature": 0.5,
        "stream": True,
    },
    "/api/chat": {
        "id": "chat1",
        "messages": [
            {
                "id": "m1",
                "role": "user",
                "parts": [
                    {"type": "text", "text": "hi"},
                    {"type": "file", "mediaType": "image/png", "url": IMAGE},
                ],
            }
        ],
        "trigger": "submit-message",
        "route": "oa",
        "maxTokens": 5,
        "temperature": 0.5,
        "metadata": {"k": "v"},
        "system": "Be brief.",
    },
}
# Known fields a base leaves out, so a wrong type reaches their checks too.
ABSENT: dict[str, list[str]] = {
    "/v1/chat/completions": ["max_completion_tokens", "functions", *passthrough.OPENAI],
    "/v1/messages": list(passthrough.ANTHROPIC),
    "/api/generate": [],
    "/api/chat": ["messageId", "model"],
}
PATHS = list(BASES)
ROUTE_FIELD = {"/v1/chat/completions": "model", "/v1/messages": "model"} | {
    "/api/generate": "route",
    "/api/chat": "route",
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServeProcess]:
    with tempfile.TemporaryDirectory() as scratch:
        env = clean_environ(
            TOKENRELAY_SIMULATOR__TTFT_MS="0",
            TOKENRELAY_SIMULATOR__TOKENS="3",
            TOKENRELAY_SIMULATOR__TOKEN_DELAY_MS="0",
            TOKENRELAY_ANONYMOUS_LIMIT="1000000/minute",
            TOKENRELAY_DATABASE_URL=f"sqlite:///{scratch}/ledger.db",
            TOKENRELAY_MAX_BODY_BYTES="1000000",
            TOKENRELAY_ROUTES__AN__TARGETS="anthropic:claude-haiku-4-5",
            TOKENRELAY_ROUTES__AN__ALLOW_CLIENT_SYSTEM="true",
            TOKENRELAY_ROUTES__OA__TARGETS="openai:gpt-4o-mini",
            TOKENRELAY_ROUTES__OA__ALLOW_CLIENT_SYSTEM="true",
            # ServeProcess pipes stdout without reading it: keep it quiet so it never fills
            TOKENRELAY_LOG_LEVEL="warning",
            TOKENRELAY_AUDIT__DESTINATION=f"{scratch}/audit.log",
        )
        server = ServeProcess(env)
        try:
            yield server
        finally:
            server.stop()


def post(server: ServeProcess, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"content-type": "application/json", "connection": "close"}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _error_shape(path: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether a refusal is in the path's dialect, as that dialect's clients parse it."""
    if path == "/api/chat":  # useChat shows the text; the type is in a header
        return (
            headers["content-type"].startswith("text/plain")
            and bool(body.strip())
            and bool(headers.get("x-tokenrelay-error-type"))
        )
    data = json.loads(body)
    if path == "/v1/messages":
        error = data["error"]
        return data["type"] == "error" and isinstance(error["type"], str) and bool(error["message"])
    error = data["error"]
    if path == "/v1/chat/completions":
        return {"message", "type", "param", "code"} <= set(error) and bool(error["message"])
    return isinstance(error["type"], str) and bool(error["message"])


def check(server: ServeProcess, path: str, body: bytes) -> None:
    status, headers, answer = post(server, path, body)
    assert status < 500, (status, body[:300], answer[:300])
    if status >= 400:
        assert _error_shape(path, headers, answer), (status, answer[:300])


def still_serves(server: ServeProcess, path: str) -> None:
    status, _, answer = post(server, path, json.dumps(BASES[path]).encode())
    assert status == 200, answer[:300]
    assert answer


# --- strategies --------------------------------------------------------------------------------

_numbers = (
    st.integers()
    | st.integers(min_value=10**18, max_value=10**400)
    | st.floats()  # NaN and infinities too: json.dumps writes them, and they are not JSON
)
_text = st.text(st.characters(codec=None), max_size=20)  # lone surrogates included
_scalars = st.none() | st.booleans() | _numbers | _text
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


def to_bytes(value: Any, ascii_only: bool) -> bytes:
    """JSON text as a client might send it; without ``ensure_ascii`` a lone surrogate becomes
    bytes that are not UTF-8."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([100, 129, 1000, 100_000]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = (
        opener * depth + b"1" + closer * depth if opener != b"[" else b"[" * depth + b"]" * depth
    )
    return draw(
        st.sampled_from([inner, b'{"model":' + inner + b"}", b'{"messages":' + inner + b"}"])
    )


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a request where a value sits."""
    children: Iterator[tuple[Any, Any]] = (
        iter(value.items())
        if isinstance(value, dict)
        else iter(enumerate(value))
        if isinstance(value, list)
        else iter(())
    )
    for key, child in children:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _replaced(base: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(base))
    holder = copy
    for key in path[:-1]:
        holder = holder[key]
    if delete:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return copy


def mutated(path: str) -> st.SearchStrategy[bytes]:
    base = BASES[path]
    places = list(_paths(base)) + [(name,) for name in ABSENT[path]]

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        # either route: the same dialect's passthrough or the translation to the other one
        routed = _replaced(base, (ROUTE_FIELD[path],), draw(st.sampled_from(["an", "oa"])), False)
        place = draw(st.sampled_from(places))
        delete = place[0] not in ABSENT[path] and draw(st.booleans())
        value = draw(json_values)
        return to_bytes(_replaced(routed, place, value, delete), draw(st.booleans()))

    return build()


STRATEGIES: dict[str, Callable[[str], st.SearchStrategy[bytes]]] = {
    "bytes": lambda path: st.binary(max_size=400),
    "json": lambda path: st.builds(to_bytes, json_values, st.booleans()),
    "deep": lambda path: deep(),
    "mutated": mutated,
}
EXAMPLES = {"bytes": 100, "json": 200, "deep": 8, "mutated": 800}


@pytest.mark.parametrize("kind", list(STRATEGIES))
@pytest.mark.parametrize("path", PATHS)
def test_no_body_makes_a_5xx_or_an_error_in_another_shape(
    gateway: ServeProcess, path: str, kind: str
) -> None:
    @settings(
        max_examples=EXAMPLES[kind],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failing body is printed whole
    )
    @given(body=STRATEGIES[kind](path))
    def attack(body: bytes) -> None:
        check(gateway, path, body)

    attack()
    still_serves(gateway, path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "deeper than 128 levels"),
        (b'{"model": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"model": "a\\ud800b"}', "lone UTF-16 surrogate escape (\\ud800)"),
    ],
)
def test_the_reported_bodies_are_400s_saying_what_is_wrong(
    gateway: ServeProcess, path: str, body: bytes, words: str
) -> None:
    status, headers, answer = post(gateway, path, body)
    assert status == 400 and _error_shape(path, headers, answer)
    assert words in answer.decode().replace("\\\\", "\\")  # JSON escapes the backslash
