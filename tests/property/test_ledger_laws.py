"""Accounting laws of the ledger and the store, for any sequence of fills (Hypothesis)."""

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from execstate.config import parse_settings
from execstate.domain.events import FillEvent
from execstate.positions.fees import FeeSchedule
from execstate.positions.ledger import PositionState, apply, avg_price, unrealized_pnl
from execstate.positions.store import PositionStore

prices = st.integers(min_value=1, max_value=200_000).map(lambda ticks: D(ticks) / 20)  # 0.05 ticks
fills = st.lists(st.tuples(st.sampled_from(["Buy", "Sell"]), prices, st.integers(min_value=1, max_value=5000)), max_size=60)
multipliers = st.sampled_from([D(1), D(10), D(50), D(200)])


@given(fills, multipliers, prices)
def test_quantity_is_sum_of_signed_fills_and_pnl_matches_cash_flow(seq, mult, mark):
    state = PositionState(multiplier=mult)
    cash = D(0)
    for side, price, qty in seq:
        state, _ = apply(state, side, price, qty)
        signed = qty if side == "Buy" else -qty
        cash -= signed * price * mult
    assert state.quantity == sum(q if s == "Buy" else -q for s, _, q in seq)
    # realized + unrealized == cash flow + mark value, exactly
    assert state.realized_pnl + unrealized_pnl(state, mark) == cash + mark * state.quantity * mult


@given(fills, multipliers)
def test_average_price_lies_within_prices_that_built_the_position(seq, mult):
    state = PositionState(multiplier=mult)
    building: list[D] = []
    for side, price, qty in seq:
        before = state.quantity
        state, _ = apply(state, side, price, qty)
        after = state.quantity
        if after == 0:
            building = []
        elif before == 0 or (before > 0) != (after > 0):
            building = [price]  # opened, or flipped: the open part is at this price
        elif abs(after) > abs(before):
            building.append(price)
        if after != 0:
            assert min(building) <= avg_price(state) <= max(building)


@given(fills, multipliers)
def test_realized_changes_sum_to_realized_total(seq, mult):
    state = PositionState(multiplier=mult)
    total = D(0)
    for side, price, qty in seq:
        state, realized = apply(state, side, price, qty)
        total += realized
    assert total == state.realized_pnl


def _fill(i: int, side: str, price: D, qty: int, strategy: str, symbol: str, kind: str) -> FillEvent:
    code = symbol.split(":")[0] if kind == "STK" else "TXF"
    return FillEvent(
        event_id=f"F:{i}", account="9A95-1234567", order_id=f"o{i}", seqno="1", ordno="A", exchange_seq=f"{i:06d}",
        strategy=strategy, symbol=symbol, code=code, kind=kind, side=side, price=price, quantity=qty,
        multiplier=D(1) if kind == "STK" else D(200), is_etf=False, order_cond="Cash" if ":" not in symbol else symbol.split(":")[1],
        order_lot="Common", market_type="", custom_field="", ts_event=1_779_000_000_000_000_000 + i * 1000, ts_recv=0,
    )


store_fills = st.lists(
    st.tuples(
        st.sampled_from(["Buy", "Sell"]), prices, st.integers(1, 3000), st.sampled_from(["a", "b"]),
        st.sampled_from([("2330", "STK"), ("2330:MarginTrading", "STK"), ("2890", "STK"), ("TXFL6", "FUT")]),
    ),
    max_size=40,
)


def _book(fill_list: list[FillEvent]) -> dict:
    store = PositionStore(FeeSchedule(parse_settings({}).fees))
    for f in fill_list:
        store.apply_fill(f)
    return dict(store.publish().positions)


@settings(max_examples=150)
@given(store_fills, st.randoms(use_true_random=False))
def test_store_books_do_not_depend_on_delivery_order(raw, rnd):
    events = [_fill(i, side, price, qty, strat, sym, kind) for i, (side, price, qty, strat, (sym, kind)) in enumerate(raw)]
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert _book(shuffled) == _book(events)


@given(store_fills)
def test_store_fees_and_taxes_equal_sum_of_delta_charges(raw):
    store = PositionStore(FeeSchedule(parse_settings({}).fees))
    fees = taxes = D(0)
    for i, (side, price, qty, strat, (sym, kind)) in enumerate(raw):
        for delta in store.apply_fill(_fill(i, side, price, qty, strat, sym, kind)):
            fees += delta.fee
            taxes += delta.tax
    books = store.publish().positions.values()
    assert fees == sum((s.fees for s in books), D(0))
    assert taxes == sum((s.taxes for s in books), D(0))
