"""Recorder: events off the pipeline thread into ClickHouse in batches, through a disk spool when it must.

Entry points: `Recorder(sink, spool, batch_rows=10_000, batch_ms=200, clock=time.monotonic)`:
`.start()`, `.submit(event)`, `.flush(timeout_s)`, `.stop(timeout_s)`, `.stats()`,
`.durable_latency_ns` (a `LatencySamples` ring); `Sink` (protocol); `Batcher` (pure batching).

Invariants:
- `submit` is one `SimpleQueue.put((time.monotonic_ns(), event))`: no lock, no I/O, never
  blocks. The stamp only feeds the durability-latency samples.
- One worker thread owns batching, the sink and the spool. A batch closes at `batch_rows`
  rows (a PositionSnapshot counts its positions) or `batch_ms` after its first event.
- Order: batches reach the database in the order they closed. While the spool holds
  anything, new batches go to the spool behind it and it drains oldest first, so after
  `start()` a previous run's spool is sent before any new event.
- Durability point: the database took the batch, or it is fsynced in the spool.
  `durable_latency_ns` samples submit -> durable for every event.
- A failed write spools its batch; draining retries with backoff (0.2 s doubling to 5 s),
  and meanwhile new batches go straight to the spool, never waiting on a dead database.
  Delivery is at least once (a crash between a write and its ack re-sends that batch),
  which the sink absorbs: deterministic ids in a ReplacingMergeTree.
- A sink `ValueError`/`TypeError` means data it can never store, not an outage: the batch is
  halved until the offending events are found; those are parked in the spool's `bad/` with
  the reason (`parked_rows`) and the rest is written. Any other exception is an outage.
- Spool full (`SpoolFull` or any spool write error): backpressure, never a drop. The worker
  holds the batch, counts `spool_full`, logs, and takes nothing from the queue until the
  database drains the spool or takes the batch; events queue in memory (`queued` grows,
  `submit` still never blocks): alert on both. Only what is not durable yet dies with the
  process, or with a `stop` that cannot place it (`rows_lost`, logged); the raw-event
  journal replays it with the same ids.
- The loop never dies silently: every exception is counted (`loop_errors`), logged with its
  traceback, and the loop carries on after a short pause.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple, Protocol

from execstate.record.spool import Spool, SpoolCorrupt, batch_rows, event_rows
from execstate.record.tables import table_for
from execstate.telemetry.logging import get_logger
from execstate.telemetry.stats import LatencySamples

log = get_logger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
ISOLATION_WRITES = 64  # sink calls spent narrowing one refused batch before parking the rest whole
_LOOP_ERROR_PAUSE_S = 0.05
_COUNTERS = ("rows_written", "batches_written", "batches_spooled", "write_errors", "spool_full", "parked_rows",
             "loop_errors", "rejected", "rows_lost", "last_error")
_now_ns = time.monotonic_ns


class Sink(Protocol):
    """Where batches go (the ClickHouse sink): idempotent per row id, raises when it cannot write."""

    def write(self, batch: Mapping[str, list[Any]]) -> int: ...

    def close(self) -> None: ...


class Batch(NamedTuple):
    """A closed batch: events by table, its row count, the submit stamps of its events."""

    tables: dict[str, list[Any]]
    rows: int
    stamps: list[int]


class Batcher:
    """Pure batching: events grouped by table until `max_rows` rows or `max_s` after the first."""

    def __init__(self, max_rows: int, max_s: float) -> None:
        if max_rows <= 0 or max_s <= 0:
            raise ValueError(f"max_rows={max_rows!r}, max_s={max_s!r}: expected positive limits")
        self.max_rows = max_rows
        self.max_s = max_s
        self._open()

    def add(self, event: Any, stamp_ns: int, now: float) -> bool:
        """Add one event; True when the batch is full. ValueError (nothing added) for an unrecorded type."""
        table = table_for(event)
        if not self.count:
            self.opened_at = now
        self._tables[table].append(event)
        self._stamps.append(stamp_ns)
        self.count += 1
        self.rows += event_rows(event)
        return self.rows >= self.max_rows

    def deadline(self) -> float | None:
        """When the open batch is due by time; None when nothing is open."""
        return self.opened_at + self.max_s if self.count else None

    def due(self, now: float) -> bool:
        return self.count > 0 and (self.rows >= self.max_rows or now >= self.opened_at + self.max_s)

    def take(self) -> Batch:
        """The open batch (possibly empty); a new one opens with the next event."""
        batch = Batch(dict(self._tables), self.rows, self._stamps)
        self._open()
        return batch

    def _open(self) -> None:
        self.count, self.rows, self.opened_at = 0, 0, 0.0
        self._tables: defaultdict[str, list[Any]] = defaultdict(list)
        self._stamps: list[int] = []


class _Flush(threading.Event):
    ok = False  # set by the worker before it sets the event


_STOP = object()


class Recorder:
    """Batches events to a sink in order, spooling to disk while the sink is down; see the module docstring."""

    def __init__(self, sink: Sink, spool: Spool, batch_rows: int = 10_000, batch_ms: int = 200,
                 clock: Callable[[], float] = time.monotonic, latency_capacity: int = 1 << 16) -> None:
        self._sink = sink
        self._spool = spool
        self._clock = clock
        self._batcher = Batcher(batch_rows, batch_ms / 1000)
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._put = self._queue.put
        self._held: Batch | None = None  # a batch neither the database nor the spool would take
        self._backoff_s = BACKOFF_MIN_S
        self._retry_at = float("-inf")  # clock time of the next database attempt (-inf: now)
        self._down_since: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink_closed = False
        self.durable_latency_ns = LatencySamples(latency_capacity)
        # written by the worker thread only, read by anyone (see `stats`)
        self.rows_written = self.batches_written = self.batches_spooled = self.write_errors = 0
        self.spool_full = self.parked_rows = self.loop_errors = self.rejected = self.rows_lost = 0
        self.last_error = ""

    def submit(self, event: Any) -> None:
        """Queue one event for recording (pipeline thread: a SimpleQueue.put, nothing else)."""
        self._put((_now_ns(), event))

    def start(self) -> Recorder:
        """Start the worker; it sends any spool left by a previous run before new events."""
        if self._thread is not None:
            raise RuntimeError("recorder already started")
        self._thread = threading.Thread(target=self._run, name="execstate-recorder", daemon=True)
        self._thread.start()
        return self

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Make every event submitted so far durable, then try once to empty the spool into the database.

        True when all of it is in the database; False on timeout, or when some of it is only in
        the spool (database down) or held (spool full)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        marker = _Flush()
        self._put(marker)
        return marker.wait(timeout_s) and marker.ok

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Flush, stop the worker, close the sink (the recorder owns it); True when everything is in the database.

        What cannot reach the database stays in the spool, durable, for the next start."""
        if self._thread is None or not self._thread.is_alive():
            self._close_sink()
            return False
        deadline = time.monotonic() + timeout_s
        ok = self.flush(timeout_s)
        self._stopping.set()
        self._put(_STOP)
        self._thread.join(max(deadline - time.monotonic(), 0.5))
        if self._thread.is_alive():
            log.error("recorder_stop_timeout", timeout_s=timeout_s, queued=self._queue.qsize())
            return False
        self._close_sink()
        return ok and self._held is None and self._spool.oldest() is None

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for metrics and `status`."""
        spool, held = self._spool, self._held
        return {
            "queued": self._queue.qsize(), "held_rows": held.rows if held is not None else 0,
            "spool_rows": spool.rows(), "spool_bytes": spool.size_bytes(), "spool_entries": len(spool),
            "spool_oldest_age_s": spool.oldest_age_s(), "spool_corrupt": spool.corrupt,
            **{name: getattr(self, name) for name in _COUNTERS},
        }

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception as exc:
                self.loop_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("recorder_loop_error", error=self.last_error)
                self._stopping.wait(_LOOP_ERROR_PAUSE_S)

    def _step(self) -> bool:
        """One turn of the loop; True when the worker should end."""
        if self._held is not None:
            return self._retry_held()
        item = self._next(self._wait_s())
        now = self._clock()
        batcher, taken = self._batcher, 0
        while item is not None:
            if type(item) is tuple:
                try:
                    full = batcher.add(item[1], item[0], now)
                except ValueError as exc:
                    self.rejected += 1
                    log.error("recorder_event_rejected", error=str(exc))
                else:
                    if full:
                        self._deliver(batcher.take(), now)
            elif item is _STOP:
                if batcher.count:
                    self._deliver(batcher.take(), now)
                self._lose_held("stopped with the database down and the spool full")
                return True
            else:
                self._flush_now(item, now)
            if self._held is not None:  # backpressure: take nothing more until it is placed
                return False
            taken += 1
            if taken >= batcher.max_rows:
                break
            item = self._next(0.0)
        if batcher.due(now):
            self._deliver(batcher.take(), now)
        if self._held is None and self._spool.oldest() is not None and now >= self._retry_at:
            self._drain(limit=1)
        return False

    def _next(self, timeout_s: float | None) -> Any:
        try:
            if timeout_s is None:
                return self._queue.get()
            return self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get(block=False)
        except Empty:
            return None

    def _wait_s(self) -> float | None:
        """How long to wait for events: until the open batch is due or the next retry (None: idle)."""
        now, deadline = self._clock(), self._batcher.deadline()
        waits = [] if deadline is None else [min(deadline - now, self._batcher.max_s)]  # capped: a fake clock may not move
        if self._spool.oldest() is not None:
            waits.append(min(self._retry_at - now, BACKOFF_MAX_S))
        return max(0.0, min(waits)) if waits else None

    def _deliver(self, batch: Batch, now: float) -> None:
        """Database if nothing is spooled and it is not in backoff; else (or if it fails) the spool."""
        if self._spool.oldest() is None and now >= self._retry_at:
            try:
                parked = self._write(batch.tables)
            except Exception as exc:
                self._write_failed(exc)
            else:
                self._written(batch.rows - parked)
                self._durable(batch.stamps)
                return
        try:
            self._spool.put(batch.tables)
        except Exception as exc:
            self._held = batch
            self.spool_full += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("recorder_spool_full", error=self.last_error, held_rows=batch.rows, spool_bytes=self._spool.size_bytes())
            return
        self.batches_spooled += 1
        self._durable(batch.stamps)

    def _write(self, tables: dict[str, list[Any]], budget: list[int] | None = None) -> int:
        """sink.write; on a data error, halve the batch to find the events it refuses and park them.

        Returns the rows parked. Past `ISOLATION_WRITES` sink calls, a refused part is parked whole.
        """
        budget = [ISOLATION_WRITES] if budget is None else budget
        try:
            self._sink.write(tables)
            return 0
        except (ValueError, TypeError) as exc:
            pairs = [(table, event) for table, events in tables.items() for event in events]
            if len(pairs) > 1 and budget[0] >= 2:
                budget[0] -= 2
                mid = len(pairs) // 2
                return self._write(_grouped(pairs[:mid]), budget) + self._write(_grouped(pairs[mid:]), budget)
            self._spool.park(tables, f"{type(exc).__name__}: {exc}")
            self.parked_rows += (rows := batch_rows(tables))
            return rows

    def _drain(self, limit: int | None = None) -> bool:
        """Send spooled batches oldest first, at most `limit`; True when the spool is empty."""
        sent = 0
        while limit is None or sent < limit:
            entry = self._spool.oldest()
            if entry is None:
                return True
            try:
                batch = self._spool.get(entry)
            except SpoolCorrupt:  # quarantined, counted and logged by the spool
                continue
            try:
                parked = self._write(batch)
            except Exception as exc:
                self._write_failed(exc)
                return False
            self._spool.ack(entry)
            self._written(entry.rows - parked)
            sent += 1
        return self._spool.oldest() is None

    def _flush_now(self, marker: _Flush, now: float) -> None:
        try:
            if self._batcher.count:
                self._deliver(self._batcher.take(), now)
            marker.ok = self._held is None and self._drain()
        finally:
            marker.set()

    def _retry_held(self) -> bool:
        """Backpressure: wait out the backoff, drain the spool, then place the held batch behind it."""
        stopping = self._stopping.is_set()
        if not stopping:
            stopping = self._stopping.wait(max(BACKOFF_MIN_S, min(self._retry_at - self._clock(), BACKOFF_MAX_S)))
        self._drain()
        batch, self._held = self._held, None
        if batch is not None:
            self._deliver(batch, self._clock())  # the database if the spool is empty, else behind it
        if stopping and self._held is not None:
            self._lose_held("stopping with the database down and the spool full")
            return True
        return False

    def _lose_held(self, why: str) -> None:
        """At exit only: count and log what never became durable (the held batch and anything queued)."""
        held, self._held = self._held, None
        if held is None:
            return
        rows, queued = held.rows, 0
        while (item := self._next(0.0)) is not None:
            if type(item) is tuple:
                rows += event_rows(item[1])
                queued += 1
            elif isinstance(item, _Flush):
                item.set()
        self.rows_lost += rows
        log.error("recorder_rows_not_durable", why=why, rows=rows, held_rows=held.rows, queued_events=queued)

    def _written(self, rows: int) -> None:
        self.rows_written += rows
        self.batches_written += 1
        self._backoff_s = BACKOFF_MIN_S
        self._retry_at = float("-inf")
        if self._down_since is not None:
            log.info("recorder_database_back", down_s=round(self._clock() - self._down_since, 3), spool_rows=self._spool.rows())
            self._down_since = None

    def _write_failed(self, exc: Exception) -> None:
        now = self._clock()
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._retry_at = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)
        if self._down_since is None:  # log an outage once, not every retry
            self._down_since = now
            log.error("recorder_database_down", error=self.last_error)

    def _durable(self, stamps: list[int]) -> None:
        now = _now_ns()
        add = self.durable_latency_ns.add
        for stamp in stamps:
            add(now - stamp)

    def _close_sink(self) -> None:
        if self._sink_closed:
            return
        self._sink_closed = True
        try:
            self._sink.close()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("recorder_sink_close_failed", error=self.last_error)


def _grouped(pairs: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    tables: dict[str, list[Any]] = {}
    for table, event in pairs:
        tables.setdefault(table, []).append(event)
    return tables
