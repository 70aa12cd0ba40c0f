"""HALT: the state in which strategies must not trade because the books cannot be trusted.

Entry points: `HaltState.enter(reason)`, `.clear(by)`, `.subscribe(callback)`, `.is_halted`,
`.status()`.

Invariants: thread-safe (any thread may read it or enter it); entering while halted keeps
the first reason and its time; every change is published to subscribers (called outside
the lock, so a subscriber may read the state), and a raising subscriber never blocks others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from execstate.telemetry.logging import get_logger

log = get_logger("execstate.halt")


@dataclass(frozen=True, slots=True)
class HaltStatus:
    halted: bool
    reason: str
    since_ns: int
    cleared_by: str = ""


class HaltState:
    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._status = HaltStatus(False, "", clock())
        self._subscribers: list[Callable[[HaltStatus], None]] = []
        self.entered = 0

    @property
    def is_halted(self) -> bool:
        return self._status.halted

    def status(self) -> HaltStatus:
        return self._status

    def subscribe(self, callback: Callable[[HaltStatus], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def enter(self, reason: str) -> bool:
        """HALT with `reason`; returns False when already halted (the first reason stays)."""
        with self._lock:
            if self._status.halted:
                return False
            self._status = HaltStatus(True, reason, self._clock())
            self.entered += 1
            subscribers = list(self._subscribers)
        log.error("halt_entered", reason=reason)
        self._publish(subscribers)
        return True

    def clear(self, by: str) -> bool:
        """Leave HALT (an operator command, or a clean reconcile); False when not halted."""
        with self._lock:
            if not self._status.halted:
                return False
            previous = self._status.reason
            self._status = HaltStatus(False, "", self._clock(), cleared_by=by)
            subscribers = list(self._subscribers)
        log.warning("halt_cleared", by=by, was=previous)
        self._publish(subscribers)
        return True

    def _publish(self, subscribers: list[Callable[[HaltStatus], None]]) -> None:
        status = self._status
        for callback in subscribers:
            try:
                callback(status)
            except Exception as exc:
                log.error("halt_subscriber_failed", error=repr(exc))
