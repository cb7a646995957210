"""The semantic cache's index and embedders (``tokenrelay.cache.semantic``, ``.embedders``):
matching within a (scope, partition) only, threshold, expiry and the eviction bound, in memory
and in a throwaway redis-server (tests/redis_server.py) shared by two indexes, a Redis outage
as misses; the HTTP embedder against the simulator's ``/v1/embeddings`` on loopback (slow,
down, torn, refused); the entry point loader; and the labelled pairs' wrong-hit rate at the
default threshold, a regression guard for the number docs/cache-semantic.md reports."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio

from tests.redis_server import RedisServer, redis_server_binary, redis_server_fixture
from tests.services import free_port
from tokenrelay import simulator_embeddings
from tokenrelay.cache import vectors
from tokenrelay.cache.embedders import (
    BoundedEmbedder,
    EmbedderError,
    HttpEmbedder,
    build_embedder,
    load_entry_point,
    parse_embeddings,
)
from tokenrelay.cache.semantic import (
    DEFAULT_THRESHOLD,
    SemanticIndex,
    cosine,
    pack,
    unit,
    unpack,
)
from tokenrelay.http_client import UpstreamPool
from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start

redis_server = redis_server_fixture(scope="module")

# What docs/cache-semantic.md reports for the labelled pairs at DEFAULT_THRESHOLD (bench/
# semantic_quality.py): no near miss hits, and 17 of the 36 paraphrases do.
WRONG_HIT_CEILING = 0.0
PARAPHRASE_FLOOR = 17 / 36

FRANCE = "What's the capital of France?"
FRANCE_AGAIN = "Tell me the capital of France"  # the same content words: similarity 1
GERMANY = "What's the capital of Germany?"
READ = "In Python, how do I read a file?"
READ_AGAIN = "How do I read a file in Python?"  # 0.947 with the simulator's embedder


class LocalEmbedder:
    """The simulator's deterministic embedder, in process; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [simulator_embeddings.embed(text) for text in texts]


class SlowEmbedder:
    async def embed(self, texts: list[str]) -> list[list[float]]:
        await asyncio.sleep(10)
        return []


class CrashingEmbedder:
    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("the model fell over")


def make_embedder() -> LocalEmbedder:
    """An entry point factory (``tests.test_semantic_index:make_embedder``)."""
    return LocalEmbedder()


def make_nothing() -> object:
    return object()


def assert_hit(found: tuple[str, float] | None, key: str, score: float = 1.0) -> None:
    assert found is not None, f"no hit, expected {key}"
    assert found[0] == key
    assert found[1] == pytest.approx(score, abs=1e-6)


def similarity(a: str, b: str) -> float:
    va, vb = unit(simulator_embeddings.embed(a)), unit(simulator_embeddings.embed(b))
    assert va is not None and vb is not None
    return cosine(va, vb)


def semantic_settings(**given: Any) -> SimpleNamespace:
    """The fields ``build_embedder`` reads of the cache helper's ``SemanticCacheSettings``."""
    fields: dict[str, Any] = {
        "embeddings_url": None,
        "embeddings_model": "sim-embedding",
        "embeddings_api_key_env": None,
        "embedder": None,
        "timeout": 1.0,
    }
    fields.update(given)
    return SimpleNamespace(**fields)


@pytest.fixture
def prefix() -> str:
    return f"test-sem-{uuid.uuid4().hex[:8]}:"


@pytest_asyncio.fixture(loop_scope="session")
async def client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    made = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=0.5)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture(params=["numpy", "python"])
def kernel_name(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every index the test builds scans with numpy, or (its module handle emptied as if numpy
    were not installed) in pure Python."""
    if request.param == "numpy":
        assert vectors.load_numpy() is not None, "numpy is in the test extra"
    else:
        monkeypatch.setattr(vectors, "_numpy", False)
    name: str = request.param
    return name


both_kernels = pytest.mark.usefixtures("kernel_name")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, to stop and start."""
    with RedisServer(redis_server_binary()) as server:
        yield server


# --- memory --------------------------------------------------------------------------------------


@both_kernels
async def test_the_same_text_hits_with_similarity_one() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.95)
    await index.add("org-a", "p1", FRANCE, "key-france")
    found = await index.find("org-a", "p1", FRANCE)
    assert found is not None
    assert found[0] == "key-france"
    assert found[1] == pytest.approx(1.0)


