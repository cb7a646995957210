"""The semantic cache's quality on the labelled pairs, and the cost of a lookup.

    PYTHONPATH=src .venv/bin/python bench/semantic_quality.py [--http] [--timing]

Quality: each pair of ``tests/data/semantic_pairs.json`` is embedded by the simulator's
deterministic embedder (``tokenrelay.simulator_embeddings``; with ``--http``, over real HTTP
from a simulator on loopback through ``HttpEmbedder``, which gives the same numbers) and, at
thresholds 0.80 to 0.99, counted as a hit when the cosine similarity reaches the threshold:
the wrong-hit rate (near misses that hit: a wrong answer served) and the paraphrase hit rate
(the saving). Then, at the recommended threshold, both per kind of pair, and the near misses
that came closest. With ``--timing``: ``SemanticIndex.find`` on a warm vector over 100 and
1,000 entries of one partition, at 256 and 1,536 dimensions, with numpy and in pure Python
(``vectorized=False``), p50 and p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import msgspec

from tokenrelay.cache.semantic import DEFAULT_THRESHOLD, SemanticIndex, cosine, unit
from tokenrelay.simulator_embeddings import embed

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "semantic_pairs.json"
THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)


class Pair(msgspec.Struct):
    label: str
    kind: str
    a: str
    b: str


class _File(msgspec.Struct):
    pairs: list[Pair]


def load_pairs() -> list[Pair]:
    return msgspec.json.decode(PAIRS.read_bytes(), type=_File).pairs


async def similarities(pairs: list[Pair], over_http: bool) -> list[float]:
    """The cosine similarity of each pair, in order."""
    if not over_http:
        return [cosine(_unit(embed(p.a)), _unit(embed(p.b))) for p in pairs]
    from tokenrelay.cache.embedders import HttpEmbedder
    from tokenrelay.simulator import SimulatorSettings, start

    simulator = await start(SimulatorSettings(ttft_ms=0))
    embedder = HttpEmbedder(f"{simulator.url}/v1/embeddings", "sim-embedding", timeout=10)
    try:
        vectors = await embedder.embed([text for p in pairs for text in (p.a, p.b)])
    finally:
        await embedder.close()
        await simulator.stop()
    return [cosine(_unit(a), _unit(b)) for a, b in zip(vectors[::2], vectors[1::2], strict=True)]


def _unit(vector: list[float]) -> tuple[float, ...]:
    return unit(vector) or (0.0,) * len(vector)


def rates(pairs: list[Pair], scores: list[float], threshold: float) -> tuple[float, float]:
    """(wrong-hit rate over the near misses, hit rate over the paraphrases) at ``threshold``."""
    wrong = [s >= threshold for p, s in zip(pairs, scores, strict=True) if p.label == "near_miss"]
    right = [s >= threshold for p, s in zip(pairs, scores, strict=True) if p.label == "paraphrase"]
    return sum(wrong) / len(wrong), sum(right) / len(right)


def report(pairs: list[Pair], scores: list[float], recommended: float) -> None:
    near = sum(p.label == "near_miss" for p in pairs)
    print(f"{len(pairs)} pairs: {len(pairs) - near} paraphrases, {near} near misses\n")
    print("threshold  wrong hits (near misses that hit)  paraphrase hits")
    for threshold in THRESHOLDS:
        wrong, right = rates(pairs, scores, threshold)
        mark = "  <- default" if threshold == recommended else ""
        print(f"  {threshold:.2f}     {wrong:6.1%}                            {right:6.1%}{mark}")
    print(f"\nby kind at {recommended:.2f} (hits / pairs, mean similarity):")
    kinds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for pair, score in zip(pairs, scores, strict=True):
        kinds[(pair.label, pair.kind)].append(score)
    for (label, kind), found in sorted(kinds.items()):
        hits = sum(s >= recommended for s in found)
        print(f"  {label:10} {kind:10} {hits:2}/{len(found):2}  {statistics.fmean(found):.3f}")
    print("\nclosest near misses:")
    near_misses = [(s, p) for p, s in zip(pairs, scores, strict=True) if p.label == "near_miss"]
    for score, pair in sorted(near_misses, key=lambda item: -item[0])[:5]:
        print(f"  {score:.3f}  {pair.a!r} / {pair.b!r}")


class _Fixed:
    """An embedder answering one stored random vector per text (timing only)."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.rng = random.Random(7)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [[self.rng.gauss(0, 1) for _ in range(self.dimensions)] for _ in texts]


async def timing(rounds: int = 200) -> None:
    print("\nSemanticIndex.find in memory, one partition, warm vector (p50 / p99 ms):")
    print("  entries  dimensions      numpy            pure Python")
    for entries in (100, 1000):
        for dimensions in (256, 1536):
            cells = []
            for vectorized in (True, False):
                p50, p99 = await _time_find(entries, dimensions, vectorized, rounds)
                cells.append(f"{p50:6.3f} / {p99:6.3f}")
            print(f"  {entries:7} {dimensions:11}   {cells[0]}   {cells[1]}")


async def _time_find(
    entries: int, dimensions: int, vectorized: bool, rounds: int
) -> tuple[float, float]:
    index = SemanticIndex(
        _Fixed(dimensions), threshold=0.95, max_entries=entries, vectorized=vectorized
    )
    if vectorized and not index.vectorized:
        raise SystemExit("numpy is not installed: pip install 'tokenrelay[semantic]'")
    for number in range(entries):
        await index.add("org", "part", f"stored {number}", f"key{number}")
    await index.find("org", "part", "the question")  # embeds it once; then it is warm
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        await index.find("org", "part", "the question")
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return took[len(took) // 2], took[int(len(took) * 0.99)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="embed over HTTP from a simulator")
    parser.add_argument(
        "--timing", action="store_true", help="also time find() (numpy and pure Python)"
    )
    args = parser.parse_args()
    pairs = load_pairs()
    scores = await similarities(pairs, args.http)
    report(pairs, scores, DEFAULT_THRESHOLD)
    if args.timing:
        await timing()


if __name__ == "__main__":
    asyncio.run(main())
