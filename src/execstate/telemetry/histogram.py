"""A bucket histogram cheap enough for the pipeline's hot path.

Entry points: `BucketHistogram(bounds)`, `.observe(value)`, `.snapshot()`; default bounds
`LATENCY_MS_BOUNDS` (callback -> visible, ms) and `RECONCILE_MS_BOUNDS` (one check, ms).

Invariants: one writer thread, no locks. `observe` is a `bisect_left` on a tuple of upper
bounds, one list increment and one add to the sum: a value equal to a bound counts in that
bound's bucket, as Prometheus' `le` says (`bisect_right` would put it in the next one).
Readers on other threads copy the bucket list in one C call, so the buckets and the count
of a snapshot agree; the sum is read separately and may hold an observation more or less
(a slightly torn read, harmless for rates and quantiles). Counts only grow.

Cost (bench on the project's machine class, CPython 3.11): ~140 ns per `observe` against
~710 ns for `prometheus_client.Histogram.observe` (which takes a lock and scans the bounds).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

# Callback -> visible-to-readers latency, in ms: the promise is 10 ms.
LATENCY_MS_BOUNDS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000)
# One reconciliation, in ms: the default deadline is 10 s.
RECONCILE_MS_BOUNDS: tuple[float, ...] = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)

Snapshot = tuple[list[tuple[float, int]], float, int]


class BucketHistogram:
    """Counts per upper bound (plus +Inf) and a sum, written by one thread."""

    __slots__ = ("bounds", "_counts", "_sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        """`bounds`: finite, strictly increasing upper bounds (+Inf is implied)."""
        self.bounds = tuple(float(b) for b in bounds)
        if not self.bounds or not all(math.isfinite(b) for b in self.bounds):
            raise ValueError(f"bounds must be finite, at least one: {self.bounds}")
        if any(a >= b for a, b in zip(self.bounds, self.bounds[1:])):
            raise ValueError(f"bounds must be strictly increasing: {self.bounds}")
        self._counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value. Call from the one writer thread."""
        self._counts[bisect_left(self.bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> Snapshot:
        """(cumulative [(le, count), ..., (inf, count)], sum, count)."""
        counts = self._counts.copy()  # one C call: the buckets and the count agree
        total = self._sum
        out: list[tuple[float, int]] = []
        running = 0
        for le, n in zip((*self.bounds, math.inf), counts):
            running += n
            out.append((le, running))
        return out, total, running

    @property
    def count(self) -> int:
        return sum(self._counts)
