"""The semantic index's vectors and its scan for the nearest one, in two kernels.

With numpy (the ``semantic`` extra) a partition's unit vectors are one contiguous float32
matrix, and a lookup is a matrix-vector product and an argmax: about 0.02 ms over 1,000
vectors of 256 dimensions. Without it the same rows are tuples scanned in pure Python, some
hundreds of times slower, on the event loop. Both kernels hold the rows in the same order and answer
the same row; their scores agree to float32 rounding.
"""

from __future__ import annotations

import logging
import math
import operator
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatRows = npt.NDArray[np.float32]

log = logging.getLogger("tokenrelay.cache")

EXPIRY = struct.Struct("<d")  # a Redis value: the wall-clock expiry, then the float32 vector
FIRST_CAPACITY = 16  # a numpy partition's first rows; it doubles when full
# Elements per matrix-vector product: below OpenBLAS's threshold for threading one, so a lookup
# never wakes BLAS threads, which on a busy machine stall the event loop for milliseconds (p99
# 8 ms at 1,000 x 1,536 in one product, 0.15 ms in 12 of these).
PRODUCT_ELEMENTS = 1 << 17

Vector = tuple[float, ...]

_numpy: Any = None  # the numpy module once looked for, False when it is not installed


def load_numpy() -> Any | None:
    """numpy, imported on the first index built; None (said once in the log) without it."""
    global _numpy
    if _numpy is None:
        try:
            import numpy
        except ImportError:
            _numpy = False
            log.warning(
                "semantic cache: numpy is not installed, so each lookup scans its partition in "
                "pure Python on the event loop (several ms per 1,000 entries); install it with "
                "pip install 'tokenrelay[semantic]'"
            )
        else:
            _numpy = numpy
    return _numpy or None


def unit(vector: Sequence[float]) -> Vector | None:
    """``vector`` scaled to length 1, or None when it has no direction (zero, NaN, infinite)."""
    norm = math.sqrt(math.fsum(value * value for value in vector))
    if not norm or not math.isfinite(norm):
        return None
    return tuple(value / norm for value in vector)


def cosine(a: Vector, b: Vector) -> float:
    """The cosine similarity of two unit vectors (0 when their sizes differ: another model)."""
    if len(a) != len(b):
        return 0.0
    return float(sum(map(operator.mul, a, b)))


def pack(vector: Sequence[float], expires: float) -> bytes:
    """A Redis field's value: the wall-clock expiry, then the vector as little-endian float32."""
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return EXPIRY.pack(expires) + values.tobytes()


def unpack(value: bytes) -> tuple[float, Vector] | None:
    """The expiry and the (re-normalized) vector of a Redis field, or None if it is torn."""
    if len(value) < EXPIRY.size + 4 or (len(value) - EXPIRY.size) % 4:
        return None
    (expires,) = EXPIRY.unpack_from(value)
    values = array("f")
    values.frombytes(value[EXPIRY.size :])
    if sys.byteorder == "big":
        values.byteswap()
    vector = unit(values)  # float32 rounding: back to length 1 exactly
    return None if vector is None else (expires, vector)


def expiry(value: bytes) -> float:
    """The expiry of a Redis field's value (0, long past, when it is torn)."""
    return EXPIRY.unpack_from(value)[0] if len(value) >= EXPIRY.size else 0.0


class Matrix(Protocol):
    """A partition's unit vectors, row by row; ``dimensions`` is 0 while it is empty."""

    dimensions: int

    def append(self, vector: Any) -> None: ...
    def replace(self, row: int, vector: Any) -> None: ...
    def move(self, source: int, target: int) -> None: ...
    def truncate(self, count: int) -> None: ...
    def best(self, query: Any) -> tuple[int, float]: ...


class Kernel(Protocol):
    """How vectors are held and scored: ``vector`` gives a query in the kernel's own form."""

    vectorized: bool

    def vector(self, values: Sequence[float]) -> Any | None: ...
    def matrix(self) -> Matrix: ...
    def pack(self, vector: Any, expires: float) -> bytes: ...
    def redis_best(
        self, values: list[bytes], query: Any, now: float, limit: int
    ) -> tuple[int, float] | None: ...


# pure Python


class PythonMatrix:
    __slots__ = ("dimensions", "rows")

    def __init__(self) -> None:
        self.dimensions = 0
        self.rows: list[Vector] = []

    def append(self, vector: Vector) -> None:
        self.dimensions = len(vector)
        self.rows.append(vector)

    def replace(self, row: int, vector: Vector) -> None:
        self.rows[row] = vector

    def move(self, source: int, target: int) -> None:
        self.rows[target] = self.rows[source]

    def truncate(self, count: int) -> None:
        del self.rows[count:]
        if not count:
            self.dimensions = 0

    def best(self, query: Vector) -> tuple[int, float]:
        scores = [sum(map(operator.mul, query, row)) for row in self.rows]
        top = max(scores)
        return scores.index(top), float(top)


