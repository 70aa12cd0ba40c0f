"""PositionStore: deltas, keys, exchange-order re-folds, published views, marks and snapshots."""

import math
import sys
import threading
from decimal import Decimal as D
from types import MappingProxyType

import pytest

from execstate.config import parse_settings
from execstate.domain.errors import FieldError
from execstate.domain.events import FillEvent
from execstate.positions.fees import FeeSchedule
from execstate.positions.store import PositionKey, PositionStore, canonical_key

ACCT = "9A95-1234567"
OTHER_ACCT = "9A95-7654321"
FUT_ACCT = "F002000-7654321"
T0 = 1_779_000_000_000_000_000  # 2026-05-17 06:40 UTC, 14:40 Taipei: every fill below is on one Taipei day
MS = 1_000_000


def _fill(i, side, price, qty, *, strategy="a", symbol="2330", account=ACCT, t=None, cond=None, kind="STK", mult=None):
    """Fill number `i` (exchange_seq and event_id from it) at T0 + `t` ms (default `i`)."""
    code = symbol.split(":")[0] if kind == "STK" else symbol[:3]
    if cond is None:
        cond = (symbol.split(":")[1] if ":" in symbol else "Cash") if kind == "STK" else ""
    return FillEvent(
        event_id=f"F:{account}:o{i}:{i:06d}", account=account, order_id=f"o{i}", seqno=f"{i}", ordno="A", exchange_seq=f"{i:06d}",
        strategy=strategy, symbol=symbol, code=code, kind=kind, side=side, price=D(price), quantity=qty,
        multiplier=D(mult) if mult is not None else (D(1) if kind == "STK" else D(200)), is_etf=False, order_cond=cond,
        order_lot="Common" if kind == "STK" else "", market_type="" if kind == "STK" else "Day", custom_field="",
        ts_event=T0 + (i if t is None else t) * MS, ts_recv=T0 + 10_000 * MS + i,
    )


def _fut(i, side, price, qty, *, symbol="TXFL6", strategy="f", t=None):
    return _fill(i, side, price, qty, strategy=strategy, symbol=symbol, account=FUT_ACCT, t=t, kind="FUT")


def _store() -> PositionStore:
    # defaults: commission 0.1425% floored, min 20; tax 0.3%, cash day-trade 0.15%
    return PositionStore(FeeSchedule(parse_settings({}).fees))


def _apply_all(store, fills):
    deltas = []
    for f in fills:
        deltas += store.apply_fill(f)
    return deltas


def _books(fills) -> dict:
    store = _store()
    _apply_all(store, sorted(fills, key=canonical_key))
    return dict(store.publish().positions)


# --- deltas ------------------------------------------------------------------------------


def test_in_order_fills_yield_one_delta_each_with_running_totals():
    # Arrange
    store = _store()
    buy = _fill(1, "Buy", "100", 1000)
    sell = _fill(2, "Sell", "110", 400)
    # Act
    d1 = store.apply_fill(buy)
    d2 = store.apply_fill(sell)
    # Assert
    assert len(d1) == 1 and len(d2) == 1
    first, second = d1[0], d2[0]
    assert (first.seq, first.cause, first.source_id) == (1, "fill", buy.event_id)
    assert (first.account, first.strategy, first.symbol) == (ACCT, "a", "2330")
    assert (first.quantity_before, first.quantity_after, first.avg_price) == (0, 1000, D("100"))
    assert (first.fee, first.tax, first.fees, first.taxes) == (D("142"), D("0"), D("142"), D("0"))  # floor(142.5)
    assert (first.realized_pnl_change, first.realized_pnl) == (0, 0)
    assert (first.ts_event, first.ts_recv) == (buy.ts_event, buy.ts_recv)
    assert (second.seq, second.cause, second.source_id) == (2, "fill", sell.event_id)
    assert (second.quantity_before, second.quantity_after, second.avg_price) == (1000, 600, D("100"))
    assert second.realized_pnl_change == second.realized_pnl == D("4000")  # (110 - 100) * 400
    # fee floor(44000 * 0.001425 = 62.7); a same-day cash sell matched by the buy: floor(44000 * 0.0015)
    assert (second.fee, second.tax, second.fees, second.taxes) == (D("62"), D("66"), D("204"), D("66"))
    assert store.refolds == 0