@both_kernels
async def test_a_paraphrase_hits_with_its_similarity_and_a_near_miss_does_not() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.9)
    await index.add("org-a", "p1", READ, "key-read")
    await index.add("org-a", "p1", FRANCE, "key-france")
    assert_hit(
        await index.find("org-a", "p1", READ_AGAIN), "key-read", similarity(READ, READ_AGAIN)
    )
    assert (await index.find("org-a", "p1", FRANCE_AGAIN) or ("",))[0] == "key-france"
    assert await index.find("org-a", "p1", GERMANY) is None


@both_kernels
async def test_the_threshold_decides() -> None:
    close = similarity(READ, READ_AGAIN)
    assert 0.94 < close < 0.95
    for threshold, hits in ((0.94, True), (0.95, False)):
        index = SemanticIndex(LocalEmbedder(), threshold=threshold)
        await index.add("org-a", "p1", READ, "key-read")
        assert (await index.find("org-a", "p1", READ_AGAIN) is not None) == hits
    with pytest.raises(ValueError, match="threshold"):
        SemanticIndex(LocalEmbedder(), threshold=1.5)


@both_kernels
async def test_the_most_similar_entry_wins() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.3)
    await index.add("org-a", "p1", GERMANY, "key-germany")
    await index.add("org-a", "p1", FRANCE, "key-france")
    await index.add("org-a", "p1", "How do I bake bread?", "key-bread")
    assert similarity(GERMANY, "What's the capital city of France?") >= 0.3
    found = await index.find("org-a", "p1", "What's the capital city of France?")
    assert found is not None and found[0] == "key-france"


@both_kernels
async def test_another_scope_or_partition_never_hits() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.95)
    await index.add("org-a", "p1", FRANCE, "key-france")
    assert await index.find("org-b", "p1", FRANCE) is None
    assert await index.find("org-a", "p2", FRANCE) is None
    assert await index.find("org-a", "p1", FRANCE) is not None


@both_kernels
async def test_an_empty_partition_is_a_miss_without_embedding() -> None:
    embedder = LocalEmbedder()
    index = SemanticIndex(embedder, threshold=0.95)
    assert await index.find("org-a", "p1", FRANCE) is None
    assert embedder.calls == 0
    await index.add("org-a", "p1", FRANCE, "key-france")  # embedded once, kept as recent
    await index.find("org-a", "p1", FRANCE)
    assert embedder.calls == 1


@both_kernels
async def test_entries_expire() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.95, ttl=3600)
    await index.add("org-a", "p1", FRANCE, "key-france", ttl=0)  # a client's ttl of 0
    assert await index.find("org-a", "p1", FRANCE) is None
    short = SemanticIndex(LocalEmbedder(), threshold=0.95, ttl=0.05)
    await short.add("org-a", "p1", GERMANY, "key-germany")
    await asyncio.sleep(0.1)
    assert await short.find("org-a", "p1", GERMANY) is None
    assert short.size == 0


@both_kernels
async def test_the_sweep_drops_expired_entries_of_idle_scopes() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.95)
    await index.add("org-idle", "p1", FRANCE, "old", ttl=0)
    assert index.size == 1
    index._next_sweep = 0  # as if a minute had passed
    await index.add("org-busy", "p1", GERMANY, "new")
    assert index.size == 1
    assert await index.find("org-busy", "p1", GERMANY) is not None


