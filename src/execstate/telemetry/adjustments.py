"""Every position change as one `position_adjusted` log line, rendered per batch, written off the worker.

Entry points: `AdjustmentLog()`, `.attach(bus)`, `.flush()` (after each pipeline batch),
`.start()`, `.stop()`, `.lines`, `.errors`; `adjustment_fields(delta, fill)` (a line's fields).

A line: `reason` (the delta's cause: fill | reorder | correction), `account`, `strategy`,
`symbol`, `order_id` (of the fill that caused it; "" for a correction), `source_id` (the fill
or correction id), `quantity_before`, `quantity_after`, `avg_price`, `realized_pnl_change`,
`fee`, `tax`, `seq` (the store's), and `reconcile_reason` on a correction (why the
reconciliation corrected the books: startup, poll, operator, ...).

Invariants:
- On the worker a fill or delta costs one list append (bus subscriber); `flush()`, called by
  the pipeline after each batch's fan-out (the batch's books are already visible), looks up
  the log route once and renders the batch's lines in one go: straight to JSON lines
  (msgspec) when every log output that takes info renders JSON (production, log files).
  The bytes go to the writer thread, so a slow log destination never blocks the books. The
  worker renders rather than a log thread because a second thread doing Python work costs
  the worker up to a GIL switch interval per event while it runs (measured: p99 at 10k
  events/s doubled), where rendering in the worker costs only its CPU time.
- Otherwise (console rendering, `capture_logs` in tests) the batch's events go to the
  writer thread, which logs them through structlog line by line. Nothing is rendered when
  info is filtered out, or when the process never configured structlog.
- Lines come in publish order. Before `start()` (synchronous replays, tests) `flush()` writes
  on the caller's thread. `stop()` writes everything flushed before it, then returns.
- A failure to render or write is counted (`errors`) and logged; nothing stops.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from decimal import Decimal
from typing import Any

import msgspec

from execstate.bus import TOPIC_DELTA, TOPIC_FILL, EventBus
from execstate.domain.events import FillEvent, PositionDelta
from execstate.domain.money import fmt_decimal
from execstate.telemetry.logging import STRUCTLOG, get_logger, route

log = get_logger("execstate.positions")
EVENT = "position_adjusted"
_STOP = object()


class _Line(msgspec.Struct, omit_defaults=True):
    """The JSON form of a line (same keys as the structlog path, plus event/level/timestamp)."""

    event: str
    level: str
    timestamp: str
    reason: str
    account: str
    strategy: str
    symbol: str
    order_id: str
    source_id: str
    quantity_before: int
    quantity_after: int
    avg_price: str
    realized_pnl_change: str
    fee: str
    tax: str
    seq: int
    reconcile_reason: str = ""


_encode_lines = msgspec.json.Encoder().encode_lines


def _num(value: Decimal) -> str:
    """A decimal as text without trailing zeros ("580", "12.5"); cheap for the usual forms."""
    text = str(value)
    if "E" in text or "e" in text:
        return fmt_decimal(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
        return "0" if text in ("", "-", "-0") else text
    return "0" if text == "-0" else text


def adjustment_fields(delta: PositionDelta, fill: FillEvent | None) -> dict[str, Any]:
    """The key-value pairs of one `position_adjusted` line (`fill`: the one that caused it, if known)."""
    fields: dict[str, Any] = {
        "reason": delta.cause, "account": delta.account, "strategy": delta.strategy, "symbol": delta.symbol,
        "order_id": fill.order_id if fill is not None else "", "source_id": delta.source_id,
        "quantity_before": delta.quantity_before, "quantity_after": delta.quantity_after,
        "avg_price": _num(delta.avg_price), "realized_pnl_change": _num(delta.realized_pnl_change),
        "fee": str(delta.fee), "tax": str(delta.tax), "seq": delta.seq,  # whole TWD (fees.py rounds them)
    }
    if fill is not None and fill.correction:
        fields["reconcile_reason"] = fill.correction
    return fields


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")  # as structlog's TimeStamper(fmt="iso", utc=True)


class AdjustmentLog:
    """Bus subscriber (fills and deltas), per-batch renderer and writer thread. See the module docstring."""

    def __init__(self, linger_s: float = 0.02) -> None:
        self.linger_s = linger_s  # the writer thread wakes at most this often
        self.errors = 0
        self.lines = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # (writer, bytes) or (STRUCTLOG, events)
        self._thread: threading.Thread | None = None
        self._pending: list[Any] = []  # this batch's fills and deltas (a fill comes just before its deltas)

    def attach(self, bus: EventBus) -> AdjustmentLog:
        """Subscribe to fills (for their order ids) and deltas; returns self."""
        bus.subscribe(TOPIC_FILL, self._pending.append)
        bus.subscribe(TOPIC_DELTA, self._pending.append)
        return self

    def submit(self, event: Any) -> None:
        """Add a fill or delta to the current batch (what the bus subscription does)."""
        self._pending.append(event)

    def flush(self) -> None:
        """Render the batch's lines and hand them to the writer (on the caller's thread before `start()`)."""
        items = self._pending
        if not items:
            return
        batch = items.copy()
        items.clear()  # the same list object: the bus holds its `append`
        try:
            where = route("info")
            if where is None:
                return
            if where is STRUCTLOG:
                self._hand((STRUCTLOG, batch))
            else:
                data, count = self._render(batch)
                if count:
                    self._hand((where, data, count))
        except Exception as exc:  # logging must never stop the books, nor die silently
            self._failed(exc)

    def _hand(self, work: tuple) -> None:
        if self._thread is not None:
            self._queue.put(work)
        else:
            self._do(work)

    def start(self) -> AdjustmentLog:
        if self._thread is None:
            self.flush()
            self._thread = threading.Thread(target=self._run, name="execstate-adjustment-log", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything flushed so far, then stop the thread."""
        self.flush()
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)
        if not thread.is_alive():
            self._thread = None

    # --- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        get, get_nowait, qsize = self._queue.get, self._queue.get_nowait, self._queue.qsize
        while True:
            work = [get()]
            if work[0] is not _STOP and self.linger_s:
                time.sleep(self.linger_s)  # let batches gather: one wake-up and one write per interval
            for _ in range(qsize()):
                try:
                    work.append(get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in work)
            runs: list[list] = []  # consecutive batches for the same writer become one write
            for item in work:
                if item is _STOP:
                    continue
                if runs and item[0] is not STRUCTLOG and runs[-1][0] is item[0]:
                    runs[-1][1].append(item[1])
                    runs[-1][2] += item[2]
                else:
                    runs.append([item[0], [item[1]], item[2]] if item[0] is not STRUCTLOG else list(item))
            for run in runs:
                self._do((run[0], b"".join(run[1]), run[2]) if run[0] is not STRUCTLOG else tuple(run))
            if stop:
                return

    def _do(self, work: tuple) -> None:
        try:
            if work[0] is STRUCTLOG:
                self._log_structlog(work[1])
            else:
                writer, data, count = work
                writer(data)
                self.lines += count
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        log.error("adjustment_log_failed", error=repr(exc)[:300])

    # --- rendering -------------------------------------------------------------------------
    def _render(self, items: list[Any]) -> tuple[bytes, int]:
        """JSON lines for the batch's deltas (same fields as `adjustment_fields`)."""
        ts = _now_iso()
        lines = []
        fill: FillEvent | None = None
        for item in items:
            if type(item) is FillEvent:
                fill = item
                continue
            d = item
            cause = fill if fill is not None and fill.event_id == d.source_id else None
            lines.append(_Line(
                EVENT, "info", ts, d.cause, d.account, d.strategy, d.symbol, cause.order_id if cause else "", d.source_id,
                d.quantity_before, d.quantity_after, _num(d.avg_price), _num(d.realized_pnl_change), str(d.fee), str(d.tax), d.seq,
                cause.correction if cause else "",
            ))
        return (_encode_lines(lines) if lines else b""), len(lines)

    def _log_structlog(self, items: list[Any]) -> None:
        info = log.info
        fill: FillEvent | None = None
        for item in items:
            if type(item) is FillEvent:
                fill = item
                continue
            info(EVENT, **adjustment_fields(item, fill if fill is not None and fill.event_id == item.source_id else None))
            self.lines += 1
