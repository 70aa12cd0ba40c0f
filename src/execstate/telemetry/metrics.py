"""Prometheus exposition: plain values read at scrape time, served on loopback.

Entry points: `MetricSources` (what to read), `ExecstateCollector(sources)` (a
prometheus_client custom collector), `ReconcileMetrics(deadline_ms, budget_ms=None).record(result)`,
`registry_for(sources)`. The HTTP server that serves the registry (`/metrics`, loopback only)
is `telemetry.http.start_server`.

Invariants:
- Nothing here runs on the pipeline thread: the collector reads `PipelineStats` ints, the
  latency `BucketHistogram` and the other sources when Prometheus scrapes. The only hot-path
  cost is the histogram's `observe`.
- A source that is None (or a callable returning None) is left out; one that raises (or returns something unreadable) is
  logged at debug and its families are left out. A scrape never fails because of a source,
  and a family is yielded only once it is complete.
- Counters come from monotonic ints (pipeline, gateway and recorder counters; the
  `ReconcileMetrics` accumulator), so they only grow for the life of the process.
- Position and PnL gauges are summed per (account, strategy) from the store's lock-free view
  at scrape time, never per symbol (bounded cardinality).
- One registry per service (`registry_for`), never prometheus_client's global one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from execstate.telemetry import names as n
from execstate.telemetry.histogram import RECONCILE_MS_BOUNDS, BucketHistogram
from execstate.telemetry.logging import get_logger
from execstate.telemetry.stats import PipelineStats

log = get_logger("execstate.metrics")

# execution_events_total{type}: label -> PipelineStats attribute
EVENT_TYPES: tuple[tuple[str, str], ...] = (
    ("order", "orders"), ("fill", "fills"), ("duplicate", "duplicates"), ("dead_letter", "dead_letters"),
    ("correction", "corrections"), ("late", "late_events"), ("unexpected_transition", "unexpected_transitions"),
    ("order_failure", "order_failures"), ("overfill", "overfills"), ("deal_before_order", "deals_before_order"),
)
MISMATCH_KINDS: tuple[str, ...] = ("quantity", "missing_ours", "missing_broker", "pnl")  # Discrepancy.kind, and PnL discrepancies
CONNECTION_STATES: tuple[str, ...] = ("up", "reconnecting", "down", "unknown")  # ConnectionState values
OPENING_REASON = "startup"  # the reason the service gives its opening check

_CALLABLE_SOURCES = frozenset({"heartbeat", "orders_working", "halt", "gateway_stats", "recorder_stats", "raw_queue_depth",
                               "positions", "alerts"})


@dataclass
class MetricSources:
    """What the collector reads; every field is optional (None: those metrics are left out).

    `stats`, `latency` (ms) and `reconcile` are objects read as they are; the others are
    called once per scrape. `clock` gives wall time in ns for `callback_gap_seconds`.
    """

    stats: PipelineStats | None = None
    latency: BucketHistogram | None = None
    heartbeat: Callable[[], Any] | None = None  # -> Heartbeat (last_callback_ns, connection, ..., queue_depth)
    orders_working: Callable[[], int] | None = None
    halt: Callable[[], Any] | None = None  # -> HaltStatus-like with .halted
    reconcile: ReconcileMetrics | None = None
    gateway_stats: Callable[[], Any] | None = None  # -> GatewayStats (in_window, bans)
    recorder_stats: Callable[[], Mapping[str, Any]] | None = None  # -> Recorder.stats()
    raw_queue_depth: Callable[[], int] | None = None  # None: the heartbeat's queue_depth
    positions: Callable[[], Any] | None = None  # -> PositionSnapshot-like: .positions of records (account, strategy, quantity, PnL...)
    alerts: Callable[[], Mapping[str, int]] | None = None  # -> rules firing per alert name (AlertEvaluator.firing_by_name)
    clock: Callable[[], int] = time.time_ns


@dataclass(frozen=True)
class ReconcileSnapshot:
    """Plain copies of `ReconcileMetrics`, taken under its lock."""

    checks: int
    mismatches: dict[str, int]
    corrections: int
    failures: int
    last_mismatch_quantity: int
    duration_buckets: list[tuple[float, int]]
    duration_sum_ms: float
    over_budget: int = 0  # checks that errored or took longer than `budget_ms` (not exposed: the in-process RecoverySlow alert)
    last_duration_ms: float = 0.0
    pnl_mismatch_twd: dict[str, float] = field(default_factory=dict)  # per account, from its last check of all symbols


class ReconcileMetrics:
    """Accumulates reconciliation results for exposition.

    Wire `record` into the reconciler's `on_result` (it runs on whichever thread ran the
    check, so it takes a lock; it is not on the hot path). A failure is a check that
    errored or ran past `deadline_ms`. The opening check (reason `OPENING_REASON`, unless
    `opening` says otherwise) counts in duration and failures only: its differences are
    positions carried from before today, not mismatches. `budget_ms` (default: the deadline)
    is the recovery budget of the in-process alerts: checks that errored or took longer count
    in `over_budget`.

    PnL: each `pnl_discrepancies` entry counts as a mismatch of kind "pnl" (the opening check's
    too: a PnL difference on a position both sides already hold is never a carried position),
    and `pnl_max_diff_twd` sets the account's `reconciliation_pnl_mismatch_twd` (a check of a
    few symbols leaves it: it sets none).
    """

    def __init__(self, deadline_ms: float, bounds: Iterable[float] = RECONCILE_MS_BOUNDS, budget_ms: float | None = None) -> None:
        self.deadline_ms = deadline_ms
        self.budget_ms = deadline_ms if budget_ms is None else budget_ms
        self._lock = threading.Lock()
        self._duration = BucketHistogram(bounds)
        self._mismatches = dict.fromkeys(MISMATCH_KINDS, 0)
        self._checks = self._corrections = self._failures = self._last_mismatch = self._over_budget = 0
        self._last_duration_ms = 0.0
        self._pnl_mismatch: dict[str, float] = {}

    def record(self, result: Any, *, opening: bool | None = None) -> None:
        """Count one `ReconcileResult`."""
        if opening is None:
            opening = result.reason == OPENING_REASON
        with self._lock:
            self._checks += 1
            self._duration.observe(result.duration_ms)
            self._last_duration_ms = result.duration_ms
            if result.error or result.duration_ms > self.deadline_ms:
                self._failures += 1
            if result.error or result.duration_ms > self.budget_ms:
                self._over_budget += 1
            if result.error:
                return  # nothing compared
            pnl = getattr(result, "pnl_discrepancies", ())
            self._mismatches["pnl"] += len(pnl)
            for account, diff in getattr(result, "pnl_max_diff_twd", {}).items():
                self._pnl_mismatch[account] = float(diff)
            if opening:
                return  # quantity differences at the opening are carried positions
            for d in result.discrepancies:
                self._mismatches[d.kind] = self._mismatches.get(d.kind, 0) + 1
            self._corrections += len(result.corrections)
            self._last_mismatch = max((abs(d.broker - d.ours) for d in result.discrepancies), default=0)

    def snapshot(self) -> ReconcileSnapshot:
        with self._lock:
            buckets, total, _ = self._duration.snapshot()
            return ReconcileSnapshot(self._checks, dict(self._mismatches), self._corrections, self._failures,
                                     self._last_mismatch, buckets, total, self._over_budget, self._last_duration_ms,
                                     dict(self._pnl_mismatch))


class _Missing(Exception):
    """A source is not configured, or failed (already logged)."""


class ExecstateCollector(Collector):
    """Yields execstate's metric families from `MetricSources` at each scrape."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        cache: dict[str, Any] = {}

        def value(name: str) -> Any:
            """The source's value for this scrape (called at most once), or raise `_Missing`."""
            if name not in cache:
                cache[name] = self._read(name)
            if cache[name] is _MISSING:
                raise _Missing(name)
            return cache[name]

        for build in _BUILDERS:
            try:
                families = list(build(value, self.sources))
            except _Missing:
                continue
            except Exception as exc:  # unreadable values: leave these families out of this scrape
                log.debug("metrics_family_skipped", family=build.__name__, error=repr(exc))
                continue
            yield from families

    def _read(self, name: str) -> Any:
        source = getattr(self.sources, name)
        if source is None:
            return _MISSING
        if name not in _CALLABLE_SOURCES:
            return source
        try:
            result = source()
        except Exception as exc:
            log.debug("metrics_source_failed", source=name, error=repr(exc))
            return _MISSING
        return _MISSING if result is None else result  # None: not there (yet), e.g. no recorder


