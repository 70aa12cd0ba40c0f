"""Average-cost ledger: worked examples of open, add, reduce, close, flip and short."""

from decimal import Decimal as D

from execstate.positions.ledger import PositionState, apply, avg_price, unrealized_pnl


def _state(mult: str = "1") -> PositionState:
    return PositionState(multiplier=D(mult))


def test_buys_average_their_prices():
    s, r1 = apply(_state(), "Buy", D("100"), 1000)
    s, r2 = apply(s, "Buy", D("110"), 3000)
    assert s.quantity == 4000
    assert avg_price(s) == D("107.5")
    assert r1 == r2 == 0


def test_partial_sell_realizes_against_average_and_keeps_average():
    s, _ = apply(_state(), "Buy", D("100"), 1000)
    s, _ = apply(s, "Buy", D("110"), 1000)
    s, realized = apply(s, "Sell", D("120"), 500)
    assert realized == D("7500")  # (120 - 105) * 500
    assert s.quantity == 1500
    assert avg_price(s) == D("105")


def test_close_realizes_everything_and_zeroes_cost():
    s, _ = apply(_state(), "Buy", D("26.85"), 3000)
    s, realized = apply(s, "Sell", D("27.05"), 3000)
    assert s.quantity == 0 and s.cost == 0
    assert realized == D("600.00")


def test_flip_is_close_plus_open_at_fill_price():
    s, _ = apply(_state("200"), "Buy", D("27000"), 2)  # TXF long 2
    s, realized = apply(s, "Sell", D("27010"), 5)  # close 2, open short 3
    assert realized == D("4000")  # 10 points * 2 * 200
    assert s.quantity == -3
    assert avg_price(s) == D("27010")


def test_short_profits_when_price_falls():
    s, _ = apply(_state("50"), "Sell", D("131"), 3)  # TXO premium short
    s, realized = apply(s, "Buy", D("126"), 3)
    assert realized == D("750")  # (131 - 126) * 3 * 50
    assert s.quantity == 0


def test_long_loses_like_broker_example():
    # shioaji docs: MXF (15541 - 15611) * 50 = -3500
    s, _ = apply(_state("50"), "Buy", D("15611"), 1)
    s, realized = apply(s, "Sell", D("15541"), 1)
    assert realized == D("-3500")


def test_fees_and_taxes_accumulate_separately_from_gross_pnl():
    s, _ = apply(_state(), "Buy", D("100"), 1000, fee=D("85"), tax=D("0"))
    s, realized = apply(s, "Sell", D("101"), 1000, fee=D("86"), tax=D("303"))
    assert realized == D("1000")
    assert s.realized_pnl == D("1000") and s.fees == D("171") and s.taxes == D("303")


def test_unrealized_uses_mark_and_multiplier():
    s, _ = apply(_state("200"), "Sell", D("27000"), 2)
    assert unrealized_pnl(s, D("26990")) == D("4000")
    assert unrealized_pnl(s, None) == 0


def test_reduce_with_repeating_average_keeps_books_consistent():
    s, _ = apply(_state(), "Buy", D("10"), 1)
    s, _ = apply(s, "Buy", D("10"), 1)
    s, _ = apply(s, "Buy", D("11"), 1)  # avg 10.333...
    s, r1 = apply(s, "Sell", D("12"), 1)
    s, r2 = apply(s, "Sell", D("12"), 2)
    assert s.quantity == 0 and s.cost == 0
    assert r1 + r2 == D("5")  # 36 - 31 exactly, whatever the rounding of the average
