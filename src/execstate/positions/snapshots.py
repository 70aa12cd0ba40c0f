"""Periodic position snapshots.

Entry point: `Snapshotter(store, interval_ms, sink).start()` / `.stop()` / `.take()`.
Invariants: runs on its own thread and only reads the store's published view (lock-free),
so it never delays the writer; `sink(snapshot)` failures are counted, never fatal; `stop()`
takes one last snapshot so the newest books are on disk when the service stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from execstate.domain.events import PositionSnapshot
from execstate.positions.store import PositionStore


class Snapshotter:
    def __init__(self, store: PositionStore, interval_ms: int, sink: Callable[[PositionSnapshot], None], clock: Callable[[], int] = time.time_ns) -> None:
        self._store = store
        self._interval_s = interval_ms / 1000
        self._sink = sink
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken = 0
        self.errors = 0
        self.last: PositionSnapshot | None = None

    def take(self) -> PositionSnapshot:
        snap = self._store.snapshot(self._clock())
        self.last = snap
        self.taken += 1
        try:
            self._sink(snap)
        except Exception:
            self.errors += 1
        return snap

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.take()

    def start(self) -> Snapshotter:
        self._thread = threading.Thread(target=self._run, name="execstate-snapshots", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.take()