_MISSING = object()
Value = Callable[[str], Any]


def _optional(value: Value, name: str) -> Any:
    try:
        return value(name)
    except _Missing:
        return None


def _events(value: Value, _src: MetricSources) -> Iterator[Metric]:
    stats = value("stats")
    fam = CounterMetricFamily(n.EXECUTION_EVENTS_TOTAL, "Execution events seen by the pipeline, by type.", labels=["type"])
    for label, attr in EVENT_TYPES:
        fam.add_metric([label], int(getattr(stats, attr)))
    yield fam


def _histogram(name: str, doc: str, buckets: list[tuple[float, int]], total: float) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=[(floatToGoString(le), count) for le, count in buckets], sum_value=total)


def _latency(value: Value, _src: MetricSources) -> Iterator[Metric]:
    buckets, total, _ = value("latency").snapshot()
    yield _histogram(n.POSITION_DELTA_LATENCY_MS, "Order callback to position delta visible to readers, ms.", buckets, total)


def _connection(value: Value, src: MetricSources) -> Iterator[Metric]:
    hb = value("heartbeat")
    last = int(hb.last_callback_ns)
    gap = max(0.0, (src.clock() - last) / 1e9) if last else 0.0
    yield GaugeMetricFamily(n.CALLBACK_GAP_SECONDS, "Seconds since the last order callback (0 before the first).", value=gap)
    state = str(getattr(hb.connection, "value", hb.connection))
    yield GaugeMetricFamily(n.CONNECTION_UP, "1 when the Shioaji session is up.", value=1 if state == "up" else 0)
    fam = GaugeMetricFamily(n.CONNECTION_STATE, "Shioaji session state (1 for the current one).", labels=["state"])
    for known in (*CONNECTION_STATES, *(() if state in CONNECTION_STATES else (state,))):
        fam.add_metric([known], 1 if known == state else 0)
    yield fam


