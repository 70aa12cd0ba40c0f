"""Snapshotter: periodic snapshots of the published view, sink failures counted, final snapshot at stop."""

import itertools
import threading
import time
from decimal import Decimal as D

from execstate.config import parse_settings
from execstate.domain.events import FillEvent, PositionSnapshot
from execstate.positions.fees import FeeSchedule
from execstate.positions.snapshots import Snapshotter
from execstate.positions.store import PositionStore


def _fill(i: int, qty: int = 1000) -> FillEvent:
    return FillEvent(
        event_id=f"F:{i}", account="9A95-1234567", order_id=f"o{i}", seqno="1", ordno="A", exchange_seq=f"{i:06d}",
        strategy="a", symbol="2330", code="2330", kind="STK", side="Buy", price=D("100"), quantity=qty, multiplier=D(1),
        is_etf=False, order_cond="Cash", order_lot="Common", market_type="", custom_field="",
        ts_event=1_779_000_000_000_000_000 + i, ts_recv=0,
    )


def _store_with_one_position() -> PositionStore:
    store = PositionStore(FeeSchedule(parse_settings({}).fees))
    store.apply_fill(_fill(1))
    store.publish()
    return store


def _clock(start: int = 1_000):
    ticks = itertools.count(start)
    return lambda: next(ticks)


def _wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_take_hands_the_current_view_to_the_sink_with_the_injected_clock():
    # Arrange
    store = _store_with_one_position()
    sunk: list[PositionSnapshot] = []
    snapper = Snapshotter(store, interval_ms=1000, sink=sunk.append, clock=_clock(42))
    # Act
    snap = snapper.take()
    # Assert
    assert sunk == [snap] and snapper.last is snap
    assert (snap.seq, snap.ts) == (1, 42)
    assert [(r.symbol, r.quantity) for r in snap.positions] == [("2330", 1000)]
    assert (snapper.taken, snapper.errors) == (1, 0)


def test_take_sees_only_published_changes():
    store = _store_with_one_position()
    snapper = Snapshotter(store, interval_ms=1000, sink=lambda s: None, clock=_clock())
    store.apply_fill(_fill(2))
    assert snapper.take().positions[0].quantity == 1000
    store.publish()
    assert snapper.take().positions[0].quantity == 2000


def test_raising_sink_is_counted_and_later_snapshots_still_taken():
    # Arrange
    store = _store_with_one_position()
    calls: list[int] = []

    def flaky(snap: PositionSnapshot) -> None:
        calls.append(snap.ts)
        if len(calls) == 1:
            raise OSError("disk full")

    snapper = Snapshotter(store, interval_ms=1000, sink=flaky, clock=_clock(7))
    # Act
    first = snapper.take()
    second = snapper.take()
    # Assert
    assert calls == [7, 8]
    assert (snapper.taken, snapper.errors) == (2, 1)
    assert snapper.last is second and first.ts == 7


def test_start_takes_periodic_snapshots_and_stop_takes_a_final_one():
    # Arrange
    store = _store_with_one_position()
    sunk: list[tuple[str, PositionSnapshot]] = []
    snapper = Snapshotter(store, interval_ms=5, sink=lambda s: sunk.append((threading.current_thread().name, s)), clock=_clock())
    # Act
    snapper.start()
    _wait_until(lambda: len(sunk) >= 3)
    store.apply_fill(_fill(2))
    store.publish()
    snapper.stop()
    count = len(sunk)
    time.sleep(0.03)
    # Assert
    assert len(sunk) == count == snapper.taken  # nothing after stop
    periodic, (final_thread, final) = sunk[:-1], sunk[-1]
    assert {name for name, _ in periodic} == {"execstate-snapshots"}
    assert final_thread == threading.current_thread().name  # taken by stop() itself
    assert final.seq == 2 and final.positions[0].quantity == 2000
    stamps = [s.ts for _, s in sunk]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # one clock reading each


def test_periodic_snapshots_continue_after_a_sink_error():
    store = _store_with_one_position()
    seen: list[int] = []

    def sink(snap: PositionSnapshot) -> None:
        seen.append(snap.ts)
        raise RuntimeError("sink down")

    snapper = Snapshotter(store, interval_ms=5, sink=sink, clock=_clock()).start()
    _wait_until(lambda: len(seen) >= 3)
    snapper.stop()
    assert snapper.errors == snapper.taken == len(seen)
    assert snapper.taken >= 4  # at least three periodic plus the final one


def test_stop_without_start_takes_one_snapshot():
    sunk: list[PositionSnapshot] = []
    snapper = Snapshotter(_store_with_one_position(), interval_ms=1000, sink=sunk.append, clock=_clock(5))
    snapper.stop()
    assert [s.ts for s in sunk] == [5]
