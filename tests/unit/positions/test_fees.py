"""Taiwan fee and tax rules on single fills (worked examples in TWD)."""

from decimal import Decimal as D

import pytest

from execstate.config import parse_settings
from execstate.domain.events import FillEvent
from execstate.positions.fees import DayTradeBook, FeeSchedule, day_trade_step


def _fill(side="Buy", price="100", qty=1000, kind="STK", code="2330", lot="Common", cond="Cash", etf=False, mult="1"):
    return FillEvent(
        event_id="F:x", account="9A95-1234567", order_id="o", seqno="1", ordno="A", exchange_seq="1", strategy="s",
        symbol=code, code=code, kind=kind, side=side, price=D(price), quantity=qty, multiplier=D(mult), is_etf=etf,
        order_cond=cond, order_lot=lot, market_type="", custom_field="", ts_event=1, ts_recv=1,
    )


def _schedule(**stock) -> FeeSchedule:
    futures = {"fee_per_contract": {"default": "50", "TXF": "60", "TXO": "25"}}
    return FeeSchedule(parse_settings({"fees": {"stock": {"discount": "0.6", **stock}, "futures": futures}}).fees)


def test_board_lot_fee_is_discounted_and_floored():
    fee, tax = _schedule().charges(_fill(price="600", qty=1000))
    assert fee == D("513")  # 600000 * 0.001425 * 0.6 = 513.0
    assert tax == 0


def test_board_lot_minimum_fee_applies():
    fee, _ = _schedule().charges(_fill(price="10", qty=1000))  # 8.55 -> 20
    assert fee == D("20")


def test_odd_lot_minimum_is_lower():
    fee, _ = _schedule().charges(_fill(price="26.85", qty=37, lot="IntradayOdd"))  # 0.85 -> 1
    assert fee == D("1")


@pytest.mark.parametrize(("rounding", "expected"), [("floor", "22"), ("round", "23"), ("ceil", "23")])
def test_rounding_rule_is_configurable(rounding, expected):
    fee, _ = _schedule(rounding=rounding).charges(_fill(price="26.85", qty=1000))  # 22.9545
    assert fee == D(expected)


def test_stock_sell_pays_three_per_mille_tax():
    _, tax = _schedule().charges(_fill(side="Sell", price="577", qty=200, lot="IntradayOdd"))
    assert tax == D("346")  # floor(115400 * 0.003) = 346, as in shioaji issue #177


def test_etf_sell_pays_one_per_mille():
    _, tax = _schedule().charges(_fill(side="Sell", price="190.5", qty=1000, code="0050", etf=True))
    assert tax == D("190")  # floor(190.5)


def test_day_trade_sell_matched_by_same_day_buy_pays_half_rate():
    book = DayTradeBook()
    book, m_buy = day_trade_step(book, 1, "Buy", D("100"), 1000)
    book, m_sell = day_trade_step(book, 1, "Sell", D("101"), 1500)
    assert m_sell.sell_shares == 1000
    _, tax = _schedule().charges(_fill(side="Sell", price="101", qty=1500), m_sell)
    assert tax == D("303")  # floor(101000*0.0015 + 50500*0.003) = floor(151.5 + 151.5)
    assert book.sold == 500 and book.bought == 0


def test_sell_first_day_trade_gets_tax_credit_on_cover():
    book = DayTradeBook()
    book, m_sell = day_trade_step(book, 1, "Sell", D("200"), 1000)
    _, sell_tax = _schedule().charges(_fill(side="Sell", price="200", qty=1000), m_sell)
    assert sell_tax == D("600")  # full rate: the cover is not known yet
    book, m_buy = day_trade_step(book, 1, "Buy", D("195"), 1000)
    _, credit = _schedule().charges(_fill(side="Buy", price="195", qty=1000), m_buy)
    assert credit == D("-300")  # 200000 * (0.003 - 0.0015) booked back
    assert sell_tax + credit == D("300")  # what a day-trade sell pays


def test_day_trade_matching_resets_on_a_new_day():
    book, _ = day_trade_step(DayTradeBook(), 1, "Buy", D("100"), 1000)
    book, m = day_trade_step(book, 2, "Sell", D("100"), 1000)
    assert m.sell_shares == 0


def test_futures_tax_rounds_per_contract_half_up():
    fee, tax = _schedule().charges(_fill(kind="FUT", code="TXF", price="27012", qty=3, mult="200"))
    # 27012 * 200 * 0.00002 = 108.048 -> 108 per contract
    assert tax == D("324")
    assert fee == D("180")  # 60 per contract (config) * 3


def test_option_tax_is_one_per_mille_of_premium():
    fee, tax = _schedule().charges(_fill(kind="OPT", code="TXO", price="131", qty=3, mult="50"))
    # 131 * 50 * 0.001 = 6.55 -> 7 per contract
    assert tax == D("21")
    assert fee == D("75")


def test_unknown_product_uses_default_fee_per_contract():
    fee, _ = _schedule().charges(_fill(kind="FUT", code="CDF", price="1000", qty=2, mult="2000"))
    assert fee == D("100")
