"""The runtime loop that decides when to reconcile.

Entry points: `Monitor(...).start()` / `.stop()`, `.request(accounts, symbols, reason)`
(operator), `.run_once()` (one evaluation; tests call it with a fake clock).

Triggers, in priority order:
- an operator request (`execstate reconcile`);
- a reconnect: the connection came back UP after DOWN or RECONNECTING (events may have been
  lost meanwhile), also when the whole outage fell between two evaluations (the heartbeat's
  `connection_since_ns` moved while the state reads UP both times); a connection down longer
  than the deadline HALTs;
- a callback gap: no order callback for longer than `callback_gap_threshold_ms` while orders
  are working (once per gap);
- a sequence gap reported by the broker (`trade_cache_health` Degraded with SequenceGap);
- unconfirmed mismatches waiting for their second look (after one second);
- the periodic poll (`poll_interval_ms`).
Invariants: one reconciliation at a time (this thread); every check goes through the
`Reconciler` (and so through the rate-limited gateway); the loop never dies on an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from execstate.config import ReconcileSettings
from execstate.reconcile.halt import HaltState
from execstate.reconcile.reconciler import ReconcileResult, Reconciler
from execstate.telemetry.logging import get_logger

log = get_logger("execstate.reconcile.monitor")
_DOWN = ("down", "reconnecting")


class Monitor:
    def __init__(
        self,
        reconciler: Reconciler,
        settings: ReconcileSettings,
        heartbeat: Callable[[], Any],
        working_orders: Callable[[], int],
        sequence_gap: Callable[[str], bool],
        halt: HaltState,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self._heartbeat = heartbeat
        self._working = working_orders
        self._sequence_gap = sequence_gap
        self.halt = halt
        self._clock = clock
        self._wall_ns = wall_ns
        self._requests: list[tuple[list[str] | None, list[str] | None, str, threading.Event, list]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_poll = clock()
        self._gap_handled_for = -1
        self._connection = "up"
        self._connection_since: int | None = None  # the heartbeat's connection_since_ns at the last look
        self._down_since: float | None = None
        self.errors = 0

    def request(self, accounts: list[str] | None = None, symbols: list[str] | None = None, reason: str = "operator", wait_s: float | None = None) -> ReconcileResult | None:
        """Ask for a reconcile; with `wait_s`, wait for its result (None if it did not finish in time)."""
        done, box = threading.Event(), []
        with self._lock:
            self._requests.append((accounts, symbols, reason, done, box))
        self._wake.set()
        if wait_s is None:
            return None
        if self._thread is None:  # not started: run it here
            self.run_once()
        done.wait(wait_s)
        return box[0] if box else None

    def run_once(self) -> ReconcileResult | None:
        """Evaluate the triggers once; run at most one reconciliation."""
        with self._lock:
            request = self._requests.pop(0) if self._requests else None
        if request is not None:
            accounts, symbols, reason, done, box = request
            result = self.reconciler.check(accounts, symbols, reason=reason)
            box.append(result)
            done.set()
            return result
        now = self._clock()
        hb = self._heartbeat()
        state = getattr(hb.connection, "value", str(hb.connection))
        previous, self._connection = self._connection, state
        since = getattr(hb, "connection_since_ns", None)
        seen_since, self._connection_since = self._connection_since, since
        bounced = seen_since is not None and since != seen_since  # down and back up between two looks
        if state in _DOWN:
            self._down_since = self._down_since if self._down_since is not None else now
            if (now - self._down_since) * 1000 > self.settings.deadline_ms:
                self.halt.enter(f"connection {state} for {now - self._down_since:.0f} s")
            return None
        self._down_since = None
        if previous in _DOWN or bounced:
            return self.reconciler.check(reason="reconnect")
        gap_ms = (self._wall_ns() - hb.last_callback_ns) / 1e6 if hb.last_callback_ns else 0.0
        if gap_ms > self.settings.callback_gap_threshold_ms and self._gap_handled_for != hb.last_callback_ns and self._working() > 0:
            self._gap_handled_for = hb.last_callback_ns
            return self.reconciler.check(reason=f"callback gap {gap_ms:.0f} ms")
        for account in self.reconciler.accounts:
            if self._sequence_gap(account):
                return self.reconciler.check([account], reason="sequence gap")
        pending = self.reconciler.tracker.pending()
        if pending and now - self._last_poll >= 1.0:
            self._last_poll = now
            return self.reconciler.check(sorted({a for a, _ in pending}), sorted({s for _, s in pending}), reason="confirm")
        if (now - self._last_poll) * 1000 >= self.settings.poll_interval_ms:
            self._last_poll = now
            return self.reconciler.check(reason="poll")
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the loop never dies silently
                self.errors += 1
                log.exception("monitor_failed", error=repr(exc))
            self._wake.wait(0.25)
            self._wake.clear()

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="execstate-reconcile", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
