"""In-process event bus: strategies and risk subscribe to fills, order events and deltas.

Entry points: `EventBus.subscribe(topic, callback)`, `EventBus.iterate(topic, wrap=None) ->
Subscription` (iterator, `get`, `drain`, `close`),
`EventBus.publish(topic, event)`; topics `TOPIC_FILL`, `TOPIC_ORDER`, `TOPIC_DELTA`, `TOPIC_SNAPSHOT`.

Invariants:
- Fill, order and delta subscribers are called on the pipeline worker's thread (snapshot
  subscribers on the snapshot thread), in publish order, with the immutable event; they must be quick (hand work to their own thread or use `iterate`).
- A subscriber that raises never stops the worker or other subscribers: the error is
  counted (`errors`) and reported through `on_error`.
- An iterator subscription gets its own unbounded queue; closing it unsubscribes.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

TOPIC_FILL = "fill"
TOPIC_ORDER = "order"
TOPIC_DELTA = "delta"
TOPIC_SNAPSHOT = "snapshot"  # published from the snapshot thread, every snapshot interval
TOPICS = (TOPIC_FILL, TOPIC_ORDER, TOPIC_DELTA, TOPIC_SNAPSHOT)

_CLOSED = object()


class Subscription:
    """An iterator over one topic's events, with its own unbounded queue; `close()` ends it.

    `wrap(put)` (optional) returns the callable actually subscribed, e.g. a filter that calls
    `put` only for one strategy's events. `get(timeout)` raises `queue.Empty` on timeout,
    `drain()` returns what is queued without waiting. Usable as a context manager.
    """

    def __init__(self, bus: EventBus, topic: str, wrap: Callable[[Callable[[Any], None]], Callable[[Any], None]] | None = None) -> None:
        self._bus = bus
        self._topic = topic
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._callback = wrap(self._queue.put) if wrap is not None else self._queue.put

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _CLOSED:
            raise StopIteration
        return item

    def get(self, timeout: float | None = None) -> Any:
        """Next event, or raise `queue.Empty` after `timeout` seconds."""
        item = self._queue.get(timeout=timeout)
        if item is _CLOSED:
            raise StopIteration
        return item

    def drain(self) -> list[Any]:
        """Every event already queued, without waiting."""
        out = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is _CLOSED:
                self._queue.put(_CLOSED)
                return out
            out.append(item)

    def close(self) -> None:
        self._bus.unsubscribe(self._topic, self._callback)
        self._queue.put(_CLOSED)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Synchronous fan-out of pipeline events to in-process subscribers."""

    def __init__(self, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self._subscribers: dict[str, tuple[Callable[[Any], None], ...]] = {t: () for t in TOPICS}
        self._on_error = on_error
        self.errors = 0

    def _check(self, topic: str) -> None:
        if topic not in self._subscribers:
            raise ValueError(f"topic={topic!r}: expected one of {', '.join(TOPICS)}")

    def subscribe(self, topic: str, callback: Callable[[Any], None]) -> None:
        """Call `callback(event)` for every event published on `topic`."""
        self._check(topic)
        self._subscribers[topic] = (*self._subscribers[topic], callback)

    def unsubscribe(self, topic: str, callback: Callable[[Any], None]) -> None:
        self._check(topic)
        self._subscribers[topic] = tuple(cb for cb in self._subscribers[topic] if cb != callback)

    def iterate(self, topic: str, wrap: Callable[[Callable[[Any], None]], Callable[[Any], None]] | None = None) -> Subscription:
        """Subscribe with an iterator (for a consumer on its own thread); `wrap`: see `Subscription`."""
        self._check(topic)
        sub = Subscription(self, topic, wrap)
        self.subscribe(topic, sub._callback)
        return sub

    def has_subscribers(self, topic: str) -> bool:
        self._check(topic)
        return bool(self._subscribers[topic])

    def publish(self, topic: str, event: Any) -> None:
        try:
            callbacks = self._subscribers[topic]
        except KeyError:
            self._check(topic)
            raise
        for callback in callbacks:
            try:
                callback(event)
            except Exception as exc:  # a subscriber's bug must not stop the pipeline
                self.errors += 1
                if self._on_error is not None:
                    self._on_error(topic, exc)
