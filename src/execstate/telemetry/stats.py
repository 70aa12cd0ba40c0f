"""Plain counters and latency samples written by the pipeline thread.

Entry points: `PipelineStats`, `LatencySamples.add(ns)`, `.percentiles()`.

Invariants: counters are plain ints written by one thread (no locks on the hot path);
readers (metrics exposition, `status`) read them as they are. Latency samples are a
bounded ring (the most recent `capacity` samples), never a list that grows forever.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field


class LatencySamples:
    """A fixed-size ring of int64 nanosecond samples."""

    __slots__ = ("_buf", "_n", "capacity")

    def __init__(self, capacity: int = 1 << 20) -> None:
        self._buf = array("q", bytes(8 * capacity))
        self._n = 0
        self.capacity = capacity

    def add(self, ns: int) -> None:
        self._buf[self._n % self.capacity] = ns
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def values(self) -> list[int]:
        return sorted(self._buf[: len(self)])

    def percentiles(self, *qs: float) -> list[int]:
        """Nearest-rank percentiles (q in 0..100) of the kept samples; [] when empty."""
        data = self.values()
        if not data:
            return []
        last = len(data) - 1
        return [data[min(last, max(0, round(q / 100 * last)))] for q in qs]


@dataclass(slots=True)
class PipelineStats:
    """Counts of what the pipeline saw; see `contracts/execution.md` for each meaning."""

    raw_events: int = 0
    orders: int = 0
    fills: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    deals_before_order: int = 0
    unexpected_transitions: int = 0
    late_events: int = 0
    order_failures: int = 0
    overfills: int = 0
    deltas: int = 0
    corrections: int = 0
    subscriber_errors: int = 0
    journal_lines: int = 0
    latency_ns: LatencySamples = field(default_factory=LatencySamples)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "latency_ns"}  # type: ignore[attr-defined]
