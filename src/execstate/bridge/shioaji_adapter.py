"""Shioaji adapter: registers the order, event and session-down callbacks.

Entry points: `ShioajiBridge(api, queue).attach()`, `.heartbeat()`, `ConnectionState`,
`EVENT_CODE_STATE`.

Invariants:
- `api` is a logged-in `shioaji.Shioaji` (or the simulated one) handed in; this module never
  constructs one (its constructor connects to the network).
- The order callback runs on Shioaji's thread and does exactly three things: read
  `time.time_ns()`, put the tuple `(ts_ns, state, msg)` (a `RawExecEvent`) on the queue, and
  store the time for the heartbeat. It never parses, logs, locks or does I/O.
- The heartbeat (last callback time, connection state and since when) is readable from any
  thread at any time without locks.
- Connection events (rare) are logged where they arrive: `broker_event` (info; warning
  for an error response or a connection going down or reconnecting) and `session_down`
  (error). Order failures are logged by the normalizer, on the worker, never here.
"""

from __future__ import annotations

import enum
import queue
import time
from collections import deque
from typing import Any, NamedTuple

from execstate.telemetry.logging import get_logger

log = get_logger("execstate.bridge")


class ConnectionState(str, enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    RECONNECTING = "reconnecting"
    DOWN = "down"


# Solace session event codes delivered by set_event_callback (shioaji-facts.md §2)
EVENT_CODE_STATE: dict[int, ConnectionState] = {
    0: ConnectionState.UP,  # UP_NOTICE
    1: ConnectionState.DOWN,  # DOWN_ERROR
    2: ConnectionState.DOWN,  # CONNECT_FAILED_ERROR
    12: ConnectionState.RECONNECTING,  # RECONNECTING_NOTICE
    13: ConnectionState.UP,  # RECONNECTED_NOTICE
}


class Heartbeat(NamedTuple):
    last_callback_ns: int  # 0 before the first order callback
    connection: ConnectionState
    connection_since_ns: int
    queue_depth: int


class ConnectionEvent(NamedTuple):
    ts_ns: int
    resp_code: int
    event_code: int
    info: str
    event: str


class ShioajiBridge:
    """Owns the callbacks registered on one Shioaji session."""

    def __init__(self, api: Any, raw_queue: queue.SimpleQueue | None = None) -> None:
        self.api = api
        self.queue: queue.SimpleQueue = raw_queue if raw_queue is not None else queue.SimpleQueue()
        self._last = [0]
        self._connection = (ConnectionState.UNKNOWN, time.time_ns())
        self.connection_events: deque[ConnectionEvent] = deque(maxlen=1000)
        self.on_order = self._make_order_callback()

    def _make_order_callback(self) -> Any:
        put = self.queue.put
        now = time.time_ns
        last = self._last

        def on_order(stat: Any, msg: Any) -> None:
            ts = now()
            put((ts, stat, msg))
            last[0] = ts

        return on_order

    def on_event(self, resp_code: int, event_code: int, info: str, event: str) -> None:
        """Connection events: rare, so they may do a little more than the order callback."""
        ts = time.time_ns()
        self.connection_events.append(ConnectionEvent(ts, resp_code, event_code, info, event))
        state = EVENT_CODE_STATE.get(event_code)
        if state is not None and state is not self._connection[0]:
            self._connection = (state, ts)
        bad = resp_code != 0 or state in (ConnectionState.DOWN, ConnectionState.RECONNECTING)
        (log.warning if bad else log.info)("broker_event", resp_code=resp_code, event_code=event_code, info=str(info)[:300],
                                           detail=str(event)[:300], connection=self._connection[0].value)

    def on_session_down(self) -> None:
        ts = time.time_ns()
        self.connection_events.append(ConnectionEvent(ts, 0, 1, "session down", "SessionDown"))
        self._connection = (ConnectionState.DOWN, ts)
        log.error("session_down", connection=ConnectionState.DOWN.value)

    def attach(self) -> ShioajiBridge:
        """Register the callbacks on the session; returns self."""
        self.api.set_order_callback(self.on_order)
        self.api.set_event_callback(self.on_event)
        self.api.set_session_down_callback(self.on_session_down)
        if self._connection[0] is ConnectionState.UNKNOWN:
            self._connection = (ConnectionState.UP, time.time_ns())  # attach needs a logged-in session
        return self

    def heartbeat(self) -> Heartbeat:
        state, since = self._connection
        return Heartbeat(self._last[0], state, since, self.queue.qsize())