@both_kernels
async def test_each_scope_is_bounded_oldest_evicted() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.95, max_entries=3)
    questions = [f"How far is planet number {n} from the sun?" for n in range(5)]
    for number, question in enumerate(questions):
        await index.add("org-a", f"p{number % 2}", question, f"key{number}")
    await index.add("org-b", "p0", questions[0], "other-org")
    assert index.size == 4
    for number, question in enumerate(questions):
        found = await index.find("org-a", f"p{number % 2}", question)
        assert (found is not None) == (number >= 2), number
    assert_hit(await index.find("org-b", "p0", questions[0]), "other-org")


@both_kernels
async def test_adding_a_key_again_replaces_it() -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.95, max_entries=2)
    await index.add("org-a", "p1", FRANCE, "key")
    await index.add("org-a", "p1", GERMANY, "key")
    assert index.size == 1
    assert await index.find("org-a", "p1", FRANCE) is None
    assert_hit(await index.find("org-a", "p1", GERMANY), "key")


@both_kernels
async def test_a_failing_embedder_is_a_miss_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    index = SemanticIndex(CrashingEmbedder(), threshold=0.95)
    index._scopes.clear()
    local = SemanticIndex(LocalEmbedder(), threshold=0.95)
    await local.add("org-a", "p1", FRANCE, "key")
    index._scopes = local._scopes  # entries exist; only the new text cannot be embedded
    with caplog.at_level(logging.WARNING, logger="tokenrelay.cache"):
        assert await index.find("org-a", "p1", GERMANY) is None
        assert await index.find("org-a", "p1", "another question") is None
        await index.add("org-a", "p1", "a third", "key3")
    assert index.faults == {"crashed": 3}
    assert caplog.text.count("embedder failed") == 1


# --- Redis ---------------------------------------------------------------------------------------


