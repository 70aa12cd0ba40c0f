"""Composition root: the only module that wires the stages together.

Entry points: `Pipeline` (queue -> journal -> normalizer -> store -> bus), `Pipeline.start()`
/ `.stop()` (worker, snapshot and adjustment-log threads), `Pipeline.process_batch(raws)` (synchronous, for
replay and tests), `positions_as_dicts(snapshot)` (the stable `replay --json` shape),
`apply_runtime_tuning(settings)`. The demo and replays are composed in `jobs`, the service in
`service`.

Invariants:
- One worker thread does all writes: journal line first, then normalize, then the store
  (a broker record resubmitted by a reconciliation is journaled after normalizing, and only
  when it was not a duplicate, so polling does not grow the journal);
  after each batch the journal is flushed, the store view is published, and only then are
  the batch's events fanned out on the bus (a subscriber sees books that include its event).
- The worker loop never dies silently: a failure on one event is counted, logged and the
  event parked as a dead letter; the loop goes on.
- `stop()` drains everything queued before it, then returns.
- Raw events queued from inside the service (`submit`: broker records resubmitted by a
  reconciliation, corrections) travel as `RawExecEvent`, the callback's as bare tuples, so
  the normalizer can tell a live re-delivery from a recovery when it drops a duplicate.
- A dead letter never keeps `person_id` (it is recorded).
"""

from __future__ import annotations

import gc
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

from execstate.bus import TOPIC_DELTA, TOPIC_FILL, TOPIC_ORDER, TOPIC_SNAPSHOT, EventBus
from execstate.bridge.journal import JournalWriter
from execstate.config import Settings
from execstate.domain.events import CORRECTION_STATE, DeadLetter, FillEvent, OrderEvent, PositionSnapshot, RawExecEvent
from execstate.domain.money import fmt_decimal
from execstate.domain.payloads import kept_copy, safe_text, state_text
from execstate.normalize.instruments import InstrumentResolver
from execstate.normalize.intents import IntentRegistry
from execstate.normalize.worker import Normalizer
from execstate.positions.fees import FeeSchedule
from execstate.positions.snapshots import Snapshotter
from execstate.positions.store import PositionStore
from execstate.telemetry.adjustments import AdjustmentLog
from execstate.telemetry.histogram import LATENCY_MS_BOUNDS, BucketHistogram
from execstate.telemetry.logging import get_logger
from execstate.telemetry.stats import PipelineStats

_STOP = object()


class _OnWorker:
    """A function to run on the worker thread, in queue order (a barrier with a result)."""

    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed back to the caller
            self.error = exc
        finally:
            self.done.set()
log = get_logger("execstate.pipeline")