def _orders_working(value: Value, _src: MetricSources) -> Iterator[Metric]:
    yield GaugeMetricFamily(n.ORDERS_WORKING, "Orders that may still fill.", value=int(value("orders_working")))


def _halt(value: Value, _src: MetricSources) -> Iterator[Metric]:
    yield GaugeMetricFamily(n.HALT_STATE, "1 while HALTed.", value=1 if value("halt").halted else 0)


def _reconcile(value: Value, _src: MetricSources) -> Iterator[Metric]:
    snap: ReconcileSnapshot = value("reconcile").snapshot()
    yield _histogram(n.RECONCILIATION_DURATION_MS, "Duration of one reconciliation, ms.", snap.duration_buckets, snap.duration_sum_ms)
    fam = CounterMetricFamily(n.RECONCILIATION_MISMATCHES_TOTAL, "Differences from the broker found by checks, by kind.", labels=["kind"])
    for kind, count in snap.mismatches.items():
        fam.add_metric([kind], count)
    yield fam
    yield CounterMetricFamily(n.RECONCILIATION_CORRECTIONS_TOTAL, "Correcting events submitted by reconciliation.", value=snap.corrections)
    yield GaugeMetricFamily(n.RECONCILIATION_LAST_MISMATCH_QUANTITY, "Largest |broker - ours| at the last check.",
                            value=snap.last_mismatch_quantity)
    yield CounterMetricFamily(n.RECONCILIATION_FAILURES_TOTAL, "Checks that errored or ran past the deadline.", value=snap.failures)
    fam = GaugeMetricFamily(n.RECONCILIATION_PNL_MISMATCH_TWD,
                            "Largest |broker - ours| unrealized PnL at the last check of all symbols, TWD, by account.", labels=["account"])
    for account, diff in sorted(snap.pnl_mismatch_twd.items()):
        fam.add_metric([account], diff)
    yield fam