def test_unpublished_fills_are_invisible_to_readers():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    assert store.view().seq == 0
    assert dict(store.view().positions) == {}
    assert store.snapshot(T0).positions == ()


# --- keys --------------------------------------------------------------------------------


def test_same_symbol_in_two_strategies_is_two_positions():
    store = _store()
    _apply_all(store, [_fill(1, "Buy", "100", 1000, strategy="momo"), _fill(2, "Buy", "101", 2000, strategy="meanrev")])
    positions = store.publish().positions
    assert set(positions) == {PositionKey(ACCT, "momo", "2330"), PositionKey(ACCT, "meanrev", "2330")}
    assert positions[PositionKey(ACCT, "momo", "2330")].quantity == 1000
    assert positions[PositionKey(ACCT, "meanrev", "2330")].quantity == 2000


def test_margin_condition_is_a_separate_position_from_cash():
    store = _store()
    _apply_all(store, [_fill(1, "Buy", "100", 1000, symbol="2330"), _fill(2, "Buy", "100", 3000, symbol="2330:MarginTrading")])
    positions = store.publish().positions
    assert positions[PositionKey(ACCT, "a", "2330")].quantity == 1000
    assert positions[PositionKey(ACCT, "a", "2330:MarginTrading")].quantity == 3000


def test_futures_positions_are_keyed_by_full_code():
    store = _store()
    _apply_all(store, [_fut(1, "Buy", "27000", 2, symbol="TXFK6"), _fut(2, "Sell", "27100", 1, symbol="TXFL6")])
    positions = store.publish().positions
    assert positions[PositionKey(FUT_ACCT, "f", "TXFK6")].quantity == 2
    assert positions[PositionKey(FUT_ACCT, "f", "TXFL6")].quantity == -1


def test_same_strategy_and_symbol_in_two_accounts_is_two_positions():
    store = _store()
    _apply_all(store, [_fill(1, "Buy", "100", 1000), _fill(2, "Sell", "100", 1000, account=OTHER_ACCT)])
    positions = store.publish().positions
    assert positions[PositionKey(ACCT, "a", "2330")].quantity == 1000
    assert positions[PositionKey(OTHER_ACCT, "a", "2330")].quantity == -1000


# --- day trades --------------------------------------------------------------------------


def test_day_trade_matches_across_strategies_in_one_account():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000, strategy="momo"))
    [delta] = store.apply_fill(_fill(2, "Sell", "101", 1000, strategy="meanrev"))
    assert delta.tax == D("151")  # floor(101000 * 0.0015): matched by momo's buy


def test_day_trade_does_not_match_across_accounts():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    [delta] = store.apply_fill(_fill(2, "Sell", "101", 1000, account=OTHER_ACCT))
    assert delta.tax == D("303")  # full 0.3%: another account's buy is no day trade


def test_day_trade_does_not_match_a_buy_of_the_previous_taipei_day():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    [delta] = store.apply_fill(_fill(2, "Sell", "101", 1000, t=24 * 3600 * 1000))
    assert delta.tax == D("303")


# --- late fills --------------------------------------------------------------------------


def test_late_fill_refolds_books_to_exchange_order():
    # Arrange: average cost makes realized PnL depend on order
    fills = [_fill(1, "Buy", "100", 1000), _fill(2, "Buy", "120", 1000), _fill(3, "Sell", "110", 1000)]
    store = _store()
    # Act: fill 2 arrives after fill 3
    before = _apply_all(store, [fills[0], fills[2]])
    late = store.apply_fill(fills[1])
    # Assert
    assert dict(store.publish().positions) == _books(fills)
    assert store.refolds == 1
    assert [d.cause for d in late] == ["fill"]
    assert (late[0].source_id, late[0].quantity_before, late[0].quantity_after) == (fills[1].event_id, 0, 1000)
    assert late[0].avg_price == D("110")  # (100 + 120) / 2, not 120
    assert late[0].realized_pnl == 0  # the sell closed at the average
    assert [d.seq for d in before + late] == [1, 2, 3]