class Pipeline:
    """Raw events in, books and events out. See the module docstring."""

    def __init__(self, settings: Settings, *, intents: IntentRegistry | None = None, journal_path: Path | None = None, raw_queue: queue.SimpleQueue | None = None, snapshot_path: Path | None = None) -> None:
        self.settings = settings
        self.stats = PipelineStats()
        self.latency_ms = BucketHistogram(LATENCY_MS_BOUNDS)  # callback -> visible, for /metrics
        self.intents = intents if intents is not None else IntentRegistry(dict(settings.strategies.tags))
        fees = FeeSchedule(settings.fees)
        self.store = PositionStore(fees)
        self.normalizer = Normalizer(self.intents, InstrumentResolver(settings), self.stats, settings.queue.dedupe_capacity)
        self.bus = EventBus(on_error=self._subscriber_error)
        self.queue: queue.SimpleQueue = raw_queue if raw_queue is not None else queue.SimpleQueue()
        self.dead_letters: deque[DeadLetter] = deque(maxlen=settings.queue.dead_letter_capacity)
        self.journal = JournalWriter(journal_path) if journal_path is not None else None
        self._thread: threading.Thread | None = None
        self._batch_max = settings.queue.batch_max
        self.snapshot_path = snapshot_path
        self.bad_journal_lines = 0
        self._record_dead: Any = None
        self.record_error = ""  # why events were not recorded (replay without a database)
        self.recorded: dict[str, Any] | None = None
        self.snapshotter = Snapshotter(self.store, settings.snapshot_interval_ms, self._emit_snapshot)
        # one `position_adjusted` line per delta, rendered per batch, written by its own thread (telemetry.adjustments)
        self.adjustments = AdjustmentLog().attach(self.bus) if settings.telemetry.log_adjustments else None

    def _emit_snapshot(self, snapshot: PositionSnapshot) -> None:
        if self.snapshot_path is not None:
            write_snapshot_file(snapshot, self.snapshot_path)
        self.bus.publish(TOPIC_SNAPSHOT, snapshot)

    # --- processing -------------------------------------------------------------------
    def _subscriber_error(self, topic: str, exc: BaseException) -> None:
        self.stats.subscriber_errors += 1
        log.error("subscriber_failed", topic=topic, error=repr(exc))

    def process_batch(self, raws: list) -> None:
        """Journal, normalize and book a batch, publish the view, then fan out."""
        stats = self.stats
        stats.raw_events += len(raws)
        journal = self.journal
        normalize = self.normalizer.normalize
        apply_fill = self.store.apply_fill
        out: list[Any] = []
        fill_recv: list[int] = []
        for raw in raws:
            try:
                # A broker record resubmitted by a reconciliation is journaled only when it is
                # news (not a duplicate): every check resubmits the whole day's records, and a
                # record lost in a crash before its line is written is fetched again by the
                # next check. Callback events and corrections are journaled before anything else.
                resubmitted = type(raw) is RawExecEvent and raw[1] != CORRECTION_STATE
                if journal is not None and not resubmitted:
                    journal.write(raw)
                duplicates = stats.duplicates
                event = normalize(raw)
                if resubmitted and journal is not None and stats.duplicates == duplicates:
                    journal.write(raw)
                if event is None:
                    continue
                if type(event) is FillEvent:
                    deltas = apply_fill(event)
                    out.append(event)
                    out.extend(deltas)
                    fill_recv.append(event.ts_recv)
                elif type(event) is OrderEvent:
                    out.append(event)
                else:
                    self.park(event)
            except Exception as exc:  # a bug on one event must not stop the books
                log.exception("event_failed", error=repr(exc))
                stats.dead_letters += 1  # counted like every rejection (the metric equals the dead letters)
                self.park(DeadLetter(reason=safe_text(f"internal error: {exc!r}", 300), state=state_text(raw[1]), ts_recv=raw[0], msg=kept_copy(raw[2])))
        if journal is not None:
            journal.flush()
            stats.journal_lines = journal.lines
        self.store.publish()
        if fill_recv:
            now = time.time_ns()
            add = stats.latency_ns.add
            observe = self.latency_ms.observe
            for ts in fill_recv:
                add(now - ts)
                observe((now - ts) / 1e6)
        self._fan_out(out)
        if self.adjustments is not None:
            self.adjustments.flush()  # this batch's position_adjusted lines, rendered at once, written off the worker

    def attach_recorder(self, submit: Any) -> None:
        """Send every order, fill, delta, snapshot and dead letter to `submit` (the recorder's
        queue put: it runs on the worker or snapshot thread and must not block)."""
        for topic in (TOPIC_ORDER, TOPIC_FILL, TOPIC_DELTA, TOPIC_SNAPSHOT):
            self.bus.subscribe(topic, submit)
        self._record_dead = submit

    def park(self, dead: DeadLetter) -> None:
        """Keep a rejected event (bounded), count nothing (the caller did), log and record it."""
        self.dead_letters.append(dead)
        if self._record_dead is not None:
            self._record_dead(dead)
        log.warning("dead_letter", reason=dead.reason, state=dead.state)

    def _fan_out(self, events: list[Any]) -> None:
        bus = self.bus
        publish = bus.publish
        fills, orders, deltas = bus.has_subscribers(TOPIC_FILL), bus.has_subscribers(TOPIC_ORDER), bus.has_subscribers(TOPIC_DELTA)
        for event in events:
            kind = type(event)
            if kind is FillEvent:
                if fills:
                    publish(TOPIC_FILL, event)
            elif kind is OrderEvent:
                if orders:
                    publish(TOPIC_ORDER, event)
            else:
                self.stats.deltas += 1
                if deltas:
                    publish(TOPIC_DELTA, event)

    # --- worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        get = self.queue.get
        get_nowait = self.queue.get_nowait
        qsize = self.queue.qsize
        limit = self._batch_max
        stopping = False
        while not stopping:
            batch = [get()]
            for _ in range(min(qsize(), limit - 1)):
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP or type(item) is _OnWorker for item in batch):
                stopping = self._run_mixed(batch)
            else:
                self.process_batch(batch)

    def _run_mixed(self, batch: list) -> bool:
        """A batch holding control items: process raw events around them, in order."""
        run: list = []
        for item in batch:
            if item is _STOP or type(item) is _OnWorker:
                if run:
                    self.process_batch(run)
                    run = []
                if item is _STOP:
                    return True
                item.run()
            else:
                run.append(item)
        if run:
            self.process_batch(run)
        return False

    def on_worker(self, fn: Any, timeout: float = 30.0) -> Any:
        """Run `fn()` on the worker thread after everything queued before it; return its result.

        The way other threads read worker-owned state (the order book) safely, and wait for
        what they submitted to be booked. Runs inline when the worker is not started.
        """
        item = _OnWorker(fn)
        if self._thread is None:
            item.run()
        else:
            self.queue.put(item)
            if not item.done.wait(timeout):
                raise TimeoutError(f"pipeline worker did not reach the barrier within {timeout} s")
        if item.error is not None:
            raise item.error
        return item.result

    def submit(self, state: str, msg: dict) -> None:
        """Queue a raw event from inside the service (recovered broker records, corrections)."""
        raw = RawExecEvent(time.time_ns(), state, msg)
        if self._thread is None:
            self.process_batch([raw])
        else:
            self.queue.put(raw)

    def start(self) -> Pipeline:
        if self._thread is not None:
            raise RuntimeError("pipeline already started")
        apply_runtime_tuning(self.settings)  # after wiring: freezes the long-lived containers too
        self._thread = threading.Thread(target=self._run, name="execstate-pipeline", daemon=True)
        self._thread.start()
        self.snapshotter.start()
        if self.adjustments is not None:
            self.adjustments.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Drain what is queued, stop the worker, take a last snapshot, close the journal."""
        if self._thread is not None:
            self.queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"pipeline worker did not stop within {timeout} s")
            self._thread = None
            self.snapshotter.stop()
        if self.adjustments is not None:
            self.adjustments.stop()
        if self.journal is not None:
            self.journal.close()

    def snapshot(self) -> PositionSnapshot:
        return self.store.snapshot(time.time_ns())

    def open_journal(self, path: Path) -> None:
        """Start journaling to `path` (after a replay of it, so replayed lines are not written twice)."""
        if self.journal is not None:
            raise RuntimeError("journal already open")
        self.journal = JournalWriter(path)


def apply_runtime_tuning(settings: Settings) -> None:
    """Process-wide interpreter settings for short latency tails.

    Called by `Pipeline.start()`, after the stages are wired: `gc.freeze()` then moves the
    long-lived containers (dedupe memory, order book, positions) out of the young
    generations, so a collection never re-traverses them (measured: gen-0 pauses of 4 ms
    without, well under 1 ms with).
    """
    rt = settings.runtime
    if rt.switch_interval_us:
        sys.setswitchinterval(rt.switch_interval_us / 1_000_000)
    if rt.gc_gen0_threshold:
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(rt.gc_gen0_threshold, g1, g2)
    if rt.gc_freeze_after_start:
        gc.collect()
        gc.freeze()


def open_recorder(settings: Settings, *, spool_dir: Path | None = None, in_process: bool = False, require_database: bool = False) -> tuple[Any, Any]:
    """(recorder, sink) for these settings (DSN from CLICKHOUSE_DSN, the config, or the
    embedded engine under the state directory), with its spool; (None, None) when disabled.

    Not started: the caller starts it before the pipeline, so a previous run's spool drains
    first. A database that is down at start is logged and the batches spool until it is back,
    unless `require_database`, which raises `SinkError` instead (a replay must not spool behind
    a running service's back). `in_process` overrides `recorder.writer_process` (short jobs).
    """
    if not settings.recorder.enabled:
        return None, None
    from execstate.record.clickhouse import ClickHouseSink, SinkError
    from execstate.record.recorder import Recorder
    from execstate.record.spool import Spool

    if settings.recorder.writer_process and not in_process:
        from execstate.record.process_sink import ProcessSink

        sink: Any = ProcessSink(settings.clickhouse_dsn())
    else:
        sink = ClickHouseSink(settings.clickhouse_dsn())
    try:
        sink.ensure_schema()
    except SinkError as exc:
        if require_database:
            sink.close()
            raise
        log.warning("clickhouse_unavailable_at_start", error=str(exc))
    spool = Spool(spool_dir or Path(settings.state_dir) / "spool", settings.recorder.spool_max_bytes)
    return Recorder(sink, spool, settings.recorder.batch_rows, settings.recorder.batch_ms), sink


def positions_as_dicts(snapshot: PositionSnapshot) -> list[dict[str, str]]:
    """The stable `replay --json` shape: numbers as decimal strings."""
    return [
        {
            "account": p.account,
            "strategy": p.strategy,
            "symbol": p.symbol,
            "quantity": str(p.quantity),
            "avg_price": fmt_decimal(p.avg_price),
            "realized_pnl": fmt_decimal(p.realized_pnl),
            "fees": fmt_decimal(p.fees),
            "taxes": fmt_decimal(p.taxes),
        }
        for p in snapshot.positions
    ]


def write_snapshot_file(snapshot: PositionSnapshot, path: Path) -> None:
    """Write a snapshot as JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(msgspec.json.encode(snapshot))
    tmp.replace(path)