@both_kernels
async def test_two_instances_share_entries_through_redis(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    first = SemanticIndex(LocalEmbedder(), threshold=0.9, redis=client, prefix=prefix)
    second = SemanticIndex(LocalEmbedder(), threshold=0.9, redis=client, prefix=prefix)
    await first.add("org-a", "p1", READ, "key-read")
    await first.add("org-a", "p1", FRANCE, "key-france")
    found = await second.find("org-a", "p1", READ_AGAIN)
    assert found is not None and found[0] == "key-read"
    assert found[1] == pytest.approx(similarity(READ, READ_AGAIN), abs=1e-5)  # float32
    assert await second.find("org-b", "p1", FRANCE) is None
    assert await second.find("org-a", "p2", FRANCE) is None
    assert await second.find("org-a", "p1", GERMANY) is None
    name = first.redis_key("org-a", "p1")
    assert name.startswith(prefix) and "org-a" not in name
    assert 0 < await client.ttl(name) <= 3600


@both_kernels
async def test_a_redis_hash_is_trimmed_to_the_bound_and_expires(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    index = SemanticIndex(
        LocalEmbedder(), threshold=0.95, max_entries=3, redis=client, prefix=prefix
    )
    questions = [f"How far is planet number {n} from the sun?" for n in range(5)]
    await index.add("org-a", "p1", "an expired question", "gone", ttl=0)
    for number, question in enumerate(questions):
        await index.add("org-a", "p1", question, f"key{number}")
    name = index.redis_key("org-a", "p1")
    assert sorted(await client.hkeys(name)) == [b"key2", b"key3", b"key4"]
    assert await index.find("org-a", "p1", questions[0]) is None
    assert_hit(await index.find("org-a", "p1", questions[4]), "key4")
    await index.add("org-a", "p1", FRANCE, "short", ttl=0)
    assert await index.find("org-a", "p1", FRANCE) is None


@both_kernels
async def test_a_torn_redis_field_is_ignored(client: redis.asyncio.Redis, prefix: str) -> None:
    index = SemanticIndex(LocalEmbedder(), threshold=0.95, redis=client, prefix=prefix)
    await index.add("org-a", "p1", FRANCE, "good")
    await client.hset(index.redis_key("org-a", "p1"), "torn", b"\x00\x01\x02")
    assert_hit(await index.find("org-a", "p1", FRANCE), "good")
    assert unpack(b"\x00" * 7) is None


def test_a_vector_survives_packing_as_float32() -> None:
    vector = unit([3.0, -4.0, 0.5])
    assert vector is not None
    unpacked = unpack(pack(vector, 12.5))
    assert unpacked is not None
    assert unpacked[0] == 12.5
    assert unpacked[1] == pytest.approx(vector, abs=1e-6)


@both_kernels
async def test_a_redis_outage_is_a_miss_and_recovers(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    made = redis.asyncio.Redis.from_url(own_redis.url, socket_timeout=0.3)
    index = SemanticIndex(LocalEmbedder(), threshold=0.95, redis=made, prefix=prefix)
    try:
        await index.add("org-a", "p1", FRANCE, "key-france")
        own_redis.stop()
        with caplog.at_level(logging.WARNING, logger="tokenrelay.cache"):
            assert await index.find("org-a", "p1", FRANCE) is None
            await index.add("org-a", "p1", GERMANY, "key-germany")
            assert await index.find("org-a", "p1", GERMANY) is None
        assert index.faults["redis"] == 3
        assert caplog.text.count("redis failed") == 1
        own_redis.start()  # empty again: nothing persisted
        await index.add("org-a", "p1", GERMANY, "key-germany")
        assert_hit(await index.find("org-a", "p1", GERMANY), "key-germany")
        assert "redis recovered" in caplog.text
    finally:
        await made.aclose()


# --- the two kernels: numpy's matrix product and the pure-Python scan ---------------------------


class ResizingEmbedder(LocalEmbedder):
    """The simulator's vectors padded with zeros to ``dimensions``: a new embedding model, when
    it changes."""

    def __init__(self, dimensions: int) -> None:
        super().__init__()
        self.dimensions = dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        padded = [vector + [0.0] * self.dimensions for vector in await super().embed(texts)]
        return [vector[: self.dimensions] for vector in padded]


def labelled_pairs() -> list[dict[str, str]]:
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "data" / "semantic_pairs.json").read_text())
    pairs: list[dict[str, str]] = data["pairs"]
    return pairs


def assert_same(numpy_found: list[Any], python_found: list[Any], *, ties: bool = False) -> None:
    """The same answers: keys, and scores equal to float32 rounding. With ``ties``, two rows
    of the same similarity (distinct vectors, equal in float64) may be chosen either way."""
    assert [f is None for f in numpy_found] == [f is None for f in python_found]
    for ours, theirs in zip(numpy_found, python_found, strict=True):
        if ours is not None:
            assert ours[1] == pytest.approx(theirs[1], abs=1e-5)
            assert ours[0] == theirs[0] or ties, (ours, theirs)


def test_the_kernel_is_numpys_unless_told_or_numpy_is_absent(kernel_name: str) -> None:
    assert SemanticIndex(LocalEmbedder(), threshold=0.9).vectorized == (kernel_name == "numpy")
    assert not SemanticIndex(LocalEmbedder(), threshold=0.9, vectorized=False).vectorized


async def test_without_numpy_the_slow_scan_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    monkeypatch.setattr(vectors, "_numpy", None)  # not looked for yet
    monkeypatch.setitem(sys.modules, "numpy", None)  # and not importable
    with caplog.at_level(logging.WARNING, logger="tokenrelay.cache"):
        first = SemanticIndex(LocalEmbedder(), threshold=0.95)
        second = SemanticIndex(LocalEmbedder(), threshold=0.95)
    assert not first.vectorized and not second.vectorized
    assert caplog.text.count("numpy is not installed") == 1
    assert "pip install 'tokenrelay[semantic]'" in caplog.text
    await first.add("org-a", "p1", FRANCE, "key-france")
    assert_hit(await first.find("org-a", "p1", FRANCE_AGAIN), "key-france")


@pytest.mark.parametrize("shared", [False, True], ids=["one-partition", "a-partition-each"])
async def test_both_kernels_answer_the_same_on_the_labelled_pairs(shared: bool) -> None:
    """Each pair's first text stored (77 rows in one partition: the matrix grows past its
    first 16), each second text looked up, at a threshold low enough to see every answer."""
    pairs = labelled_pairs()
    answers: dict[bool, list[Any]] = {}
    for vectorized in (True, False):
        index = SemanticIndex(LocalEmbedder(), threshold=0.01, vectorized=vectorized)
        assert index.vectorized == vectorized
        for number, pair in enumerate(pairs):
            await index.add("org", "all" if shared else f"p{number}", pair["a"], f"key{number}")
        answers[vectorized] = [
            await index.find("org", "all" if shared else f"p{number}", pair["b"])
            for number, pair in enumerate(pairs)
        ]
    assert_same(answers[True], answers[False])
    hits = [found is not None and found[1] >= DEFAULT_THRESHOLD for found in answers[True]]
    near_misses = [
        hit for hit, pair in zip(hits, pairs, strict=True) if pair["label"] == "near_miss"
    ]
    assert sum(near_misses) == 0


async def test_both_kernels_answer_the_same_after_eviction_replacement_and_expiry() -> None:
    questions = [f"How far is planet number {n} from the star {n % 7}?" for n in range(60)]
    answers: dict[bool, list[Any]] = {}
    for vectorized in (True, False):
        index = SemanticIndex(LocalEmbedder(), threshold=0.5, max_entries=40, vectorized=vectorized)
        for number, question in enumerate(questions):
            ttl = 0.0 if number % 9 == 0 else None  # some expire at once
            await index.add("org", f"p{number % 3}", question, f"key{number % 50}", ttl=ttl)
        assert index.size <= 40
        answers[vectorized] = [
            await index.find("org", f"p{part}", question)
            for question in questions
            for part in range(3)
        ]
    assert_same(answers[True], answers[False], ties=True)  # these questions tie often
    assert sum(found is not None for found in answers[True]) > 30


@both_kernels
async def test_vectors_of_another_size_replace_a_partitions_old_ones() -> None:
    embedder = ResizingEmbedder(256)
    index = SemanticIndex(embedder, threshold=0.95)
    await index.add("org-a", "p1", FRANCE, "key-france")
    await index.add("org-a", "p2", READ, "key-read")
    embedder.dimensions = 320
    assert await index.find("org-a", "p1", GERMANY) is None  # 320 against 256: no comparison
    await index.add("org-a", "p1", GERMANY, "key-germany")
    assert index.size == 2  # FRANCE's 256 dimensions are gone; p2 keeps its own
    assert await index.find("org-a", "p1", FRANCE) is None
    assert_hit(await index.find("org-a", "p1", GERMANY), "key-germany")


async def test_both_kernels_score_the_same_redis_hash(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    """Written by one kernel, read by both; a field of another size (another model) and a
    torn one are skipped by both."""
    writer = SemanticIndex(LocalEmbedder(), threshold=0.3, redis=client, prefix=prefix)
    pairs = labelled_pairs()[:30]
    for number, pair in enumerate(pairs):
        await writer.add("org", "p1", pair["a"], f"key{number}")
    name = writer.redis_key("org", "p1")
    small = unit(simulator_embeddings.embed(FRANCE)[:64])
    assert small is not None
    await client.hset(name, "small", pack(small, 4e9))
    await client.hset(name, "torn", b"\x00\x01\x02")
    answers: dict[bool, list[Any]] = {}
    for vectorized in (True, False):
        reader = SemanticIndex(
            LocalEmbedder(), threshold=0.3, redis=client, prefix=prefix, vectorized=vectorized
        )
        answers[vectorized] = [await reader.find("org", "p1", pair["b"]) for pair in pairs]
    assert_same(answers[True], answers[False])
    assert sum(found is not None for found in answers[True]) > 20
    assert all(found is None or found[0].startswith("key") for found in answers[True])


# --- the HTTP embedder against the simulator -----------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def pool() -> AsyncIterator[UpstreamPool]:
    made = UpstreamPool()
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.parametrize("pooled", [True, False], ids=["upstream-pool", "aiohttp"])
async def test_http_embeddings_are_the_simulators(
    simulator: RunningSimulator, pool: UpstreamPool, pooled: bool
) -> None:
    url = f"{simulator.url}/v1/embeddings"
    embedder = HttpEmbedder(url, "sim-embedding", timeout=5, pool=pool if pooled else None)
    try:
        vectors = await embedder.embed([FRANCE, GERMANY])
        again = await embedder.embed([FRANCE])  # a kept-alive connection, reused
    finally:
        await embedder.close()
    assert vectors == [simulator_embeddings.embed(FRANCE), simulator_embeddings.embed(GERMANY)]
    assert again == vectors[:1]
    assert len(vectors[0]) == simulator_embeddings.DIMENSIONS
    assert math.fsum(v * v for v in vectors[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("pooled", [True, False], ids=["upstream-pool", "aiohttp"])
@pytest.mark.parametrize(
    ("query", "kind"),
    [("ttft_ms=2000", "timeout"), ("fault=corrupt_frame", "garbage"), ("fault=500", "status")],
)
async def test_a_slow_torn_or_failing_service_is_a_typed_error(
    simulator: RunningSimulator, pool: UpstreamPool, pooled: bool, query: str, kind: str
) -> None:
    url = f"{simulator.url}/v1/embeddings?{query}"
    embedder = HttpEmbedder(url, "sim-embedding", timeout=0.3, pool=pool if pooled else None)
    try:
        with pytest.raises(EmbedderError) as raised:
            await embedder.embed([FRANCE])
    finally:
        await embedder.close()
    assert raised.value.kind == kind


@pytest.mark.parametrize("pooled", [True, False], ids=["upstream-pool", "aiohttp"])
async def test_a_service_that_is_down_is_unreachable(pool: UpstreamPool, pooled: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/embeddings"
    embedder = HttpEmbedder(url, "sim-embedding", timeout=2, pool=pool if pooled else None)
    try:
        with pytest.raises(EmbedderError) as raised:
            await embedder.embed([FRANCE])
    finally:
        await embedder.close()
    assert raised.value.kind == "unreachable"


async def test_the_api_key_is_sent_from_the_named_variable() -> None:
    guarded = await start(SimulatorSettings(ttft_ms=0, api_key="sk-embed"))
    url = f"{guarded.url}/v1/embeddings"
    try:
        keyed = build_embedder(
            semantic_settings(embeddings_url=url, embeddings_api_key_env="EMBED_KEY"),
            environ={"EMBED_KEY": "sk-embed"},
        )
        assert isinstance(keyed, HttpEmbedder)
        assert await keyed.embed([FRANCE]) == [simulator_embeddings.embed(FRANCE)]
        await keyed.close()
        keyless = build_embedder(semantic_settings(embeddings_url=url), environ={})
        assert isinstance(keyless, HttpEmbedder)
        with pytest.raises(EmbedderError) as raised:
            await keyless.embed([FRANCE])
        await keyless.close()
        assert raised.value.kind == "status"
    finally:
        await guarded.stop()
    assert guarded.stats()["last_requests"][0]["body"] == {
        "model": "sim-embedding",
        "input": [FRANCE],
    }


async def test_an_index_over_a_dead_service_misses(pool: UpstreamPool) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/embeddings"
    index = SemanticIndex(HttpEmbedder(url, "m", timeout=1, pool=pool), threshold=0.95)
    await index.add("org-a", "p1", FRANCE, "key")
    assert index.size == 0
    assert index.faults == {"unreachable": 1}


def test_the_simulator_refuses_a_request_without_input() -> None:
    from tokenrelay.model import GatewayError

    for body in (b'{"model": "m"}', b'{"input": []}', b"not json"):
        with pytest.raises(GatewayError) as raised:
            simulator_embeddings.answer(body)
        assert raised.value.status == 400
    assert b'"index":0' in simulator_embeddings.answer(b'{"input": "one text"}')


@pytest.mark.parametrize(
    ("payload", "count"),
    [
        (b"[]", 1),
        (b'{"data": [{"embedding": [1.0]}]}', 2),
        (b'{"data": [{"embedding": [1.0]}, {"embedding": [1.0, 2.0]}]}', 2),
        (b'{"data": [{"embedding": []}]}', 1),
        (b'{"data": [{"embedding": ["x"]}]}', 1),
        (b'{"data": [{"embedding": [1e999]}]}', 1),
    ],
)
def test_an_answer_that_is_not_vectors_is_garbage(payload: bytes, count: int) -> None:
    with pytest.raises(EmbedderError) as raised:
        parse_embeddings(payload, count)
    assert raised.value.kind == "garbage"


def test_answers_are_put_back_in_input_order() -> None:
    payload = b'{"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]}'
    assert parse_embeddings(payload, 2) == [[1.0], [2.0]]


# --- the entry point and build_embedder ----------------------------------------------------------


async def test_an_entry_point_embedder_is_loaded_and_bounded() -> None:
    made = build_embedder(semantic_settings(embedder="tests.test_semantic_index:make_embedder"))
    assert isinstance(made, BoundedEmbedder)
    assert isinstance(made.inner, LocalEmbedder)
    assert await made.embed([FRANCE]) == [simulator_embeddings.embed(FRANCE)]
    index = SemanticIndex(made, threshold=DEFAULT_THRESHOLD)
    await index.add("org-a", "p1", FRANCE, "key")
    assert await index.find("org-a", "p1", FRANCE_AGAIN) is not None
    await index.close()


@pytest.mark.parametrize(
    ("inner", "kind"), [(SlowEmbedder(), "timeout"), (CrashingEmbedder(), "crashed")]
)
async def test_an_operators_embedder_fails_typed(inner: Any, kind: str) -> None:
    with pytest.raises(EmbedderError) as raised:
        await BoundedEmbedder(inner, timeout=0.05).embed([FRANCE])
    assert raised.value.kind == kind


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.test_semantic_index", "must look like"),
        ("no_such_package_here:factory", "cannot import"),
        ("tests.test_semantic_index:no_such_factory", "has no"),
        ("tests.test_semantic_index:FRANCE", "not callable"),
    ],
)
def test_a_bad_entry_point_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_entry_point(spec)


def test_build_embedder_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="embeddings_url or embedder"):
        build_embedder(semantic_settings())
    with pytest.raises(ValueError, match="EMBED_KEY"):
        build_embedder(
            semantic_settings(
                embeddings_url="http://127.0.0.1:1/v1/embeddings",
                embeddings_api_key_env="EMBED_KEY",
            ),
            environ={},
        )
    with pytest.raises(ValueError, match="http"):
        build_embedder(semantic_settings(embeddings_url="ftp://example/embeddings"))
    with pytest.raises(ValueError, match="no embed"):
        build_embedder(semantic_settings(embedder="tests.test_semantic_index:make_nothing"))


# --- quality: the labelled pairs at the default threshold ----------------------------------------


async def test_the_labelled_pairs_wrong_hit_rate_stays_under_the_reported_one(
    simulator: RunningSimulator,
) -> None:
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "data" / "semantic_pairs.json").read_text())
    pairs = data["pairs"]
    assert len(pairs) >= 60
    embedder = HttpEmbedder(f"{simulator.url}/v1/embeddings", "sim-embedding", timeout=5)
    index = SemanticIndex(embedder, threshold=DEFAULT_THRESHOLD)
    hits = {"near_miss": 0, "paraphrase": 0}
    try:
        for number, pair in enumerate(pairs):
            await index.add("org", f"pair{number}", pair["a"], f"key{number}")
            found = await index.find("org", f"pair{number}", pair["b"])
            hits[pair["label"]] += found is not None
    finally:
        await index.close()
    near = sum(pair["label"] == "near_miss" for pair in pairs)
    assert hits["near_miss"] / near <= WRONG_HIT_CEILING
    assert hits["paraphrase"] / (len(pairs) - near) >= PARAPHRASE_FLOOR