def test_late_fill_moves_day_trade_tax_credit_between_strategies_with_reorder_deltas():
    # Arrange: "short" sells first (full tax 600), "cover" buys later and gets the credit (-300)
    short = _fill(2, "Sell", "200", 1000, strategy="short")
    cover = _fill(3, "Buy", "195", 1000, strategy="cover")
    late = _fill(1, "Buy", "190", 1000, strategy="early")  # executed before the sell, delivered last
    store = _store()
    first = _apply_all(store, [short, cover])
    assert [d.tax for d in first] == [D("600"), D("-300")]
    # Act
    deltas = store.apply_fill(late)
    # Assert: the early buy now matches the sell (half rate), so the cover's credit is gone
    by_strategy = {d.strategy: d for d in deltas}
    assert [d.cause for d in deltas] == ["fill", "reorder", "reorder"]
    assert deltas[0].strategy == "early" and deltas[0].source_id == late.event_id
    assert set(by_strategy) == {"early", "short", "cover"}
    s, c = by_strategy["short"], by_strategy["cover"]
    assert (s.source_id, s.quantity_before, s.quantity_after, s.tax, s.taxes) == (late.event_id, -1000, -1000, D("-300"), D("300"))
    assert (c.source_id, c.quantity_before, c.quantity_after, c.tax, c.taxes) == (late.event_id, 1000, 1000, D("300"), D("0"))
    assert (s.fee, c.fee, s.realized_pnl_change, c.realized_pnl_change) == (0, 0, 0, 0)
    assert s.ts_event == c.ts_event == late.ts_event
    assert [d.seq for d in first + deltas] == [1, 2, 3, 4, 5]
    assert store.refolds == 1
    assert dict(store.publish().positions) == _books([short, cover, late])
    assert store.view().seq == 5


def test_late_fill_emits_no_reorder_delta_for_unchanged_positions():
    # an early buy changes neither the margin position nor the later cash buy's books
    store = _store()
    _apply_all(store, [_fill(2, "Buy", "100", 1000, symbol="2330:MarginTrading"), _fill(3, "Buy", "101", 1000)])
    deltas = store.apply_fill(_fill(1, "Buy", "99", 1000, strategy="b"))
    assert [(d.cause, d.strategy, d.symbol) for d in deltas] == [("fill", "b", "2330")]
    assert store.refolds == 1


def test_late_fill_in_one_account_does_not_refold_another_account():
    store = _store()
    _apply_all(store, [_fill(2, "Sell", "200", 1000, account=OTHER_ACCT), _fill(3, "Sell", "200", 1000)])
    deltas = store.apply_fill(_fill(1, "Buy", "190", 1000, strategy="b"))  # older than both sells: refolds ACCT's group only
    assert [(d.cause, d.account) for d in deltas] == [("fill", ACCT), ("reorder", ACCT)]
    assert deltas[1].strategy == "a" and deltas[1].taxes == D("300")  # now a day trade
    assert store.publish().positions[PositionKey(OTHER_ACCT, "a", "2330")].taxes == D("600")


def test_late_fill_of_one_contract_month_does_not_refold_another():
    store = _store()
    _apply_all(store, [_fut(5, "Buy", "27000", 1, symbol="TXFK6"), _fut(1, "Buy", "27100", 1, symbol="TXFL6")])
    # older than TXFK6's fill, newer than TXFL6's: in order for its own group
    deltas = store.apply_fill(_fut(3, "Buy", "27200", 1, symbol="TXFL6"))
    assert store.refolds == 0
    assert [d.symbol for d in deltas] == ["TXFL6"]


def test_late_futures_fill_refolds_its_contract_month():
    fills = [_fut(1, "Buy", "27000", 2), _fut(2, "Sell", "27050", 1), _fut(3, "Buy", "27100", 1)]
    store = _store()
    _apply_all(store, [fills[0], fills[2]])
    deltas = store.apply_fill(fills[1])
    assert store.refolds == 1
    assert deltas[0].realized_pnl_change == D("10000")  # (27050 - 27000) * 1 * 200, at its exchange position
    assert dict(store.publish().positions) == _books(fills)


