"""SimBroker: positions and PnL from truth, units, report shapes, rate limits and the ban."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from decimal import Decimal

import pytest
import shioaji as sj

from execstate.bridge.sim import (
    BAN_MESSAGE, SimBroker, SimConfig, SimFuturePosition, SimStockPosition, event_ts, generate_session)
from execstate.bridge.sim.records import (
    InitialPosition, SimFill, SimFutureProfitDetail, SimFutureProfitLoss, SimSettlement,
    SimStockProfitDetail, SimStockProfitLoss)

STOCK = "9A95-1234567"


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def session():
    return generate_session(SimConfig(seed=1))


@pytest.fixture()
def clock():
    return FakeClock()


@pytest.fixture()
def broker(session, clock):
    return SimBroker(session, clock)


def _fill(action: str, qty: int, price: str, ts: float, *, code="2890", lot="Common") -> SimFill:
    return SimFill(STOCK, f"{int(ts):08x}", "momo", code, code, action, Decimal(price), qty, 1, "Cash",
                   lot, ts, "100001", "W0001", str(int(ts)), "STK")


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_report_records_mirror_the_stub_attribute_names():
    assert _fields(SimStockPosition) == [
        "id", "code", "direction", "quantity", "price", "last_price", "pnl", "yd_quantity", "cond",
        "margin_purchase_amount", "collateral", "short_sale_margin", "interest"]
    assert _fields(SimFuturePosition) == ["id", "code", "direction", "quantity", "price", "last_price", "pnl"]
    assert _fields(SimStockProfitLoss) == ["id", "code", "quantity", "pnl", "date", "dseq", "price",
                                           "pr_ratio", "cond", "seqno"]
    assert _fields(SimFutureProfitLoss) == ["id", "code", "quantity", "pnl", "date", "entry_price",
                                            "cover_price", "tax", "fee", "direction"]
    assert set(_fields(SimStockProfitDetail)) == {
        "date", "code", "quantity", "dseq", "fee", "tax", "currency", "price", "cost", "rep_margintrading_amt",
        "rep_collateral", "rep_margin", "shortselling_fee", "ex_dividend_amt", "interest", "trade_type", "cond"}
    assert set(_fields(SimFutureProfitDetail)) == {
        "date", "code", "quantity", "dseq", "fee", "tax", "currency", "direction", "entry_date",
        "entry_quantity", "entry_seqno", "entry_price", "cover_price", "pnl"}
    assert _fields(SimSettlement) == ["t_money", "t1_money", "t2_money", "t_day", "t1_day", "t2_day", "status"]


def test_common_unit_drops_odd_shares_and_share_unit_keeps_them(clock):
    quiet = generate_session(SimConfig(seed=1, n_orders=0))
    broker = SimBroker(quiet, clock)

    common = {(p.code, p.cond.value): p for p in broker.list_positions()}
    shares = {(p.code, p.cond.value): p for p in broker.list_positions(unit=sj.Unit.Share)}

    assert (common[("2890", "Cash")].quantity, shares[("2890", "Cash")].quantity) == (2, 2037)
    assert (common[("2890", "Cash")].yd_quantity, shares[("2890", "Cash")].yd_quantity) == (2, 2037)
    assert shares[("2317", "ShortSelling")].direction == sj.Action.Sell
    assert isinstance(shares[("2330", "MarginTrading")].cond, sj.StockOrderCond)
    assert broker.list_positions(unit="Share")[0].quantity == 2037
    assert [(p.code, p.quantity, p.direction) for p in broker.list_positions(broker.futopt_account)] == [
        ("TXFL6", 2, sj.Action.Buy), ("TXO28200L6", 4, sj.Action.Sell)]


def test_positions_equal_initial_plus_truth_fills(session, broker):
    expected = defaultdict(int)
    for p in session.initial_positions:
        expected[(p.account, p.code, p.cond)] += p.quantity
    for f in session.fills:
        expected[(f.account, f.position_code, f.order_cond)] += f.signed_quantity

    got = {}
    for acct, key in ((broker.stock_account, STOCK), (broker.futopt_account, "F002000-7654321")):
        for p in broker.list_positions(acct, unit=sj.Unit.Share):
            sign = 1 if p.direction == sj.Action.Buy else -1
            cond = p.cond.value if isinstance(p, SimStockPosition) else ""
            assert (key, p.code, cond) not in got
            got[(key, p.code, cond)] = sign * p.quantity
            assert isinstance(p.price, float) and isinstance(p.pnl, float) and p.quantity > 0
    assert got == {k: v for k, v in expected.items() if v}


def test_average_price_is_fifo_open_lots_and_pnl_follows_the_mark(session, clock):
    fills = [_fill("Buy", 1000, "10", 1.0), _fill("Buy", 1000, "12", 2.0), _fill("Sell", 1000, "13", 3.0)]
    tiny = dataclasses.replace(session, fills=fills, initial_positions=())
    broker = SimBroker(tiny, clock)

    [pos] = broker.list_positions(unit=sj.Unit.Share)
    broker.set_mark("2890", "12.5")
    [marked] = broker.list_positions(unit=sj.Unit.Share)
    [row] = broker.list_profit_loss(unit=sj.Unit.Share)
    [lot] = broker.list_profit_loss_detail(detail_id=row.id, unit=sj.Unit.Share)

    # price: the open 12 lot with its buy fee (max(20, floor(12000 x 0.000855))) = 12,020 / 1000;
    # pnl nets the estimated sale: 13000 - floor(13000 x 0.1425%) - floor(13000 x 0.3%) - 12020
    assert (pos.quantity, pos.price, pos.last_price, pos.pnl) == (1000, 12.02, 13.0, 13000 - 18 - 39 - 12020)
    assert (marked.last_price, marked.pnl) == (12.5, 12500 - 17 - 37 - 12020)
    assert (row.quantity, row.price, lot.price, lot.quantity) == (1000, 13.0, 10.0, 1000)
    fees = broker.fees
    expected = 3000 - fees.stock_fee(Decimal(13000), False) - 19 - fees.stock_fee(Decimal(10000), False)
    assert row.pnl == float(expected)  # gross - exit fee - 0.15% day-trade tax - entry fee
    assert lot.trade_type == sj.TradeType.DayTrade and lot.cost == 10000 + lot.fee


def test_position_pnl_follows_the_reference_formula_for_an_odd_lot(session, clock):
    # issue #177's position: 200 shares costing 113,610 with the fee (113,513 + floor(97.05)); at 577
    tiny = dataclasses.replace(session, fills=[_fill("Buy", 200, "567.565", 1.0, lot="IntradayOdd")], initial_positions=())
    broker = SimBroker(tiny, clock)
    broker.set_mark("2890", "577")

    [pos] = broker.list_positions(unit=sj.Unit.Share)

    assert (pos.price, pos.pnl) == (568.05, 115400 - 164 - 346 - 113610)  # 1280; the real broker said 1281


def test_short_position_price_is_net_proceeds_and_pnl_nets_the_buy_back_fee(session, clock):
    short = dataclasses.replace(_fill("Sell", 1000, "210", 1.0), order_cond="ShortSelling")
    broker = SimBroker(dataclasses.replace(session, fills=[short], initial_positions=()), clock)
    broker.set_mark("2890", "205")

    [pos] = broker.list_positions(unit=sj.Unit.Share)

    # proceeds 210,000 - fee floor(179.55) - tax 630 = 209,191; buy-back fee estimate floor(292.125)
    assert (pos.direction, pos.quantity, pos.price, pos.pnl) == (sj.Action.Sell, 1000, 209.191, 209191 - 205000 - 292)


def test_one_profit_loss_row_per_closing_fill(session, broker):
    net, closing = defaultdict(int), defaultdict(int)
    for p in session.initial_positions:
        net[(p.account, p.code, p.cond)] += p.quantity
    for f in session.fills:
        key = (f.account, f.position_code, f.order_cond)
        if net[key] and (net[key] > 0) != (f.signed_quantity > 0):
            closing[f.account] += 1
        net[key] += f.signed_quantity

    stock_rows = broker.list_profit_loss(unit=sj.Unit.Share)
    fut_rows = broker.list_profit_loss(broker.futopt_account)

    assert len(stock_rows) == closing[STOCK] and len(fut_rows) == closing["F002000-7654321"]
    row = fut_rows[3]
    details = broker.list_profit_loss_detail(broker.futopt_account, detail_id=row.id)
    assert sum(d.quantity for d in details) == row.quantity
    assert isinstance(row.direction, sj.Action) and isinstance(row.tax, int)
    assert broker.list_profit_loss(begin_date="2026-11-26") == []
    assert broker.list_profit_loss_detail(detail_id=10**6) == []


def test_as_of_limits_books_to_earlier_fills(session, broker):
    cutoff = session.fills[len(session.fills) // 2].ts
    broker.set_as_of(cutoff)

    records = broker.order_deal_records()
    trades = broker.list_trades()

    assert records and all(event_ts(s.value, m) <= cutoff for s, m in records)
    assert sum(len(t.status.deals) for t in trades) == sum(1 for f in session.fills if f.ts <= cutoff)


def test_order_deal_records_are_complete_and_in_exchange_order(session, broker):
    records = broker.order_deal_records()

    assert [(s.value, m) for s, m in records] == session.records
    assert all(isinstance(s, sj.OrderState) for s, _ in records)
    stamps = [event_ts(s.value, m) for s, m in records]
    assert stamps == sorted(stamps)
    assert len(broker.order_deal_records(broker.futopt_account)) == sum(
        1 for s, _ in session.records if s.startswith("F"))


def test_list_trades_statuses_follow_order_lives(session, broker):
    trades = {t.order.id: t for t in broker.list_trades()}

    assert len(trades) == len(session.orders)
    for order in session.orders:
        st = trades[order.order_id].status
        if order.rejected:
            assert st.status == sj.OrderStatus.Failed and st.status_code != "00"
        elif "Cancel" in order.ops:
            assert st.status == sj.OrderStatus.Cancelled
        elif order.filled == order.live_quantity:
            assert st.status == sj.OrderStatus.Filled
        assert st.deal_quantity == order.filled and st.cancel_quantity == order.cancelled
    sample = next(iter(trades.values()))
    assert isinstance(sample.contract, sj.BaseContract) and isinstance(sample.order.action, sj.Action)


def test_26th_accounting_call_in_5s_raises_and_bans_every_call_for_60s(broker, clock):
    for _ in range(25):
        broker.list_positions()
        clock.t += 0.1

    with pytest.raises(sj.ServerError, match=BAN_MESSAGE) as err:
        broker.list_profit_loss()
    assert "503" in str(err.value) and err.value.status_code == 503
    assert broker.banned_until == pytest.approx(clock.t + 60)

    clock.t += 30
    for call in (broker.list_positions, broker.list_settlements, broker.update_status, broker.order_deal_records):
        with pytest.raises(sj.ServerError, match=BAN_MESSAGE):
            call()
    assert broker.list_trades()  # local cache, no server call
    clock.t += 30.01
    assert broker.list_positions()


def test_sliding_window_frees_budget_after_5s(broker, clock):
    for _ in range(25):
        broker.list_positions()

    clock.t += 5.001
    broker.list_positions()

    assert broker.banned_until is None and broker.calls["accounting"] == 26


def test_order_group_has_its_own_budget(broker, clock):
    for _ in range(25):
        broker.list_positions()
    for _ in range(250):
        broker.update_status()

    with pytest.raises(sj.ServerError):
        broker.update_status()
    assert broker.calls == {"accounting": 25, "order": 251}
    with pytest.raises(sj.ServerError):  # the ban covers the accounting group too
        broker.list_positions()


def test_list_trades_is_free(broker):
    for _ in range(30):
        broker.list_trades()

    assert broker.calls == {} and broker.banned_until is None


def test_retry_during_ban_extends_it_only_when_configured(session, clock):
    strict = SimBroker(session, clock, extend_ban_on_retry=True)
    lenient = SimBroker(session, clock)
    for b in (strict, lenient):
        for _ in range(25):
            b.list_settlements()
        with pytest.raises(sj.ServerError):
            b.list_settlements()
    start = clock.t

    clock.t = start + 50
    for b in (strict, lenient):
        with pytest.raises(sj.ServerError):
            b.list_positions()
    clock.t = start + 61

    assert lenient.list_positions()
    with pytest.raises(sj.ServerError):
        strict.list_positions()


def test_fail_next_and_latency_are_injected(session, clock):
    naps = []
    broker = SimBroker(session, clock, latency_s=0.05, sleep=naps.append)
    broker.fail_next(2, sj.ShioajiTimeoutError("timeout"))

    for _ in range(2):
        with pytest.raises(sj.ShioajiTimeoutError):
            broker.list_positions()
    broker.list_positions()

    assert naps == [0.05] * 3 and broker.calls["accounting"] == 3


def test_unknown_account_is_rejected(broker):
    stranger = sj.Account(account_type=sj.AccountType.Stock, broker_id="9A95", account_id="0000000")

    with pytest.raises(sj.AccountNotProvideError):
        broker.list_positions(stranger)


def test_settlement_reports_today_stock_cash_at_t_plus_2(session, broker):
    s = broker.list_settlements()

    assert (s.t_day, s.t1_day, s.t2_day) == ("2026-11-25", "2026-11-26", "2026-11-27")
    gross = sum(-f.signed_quantity * f.price for f in session.fills if f.security_type == "STK")
    assert s.t2_money < float(gross) and s.status == sj.FetchStatus.Fetched


def test_initial_positions_are_kept_even_without_fills(session, clock):
    extra = InitialPosition(STOCK, "0050", "Cash", 500, Decimal("188.5"))
    broker = SimBroker(dataclasses.replace(session, fills=[], initial_positions=(extra,)), clock)

    [common] = broker.list_positions()
    [share] = broker.list_positions(unit=sj.Unit.Share)

    assert (common.quantity, share.quantity, share.price) == (0, 500, 188.5)  # issue #177: 0 lots shown
