"""A Prometheus text writer (exposition format 0.0.4): counters, gauges and histograms keyed by
label tuples, their rendering, and the merge of other workers' snapshots into one page.

Why not ``prometheus_client``: importing it costs about 85 ms (it brings ``http.server`` and
``wsgiref`` along for exposition servers we would never start), against a cold-start budget of
300 ms from spawn to first token. What is needed is small: HELP and TYPE lines, escaped label
values, cumulative ``_bucket`` lines ending in ``+Inf``, ``_sum`` and ``_count``. This module is
that, with no import beyond the standard library, and knows nothing of the gateway (what the
gateway counts is ``observe.metrics``).

A child (one label set) is made once and kept: its label text is formatted when it is created,
so updating it is an addition. A label whose value is empty is left out of the line, which
Prometheus reads as the same thing.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tokenrelay.observe.snapshots import Others

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers exactly; floats in their shortest round-trip form; infinities as the format
    spells them."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def format_scaled(value: int, digits: int) -> str:
    """``value / 10**digits`` as an exact decimal string (nanodollars as dollars): a float sum
    of many small costs would drift, so the sum is kept in integers and divided only here."""
    whole, frac = divmod(value, 10**digits)
    return f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".") if frac else str(whole)


def label_text(names: Sequence[str], values: Labels, extra: str = "") -> str:
    """``{a="x",b="y"}`` for the non-empty values, plus ``extra`` (a bucket's ``le``)."""
    pairs = [f'{name}="{escape_label(value)}"' for name, value in zip(names, values, strict=True)]
    pairs = [pair for pair, value in zip(pairs, values, strict=True) if value]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class Value:
    """A counter's or a gauge's value for one label set; its label text is made once."""

    __slots__ = ("labels", "value")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.value: float = 0


class HistogramChild:
    """One label set's histogram: a count per bucket (not cumulative: one increment per
    observation) and the sum; cumulated only when rendered."""

    __slots__ = ("bounds", "counts", "lines", "sum", "tail")

    def __init__(self, bounds: tuple[float, ...], lines: list[str], tail: tuple[str, str]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.lines = lines  # each bucket's line up to its value
        self.tail = tail  # the _sum and _count lines up to their value

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, so a value equal to a bound counts in it (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Metric:
    """A metric family: its name, help, type and label names, and one child per label tuple
    (the dict is the cache: asking for the same labels again returns the same child)."""

    kind = "untyped"
    # Across workers: "sum" over every snapshot (counters, histograms; gauges over live workers
    # only), "max" over live workers, or "own": this process's value alone.
    merge: Literal["sum", "max", "own"] = "sum"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def dump(self) -> list[Any]:
        """The children as plain data for a snapshot: ``[labels, value...]`` each."""
        raise NotImplementedError  # abstract: _Scalar and Histogram implement it

    def merged(self, dumps: Iterable[list[Any]]) -> Metric:
        """A copy of this family with other workers' dumps added to its children."""
        raise NotImplementedError  # abstract: _Scalar and Histogram implement it

    def header(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")

    def render(self, out: list[str]) -> None:
        """The family's sample lines; every kind of metric writes its own."""
        raise NotImplementedError  # abstract: _Scalar and Histogram implement it


class _Scalar(Metric):
    """One number per label set. ``digits``: the value is kept as an integer and shown divided
    by ``10**digits`` (exact money)."""

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, digits: int = 0
    ) -> None:
        super().__init__(name, help, labelnames)
        self.digits = digits
        self.children: dict[Labels, Value] = {}

    def labels(self, *values: str) -> Value:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Value(label_text(self.labelnames, values))
        return child

    def dump(self) -> list[Any]:
        return [[labels, child.value] for labels, child in self.children.items()]

    def merged(self, dumps: Iterable[list[Any]]) -> _Scalar:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        children: dict[Labels, Value] = {}
        for labels, child in self.children.items():
            children[labels] = mine = Value(child.labels)
            mine.value = child.value
        take_max = self.merge == "max"
        for dump in dumps:
            for raw, number in dump:
                labels = tuple(raw)
                found = children.get(labels)
                if found is None:
                    children[labels] = found = Value(label_text(self.labelnames, labels))
                    found.value = number
                elif take_max:
                    found.value = max(found.value, number)
                else:
                    found.value += number
        copy.children = children
        return copy

    def render(self, out: list[str]) -> None:
        self.header(out)
        name, digits = self.name, self.digits
        for child in self.children.values():
            value = child.value
            text = format_scaled(int(value), digits) if digits else format_value(value)
            out.append(f"{name}{child.labels} {text}")


class Counter(_Scalar):
    """A monotonic count. Its value may also be *set* at scrape time from a counter another
    object keeps (the ledger's rows written), which is monotonic as well."""

    kind = "counter"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, digits: int = 0
    ) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, help, labelnames, digits=digits)

    def inc(self, *values: str, amount: float = 1) -> None:
        self.labels(*values).value += amount


class Gauge(_Scalar):
    """A value that goes up and down; here mostly set at scrape time."""

    kind = "gauge"

    def set(self, *values: str, value: float) -> None:
        self.labels(*values).value = value


class Histogram(Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str], buckets: Iterable[float]
    ) -> None:
        super().__init__(name, help, labelnames)
        # Kept as given (integer bounds stay integers: a token count is bisected faster
        # among ints than among floats), shown as floats.
        self.bounds = tuple(sorted(buckets))
        if not self.bounds or any(math.isinf(bound) for bound in self.bounds):
            raise ValueError("give finite bucket bounds; +Inf is always added")
        self._le = [f'le="{format_value(float(bound))}"' for bound in self.bounds]
        self._le.append('le="+Inf"')
        self.children: dict[Labels, HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        child = self.children.get(values)
        if child is None:
            names, name = self.labelnames, self.name
            lines = [f"{name}_bucket{label_text(names, values, le)} " for le in self._le]
            plain = label_text(names, values)
            tail = (f"{name}_sum{plain} ", f"{name}_count{plain} ")
            child = self.children[values] = HistogramChild(self.bounds, lines, tail)
        return child

    def observe(self, *values: str, value: float) -> None:
        self.labels(*values).observe(value)

    def dump(self) -> list[Any]:
        return [[labels, child.counts, child.sum] for labels, child in self.children.items()]

    def merged(self, dumps: Iterable[list[Any]]) -> Histogram:
        copy = object.__new__(Histogram)
        copy.__dict__.update(self.__dict__)
        copy.children = children = {}
        for labels, child in self.children.items():  # the lines' text is reused as it is
            mine = children[labels] = HistogramChild(child.bounds, child.lines, child.tail)
            mine.counts, mine.sum = list(child.counts), child.sum
        width = len(self.bounds) + 1
        for dump in dumps:
            for raw, counts, total in dump:
                if len(counts) != width:
                    continue  # another version's buckets: cannot be added
                labels = tuple(raw)
                found = children.get(labels)
                if found is None:
                    found = copy.labels(*labels)
                mine_counts = found.counts
                for index, count in enumerate(counts):
                    mine_counts[index] += count
                found.sum += total
        return copy

    def render(self, out: list[str]) -> None:
        self.header(out)
        for child in self.children.values():
            total = 0
            for line, count in zip(child.lines, child.counts, strict=True):
                total += count
                out.append(f"{line}{total}")
            out.append(f"{child.tail[0]}{format_value(child.sum)}")
            out.append(f"{child.tail[1]}{total}")


def render(metrics: Iterable[Metric]) -> bytes:
    out: list[str] = []
    for metric in metrics:
        metric.render(out)
    out.append("")
    return "\n".join(out).encode()


def merge(families: Iterable[Metric], others: Others) -> list[Metric]:
    """This worker's families with the other workers' snapshots added: counters and histograms
    summed over every worker that ever wrote (a worker that died keeps its counts), gauges over
    the live ones, ``max`` families at their largest, ``own`` families left as they are."""
    merged: list[Metric] = []
    for family in families:
        if family.merge == "own":
            merged.append(family)
            continue
        summed_ever = family.merge == "sum" and not isinstance(family, Gauge)
        dumps = (others.every if summed_ever else others.live).get(family.name, [])
        merged.append(family.merged(dumps))
    return merged