class PythonKernel:
    """Tuples and a loop: no dependency, several ms per 1,000 rows of 256 dimensions."""

    vectorized = False

    def vector(self, values: Sequence[float]) -> Vector | None:
        return unit(values)

    def matrix(self) -> PythonMatrix:
        return PythonMatrix()

    def pack(self, vector: Vector, expires: float) -> bytes:
        return pack(vector, expires)

    def redis_best(
        self, values: list[bytes], query: Vector, now: float, limit: int
    ) -> tuple[int, float] | None:
        size = EXPIRY.size + 4 * len(query)
        best_row, best, live = -1, -math.inf, 0
        for row, value in enumerate(values):
            if len(value) != size or expiry(value) <= now:
                continue
            live += 1
            entry = unpack(value)
            if entry is not None:
                score = sum(map(operator.mul, query, entry[1]))
                if score > best:
                    best_row, best = row, score
            if live >= limit:
                break
        return None if best_row < 0 else (best_row, float(best))


# numpy


class NumpyMatrix:
    """Rows of one contiguous float32 matrix, doubled when full."""

    __slots__ = ("count", "data", "dimensions", "np")

    def __init__(self, np: Any) -> None:
        self.np = np
        self.dimensions = 0
        self.count = 0
        self.data: FloatRows = np.empty((0, 0), dtype=np.float32)

    def append(self, vector: FloatRows) -> None:
        if self.count == len(self.data) or self.dimensions != len(vector):
            capacity = max(FIRST_CAPACITY, 2 * self.count)
            grown = self.np.empty((capacity, len(vector)), dtype=self.np.float32)
            if self.count:
                grown[: self.count] = self.data[: self.count]
            self.data = grown
            self.dimensions = len(vector)
        self.data[self.count] = vector
        self.count += 1

    def replace(self, row: int, vector: FloatRows) -> None:
        self.data[row] = vector

    def move(self, source: int, target: int) -> None:
        self.data[target] = self.data[source]

    def truncate(self, count: int) -> None:
        self.count = count
        if not count:
            self.dimensions = 0

    def best(self, query: FloatRows) -> tuple[int, float]:
        scores = products(self.np, self.data[: self.count], query)
        row = int(scores.argmax())
        return row, float(scores[row])


def products(np: Any, rows: FloatRows, query: FloatRows) -> FloatRows:
    """``rows @ query``, in slices of at most ``PRODUCT_ELEMENTS`` (single-threaded BLAS)."""
    step = max(1, PRODUCT_ELEMENTS // max(1, rows.shape[1]))
    if len(rows) <= step:
        result: FloatRows = rows @ query
        return result
    scores: FloatRows = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), step):
        np.matmul(rows[start : start + step], query, out=scores[start : start + step])
    return scores


class NumpyKernel:
    """One matrix-vector product per lookup, on float32 unit vectors."""

    vectorized = True

    def __init__(self, np: Any) -> None:
        self.np = np

    def vector(self, values: Sequence[float]) -> FloatRows | None:
        as_float = self.np.asarray(values, dtype=self.np.float64)
        norm = float(self.np.sqrt(as_float @ as_float))
        if as_float.ndim != 1 or not norm or not math.isfinite(norm):
            return None
        result: FloatRows = (as_float / norm).astype(self.np.float32)
        return result

    def matrix(self) -> NumpyMatrix:
        return NumpyMatrix(self.np)

    def pack(self, vector: FloatRows, expires: float) -> bytes:
        return EXPIRY.pack(expires) + vector.astype("<f4").tobytes()

    def redis_best(
        self, values: list[bytes], query: FloatRows, now: float, limit: int
    ) -> tuple[int, float] | None:
        """Decode the fields of the query's size into one matrix, then score it in one product."""
        np = self.np
        size = EXPIRY.size + 4 * len(query)
        rows = [row for row, value in enumerate(values) if len(value) == size]
        if not rows:
            return None
        layout = np.dtype([("expires", "<f8"), ("vector", "<f4", (len(query),))])
        fields = np.frombuffer(b"".join([values[row] for row in rows]), dtype=layout)
        live = np.flatnonzero(fields["expires"] > now)[:limit]
        if not live.size:
            return None
        vectors = fields["vector"][live].astype(np.float32)  # contiguous, native order
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = products(np, vectors, query) / norms
        scores[~np.isfinite(scores)] = -np.inf  # no direction (zero, NaN): never the nearest
        best = int(scores.argmax())
        if not math.isfinite(scores[best]):
            return None
        return rows[int(live[best])], float(scores[best])


def kernel(vectorized: bool = True) -> Kernel:
    """numpy's kernel when ``vectorized`` and numpy is installed, else the pure-Python one."""
    np = load_numpy() if vectorized else None
    return PythonKernel() if np is None else NumpyKernel(np)