def test_fill_at_the_same_time_orders_by_exchange_seq():
    fills = [_fill(1, "Buy", "100", 1000, t=0), _fill(2, "Buy", "120", 1000, t=0), _fill(3, "Sell", "130", 1000, t=0)]
    store = _store()
    _apply_all(store, [fills[0], fills[2], fills[1]])
    assert store.refolds == 1
    assert dict(store.publish().positions) == _books(fills)


def test_late_fill_delta_changes_add_up_to_the_position_totals():
    # Arrange: buy 100, sell 110 realizes 10000; a buy at 120 executed between them arrives last
    store = _store()
    deltas = _apply_all(store, [_fill(1, "Buy", "100", 1000), _fill(3, "Sell", "110", 1000)])
    # Act
    deltas += store.apply_fill(_fill(2, "Buy", "120", 1000))
    # Assert: a subscriber summing changes must end at the published totals
    state = store.publish().positions[PositionKey(ACCT, "a", "2330")]
    assert sum(d.realized_pnl_change for d in deltas) == state.realized_pnl  # 10000 + 0 != 0
    assert sum(d.fee for d in deltas) == state.fees
    assert sum(d.tax for d in deltas) == state.taxes


# --- publish and views -------------------------------------------------------------------


def test_view_taken_before_publish_does_not_change_afterwards():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    old = store.publish()
    old_items = dict(old.positions)
    store.apply_fill(_fill(2, "Buy", "100", 1000))
    store.apply_fill(_fill(3, "Buy", "100", 1000, strategy="b"))
    new = store.publish()
    assert old.seq == 1 and dict(old.positions) == old_items
    assert PositionKey(ACCT, "b", "2330") not in old.positions
    assert old.positions[PositionKey(ACCT, "a", "2330")].quantity == 1000
    assert new.positions[PositionKey(ACCT, "a", "2330")].quantity == 2000


def test_view_cannot_be_mutated():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    view = store.publish()
    key = PositionKey(ACCT, "a", "2330")
    assert isinstance(view.positions, MappingProxyType)
    with pytest.raises(TypeError):
        view.positions[key] = view.positions[key]  # type: ignore[index]
    with pytest.raises(AttributeError):
        view.positions[key].quantity = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        view.seq = 99  # type: ignore[misc]


def test_published_view_seq_equals_last_delta_seq():
    store = _store()
    deltas = _apply_all(store, [_fill(2, "Sell", "200", 1000, strategy="x"), _fill(3, "Buy", "195", 1000, strategy="y"),
                                _fill(1, "Buy", "190", 1000, strategy="z")])
    assert len(deltas) > 3  # reorder deltas take seq numbers too
    assert store.publish().seq == deltas[-1].seq
    assert store.view() is store.publish()


def test_publish_without_changes_returns_the_same_view():
    store = _store()
    empty = store.publish()
    assert store.publish() is empty and empty.seq == 0
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    view = store.publish()
    assert view is not empty
    assert store.publish() is view


def test_reader_never_sees_a_torn_batch():
    # Arrange: each batch moves 1000 shares between strategies a and b (two fills, one publish),
    # so a + b == 10000 and the view seq is odd at every batch boundary.
    store = _store()
    store.apply_fill(_fill(0, "Buy", "100", 10_000, strategy="a", t=0))
    store.publish()
    ka, kb = PositionKey(ACCT, "a", "2330"), PositionKey(ACCT, "b", "2330")
    batches = 1500
    done = threading.Event()
    torn: list = []
    seen: set[int] = set()

    def read() -> None:
        while not done.is_set():
            view = store.view()
            pos = view.positions
            a = pos[ka].quantity if ka in pos else 0
            b = pos[kb].quantity if kb in pos else 0
            seen.add(view.seq)
            if a + b != 10_000 or view.seq % 2 != 1:
                torn.append((view.seq, a, b))

    reader = threading.Thread(target=read)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        reader.start()
        # Act
        for n in range(batches):
            src, dst = ("a", "b") if n % 2 == 0 else ("b", "a")
            store.apply_fill(_fill(2 * n + 1, "Sell", "100", 1000, strategy=src))
            store.apply_fill(_fill(2 * n + 2, "Buy", "100", 1000, strategy=dst))
            store.publish()
    finally:
        done.set()
        reader.join(timeout=10)
        sys.setswitchinterval(old_interval)
    # Assert
    assert torn == []
    assert len(seen) > 1  # the reader ran while the writer wrote
    assert store.view().seq == 2 * batches + 1


