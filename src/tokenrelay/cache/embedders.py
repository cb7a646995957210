"""Embedding functions for the semantic cache: an OpenAI-compatible ``/v1/embeddings`` service,
or the operator's own Python code named by an entry point.

An embedder is anything with ``async def embed(texts) -> vectors``. What ``build_embedder``
returns raises only ``EmbedderError`` (a timeout, an unreachable service, an error status, an
answer that is not vectors), which the semantic index turns into a miss: the cache is an
optimization and never fails a request.

The HTTP contract is OpenAI's::

    POST <embeddings_url>   {"model": "<embeddings_model>", "input": ["<text>", ...]}
    200 application/json    {"data": [{"index": 0, "embedding": [0.01, ...]}, ...]}
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import msgspec

if TYPE_CHECKING:
    import aiohttp

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # an answer larger than this is refused as garbage

EmbedderFailure = Literal["timeout", "unreachable", "status", "garbage", "crashed"]


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in the order given."""
        ...


class EmbedderError(Exception):
    """No vectors this time; ``kind`` says why (for metrics), the message says what happened."""

    def __init__(self, kind: EmbedderFailure, message: str) -> None:
        super().__init__(message)
        self.kind: EmbedderFailure = kind


class _Item(msgspec.Struct):
    embedding: list[float]
    index: int | None = None


class _Answer(msgspec.Struct):
    data: list[_Item]


def parse_embeddings(payload: bytes, count: int) -> list[list[float]]:
    """The vectors of an OpenAI-shaped answer for ``count`` texts, in input order; anything
    else (wrong count, ragged or empty vectors, NaN) is an ``EmbedderError("garbage")``."""
    try:
        items = msgspec.json.decode(payload, type=_Answer).data
    except msgspec.DecodeError as exc:
        raise EmbedderError("garbage", f"the embeddings answer is not usable: {exc}") from None
    if len(items) != count:
        raise EmbedderError("garbage", f"asked for {count} embeddings, got {len(items)}")
    if all(item.index is not None for item in items):
        items = sorted(items, key=lambda item: item.index or 0)
    vectors = [item.embedding for item in items]
    size = len(vectors[0]) if vectors else 0
    for vector in vectors:
        if not vector or len(vector) != size or not all(map(math.isfinite, vector)):
            raise EmbedderError("garbage", "the embeddings are empty, ragged or not finite")
    return vectors


class HttpEmbedder:
    """An OpenAI-compatible embeddings service, with a total timeout per call.

    ``pool`` is the gateway's upstream pool (``tokenrelay.http_client.UpstreamPool``: anything
    with its ``post`` and ``recycle``), so embeddings reuse its keep-alive connections; without
    one, an ``aiohttp`` session is opened on first use and ``close`` closes it.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 1.0,
        pool: Any | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"embeddings_url must be an http(s) URL, not {url!r}")
        self.url = url
        self.model = model
        self.timeout = timeout
        self.headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self._pool: Any = pool
        self._session: aiohttp.ClientSession | None = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        body = msgspec.json.encode({"model": self.model, "input": texts})
        try:
            async with asyncio.timeout(self.timeout):
                if self._pool is not None:
                    status, payload = await self._post_pooled(body)
                else:
                    status, payload = await self._post_aiohttp(body)
        except TimeoutError:
            raise EmbedderError("timeout", f"no embeddings within {self.timeout:g}s") from None
        except OSError as exc:  # refused, reset, broke the protocol
            raise EmbedderError("unreachable", f"embeddings service unreachable: {exc}") from None
        if status != 200:
            raise EmbedderError("status", f"the embeddings service answered HTTP {status}")
        return parse_embeddings(payload, len(texts))

    async def _post_pooled(self, body: bytes) -> tuple[int, bytes]:
        response = await self._pool.post(self.url, body, self.headers, connect_timeout=self.timeout)
        try:
            payload: bytes = await response.read(MAX_ANSWER_BYTES + 1)
        except BaseException:
            response.close()
            raise
        self._pool.recycle(response)
        return int(response.status), _bounded(payload)

    async def _post_aiohttp(self, body: bytes) -> tuple[int, bytes]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(self.url, data=body, headers=self.headers) as reply:
                payload = bytearray()
                async for chunk in reply.content.iter_any():
                    payload += _bounded(chunk, len(payload))
                return reply.status, bytes(payload)
        except aiohttp.ClientError as exc:  # not all of them are OSErrors
            raise EmbedderError("unreachable", f"embeddings service: {exc!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _bounded(payload: bytes, before: int = 0) -> bytes:
    if before + len(payload) > MAX_ANSWER_BYTES:
        raise EmbedderError("garbage", f"the embeddings answer is over {MAX_ANSWER_BYTES} bytes")
    return payload


class BoundedEmbedder:
    """The operator's own embedder with the setting's timeout, its failures made typed."""

    def __init__(self, inner: Embedder, timeout: float) -> None:
        self.inner = inner
        self.timeout = timeout

    async def embed(self, texts: list[str]) -> list[list[float]]:
        try:
            async with asyncio.timeout(self.timeout):
                vectors = await self.inner.embed(texts)
        except TimeoutError:
            raise EmbedderError("timeout", f"no embeddings within {self.timeout:g}s") from None
        except EmbedderError:
            raise
        except Exception as exc:
            raise EmbedderError("crashed", f"the embedder raised {exc!r}") from None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise EmbedderError("garbage", f"asked for {len(texts)} embeddings, got another answer")
        return vectors

    async def close(self) -> None:
        closer = getattr(self.inner, "close", None) or getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()


def load_entry_point(spec: str) -> Callable[[], Any]:
    """The callable named by ``"package.module:attribute"`` (dots after the colon walk into
    the attribute), or a ``ValueError`` saying what is missing."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"embedder must look like 'package.module:factory', not {spec!r}")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"embedder {spec!r}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"embedder {spec!r}: {module_name} has no {attribute!r}") from None
    if not callable(found):
        raise ValueError(f"embedder {spec!r} is not callable")
    return found  # type: ignore[no-any-return]


def build_embedder(
    settings: Any, pool: Any | None = None, environ: Mapping[str, str] | None = None
) -> Embedder:
    """The embedder a route's semantic settings name: ``embedder`` (an entry point whose
    factory is called with no arguments) when set, else an ``HttpEmbedder`` on
    ``embeddings_url``. A ``ValueError`` says what to fix, at start-up."""
    environ = os.environ if environ is None else environ
    timeout = float(getattr(settings, "timeout", 1.0))
    spec = getattr(settings, "embedder", None)
    if spec:
        made = load_entry_point(spec)()
        if not callable(getattr(made, "embed", None)):
            raise ValueError(f"embedder {spec!r} returned {made!r}, which has no embed()")
        return BoundedEmbedder(made, timeout)
    url = getattr(settings, "embeddings_url", None)
    if not url:
        raise ValueError("the semantic cache needs embeddings_url or embedder")
    api_key = None
    key_env = getattr(settings, "embeddings_api_key_env", None)
    if key_env:
        api_key = environ.get(key_env)
        if not api_key:
            raise ValueError(f"embeddings_api_key_env names {key_env}, which is not set")
    model = getattr(settings, "embeddings_model", None) or "text-embedding-3-small"
    return HttpEmbedder(url, model, api_key=api_key, timeout=timeout, pool=pool)