def _queues(value: Value, _src: MetricSources) -> Iterator[Metric]:
    fam = GaugeMetricFamily(n.QUEUE_DEPTH, "Items waiting in a queue.", labels=["queue"])
    raw = _optional(value, "raw_queue_depth")
    if raw is None:
        hb = _optional(value, "heartbeat")
        raw = hb.queue_depth if hb is not None else None
    if raw is not None:
        fam.add_metric(["raw"], int(raw))
    rec = _optional(value, "recorder_stats")
    if rec is not None and "queued" in rec:
        fam.add_metric(["recorder"], int(rec["queued"]))
    if fam.samples:
        yield fam


def _broker(value: Value, _src: MetricSources) -> Iterator[Metric]:
    stats = value("gateway_stats")
    fam = GaugeMetricFamily(n.BROKER_QUERY_BUDGET_USED, "Broker calls in the current rate-limit window, by group.", labels=["group"])
    for group, used in sorted(stats.in_window.items()):
        fam.add_metric([str(group)], int(used))
    yield fam
    yield CounterMetricFamily(n.BROKER_BANS_TOTAL, "Ban replies from the broker.", value=int(stats.bans))


def _recorder(value: Value, _src: MetricSources) -> Iterator[Metric]:
    rec = value("recorder_stats")
    yield GaugeMetricFamily(n.RECORDER_SPOOL_ROWS, "Rows in the recorder's disk spool.", value=int(rec["spool_rows"]))
    yield GaugeMetricFamily(n.RECORDER_SPOOL_BYTES, "Bytes in the recorder's disk spool.", value=int(rec["spool_bytes"]))
    age = float(rec["spool_oldest_age_s"] or 0)
    yield GaugeMetricFamily(n.RECORDER_SPOOL_OLDEST_AGE_SECONDS, "Age of the oldest spooled batch, s (0 when empty).", value=age)
    yield CounterMetricFamily(n.RECORDER_ROWS_WRITTEN_TOTAL, "Rows written to the database.", value=int(rec["rows_written"]))


def _positions(value: Value, _src: MetricSources) -> Iterator[Metric]:
    totals: dict[tuple[str, str], list] = {}  # (account, strategy) -> [open, realized, unrealized, fees, taxes]
    for p in value("positions").positions:
        t = totals.setdefault((p.account, p.strategy), [0, 0, 0, 0, 0])
        t[0] += 1 if p.quantity else 0
        t[1] += p.realized_pnl
        t[2] += p.unrealized_pnl
        t[3] += p.fees
        t[4] += p.taxes
    families = (
        (n.POSITIONS_OPEN, "Positions with a non-zero quantity."),
        (n.REALIZED_PNL_TWD, "Realized PnL before fees and taxes, TWD."),
        (n.UNREALIZED_PNL_TWD, "Unrealized PnL at the last marks, TWD (0 without a mark)."),
        (n.FEES_TWD, "Fees booked, TWD."),
        (n.TAXES_TWD, "Transaction taxes booked, TWD."),
    )
    for i, (name, doc) in enumerate(families):
        fam = GaugeMetricFamily(name, doc, labels=["account", "strategy"])
        for (account, strategy), t in sorted(totals.items()):
            fam.add_metric([account, strategy], float(t[i]))
        yield fam


def _alerts(value: Value, _src: MetricSources) -> Iterator[Metric]:
    fam = GaugeMetricFamily(n.ALERTS_FIRING, "In-process alert rules firing, by alert name.", labels=["alert"])
    for name, count in sorted(value("alerts").items()):
        fam.add_metric([str(name)], int(count))
    yield fam


_BUILDERS: tuple[Callable[[Value, MetricSources], Iterable[Metric]], ...] = (
    _events, _latency, _connection, _orders_working, _halt, _reconcile, _queues, _broker, _recorder, _positions, _alerts,
)


def registry_for(sources: MetricSources) -> CollectorRegistry:
    """A fresh registry holding one `ExecstateCollector` (never the global default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExecstateCollector(sources))
    return registry