# --- marks and snapshots -----------------------------------------------------------------


def test_mark_fed_from_another_thread_prices_unrealized_pnl():
    # Arrange
    store = _store()
    _apply_all(store, [_fill(1, "Buy", "100", 1000), _fut(2, "Sell", "27000", 2)])
    store.publish()
    # Act
    feeder = threading.Thread(target=lambda: (store.set_mark("2330", 105.5), store.set_mark("TXFL6", "26990")))
    feeder.start()
    feeder.join()
    snap = store.snapshot(T0 + 5)
    # Assert
    by_symbol = {r.symbol: r for r in snap.positions}
    assert by_symbol["2330"].mark_price == D("105.5")
    assert by_symbol["2330"].unrealized_pnl == D("5500")  # (105.5 - 100) * 1000
    assert by_symbol["TXFL6"].mark_price == D("26990")
    assert by_symbol["TXFL6"].unrealized_pnl == D("4000")  # short 2 at 27000, 10 points * 2 * 200
    assert by_symbol["TXFL6"].multiplier == D("200")


def test_margin_position_is_marked_by_its_code():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000, symbol="2330:MarginTrading"))
    store.publish()
    store.set_mark("2330", "98")
    [record] = store.snapshot(T0).positions
    assert record.mark_price == D("98")
    assert record.unrealized_pnl == D("-2000")


def test_mark_fed_under_a_suffixed_symbol_marks_the_code():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    store.publish()
    store.set_mark("2330:MarginTrading", "101")
    assert store.snapshot(T0).positions[0].mark_price == D("101")


@pytest.mark.parametrize("bad", [math.nan, -1, "abc", None, True])
def test_bad_mark_raises_field_error_naming_mark_price_and_keeps_the_old_mark(bad):
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100", 1000))
    store.publish()
    store.set_mark("2330", "101")
    with pytest.raises(FieldError, match="^mark_price=") as info:
        store.set_mark("2330", bad)
    assert info.value.field == "mark_price"
    assert store.snapshot(T0).positions[0].mark_price == D("101")


def test_snapshot_records_are_sorted_and_flat_avg_is_zero():
    # Arrange: inserted out of key order; one position closed flat
    store = _store()
    _apply_all(store, [
        _fill(1, "Buy", "100", 1000, strategy="zeta", symbol="2890"),
        _fill(2, "Buy", "100", 1000, strategy="alpha", symbol="2890"),
        _fill(3, "Buy", "50", 1000, strategy="alpha", symbol="2330"),
        _fill(4, "Sell", "55", 1000, strategy="alpha", symbol="2330"),
        _fill(5, "Buy", "100", 1000, strategy="zeta", account="0000-0000001"),
    ])
    view = store.publish()
    # Act
    snap = store.snapshot(T0 + 123)
    # Assert
    keys = [(r.account, r.strategy, r.symbol) for r in snap.positions]
    assert keys == sorted(keys) and len(keys) == 4
    assert keys[0] == ("0000-0000001", "zeta", "2330")
    assert (snap.seq, snap.ts) == (view.seq, T0 + 123)
    flat = next(r for r in snap.positions if (r.strategy, r.symbol) == ("alpha", "2330"))
    assert (flat.quantity, flat.avg_price, flat.unrealized_pnl) == (0, D("0"), D("0"))
    assert flat.realized_pnl == D("5000")
    assert flat.fees > 0 and flat.taxes > 0


def test_snapshot_without_mark_has_zero_unrealized_and_no_mark():
    store = _store()
    store.apply_fill(_fill(1, "Buy", "100.5", 1000))
    store.publish()
    [record] = store.snapshot(T0).positions
    assert (record.quantity, record.avg_price, record.mark_price, record.unrealized_pnl) == (1000, D("100.5"), None, D("0"))
    assert (record.fees, record.taxes, record.multiplier) == (D("143"), D("0"), D("1"))  # floor(143.2125)
