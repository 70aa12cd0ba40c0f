"""SimShioaji.place_order / cancel_order: real shioaji orders in, the day's payload shapes out,
the broker's truth updated, the order budget enforced."""

from __future__ import annotations

import threading
from decimal import Decimal

import msgspec
import pytest
import shioaji as sj

from execstate.bridge.sim import BAN_MESSAGE, SimConfig, SimShioaji, SimTrade, generate_session
from execstate.normalize.schema import FuturesDealMsg, FuturesOrderMsg, StockDealMsg, StockOrderMsg

SCHEMAS = {"SORDER": StockOrderMsg, "SDEAL": StockDealMsg, "FORDER": FuturesOrderMsg, "FDEAL": FuturesDealMsg}
STOCK, FUTOPT = "9A95-1234567", "F002000-7654321"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def day():
    return generate_session(SimConfig(seed=1, n_orders=120))


@pytest.fixture()
def quiet():
    return generate_session(SimConfig(seed=1, n_orders=0))


def _client(session, clock=None, **latency):
    api = SimShioaji(session, clock=clock or FakeClock(), **{"ack_latency_s": 0.0, "fill_latency_s": 0.0, **latency})
    api.login("key", "secret")
    api.broker.set_as_of(0.0)  # the broker before the day's first event
    return api


def _listen(api):
    got = []
    api.set_order_callback(lambda stat, msg: got.append((threading.current_thread().name, stat, msg)))
    return got


def _mkt(action="Buy", quantity=2, **kw):
    return sj.StockOrder(action=action, price=0, quantity=quantity, price_type="MKT", time_in_force="IOC", **kw)


def _lmt(action, price, quantity=1, tif="ROD", **kw):
    return sj.StockOrder(action=action, price=price, quantity=quantity, price_type="LMT", time_in_force=tif, **kw)


def _keys(obj):
    return {k: _keys(v) for k, v in obj.items()} if isinstance(obj, dict) else type(obj)


def test_reports_have_the_generated_days_shapes_and_pass_the_normalizer_schemas(day, quiet):
    api = _client(quiet)
    got = _listen(api)

    api.place_order(api.Contracts.Stocks["2330"], _mkt(custom_field="MREV"))
    api.place_order(api.Contracts.Futures["TXFL6"], sj.FuturesOrder(
        action="Sell", price=0, quantity=3, price_type="MKP", time_in_force="IOC", octype="Auto"))
    assert api.drain_orders(5)

    shapes = {}
    for state, msg in day.records:
        shapes.setdefault(state, _keys(msg))
    assert [stat.value for _, stat, _ in got] == ["SORDER", "SDEAL", "SDEAL", "FORDER", "FDEAL", "FDEAL"]
    for _, stat, msg in got:
        msgspec.convert(msg, SCHEMAS[stat.value])  # raises on a payload the normalizer refuses
        assert _keys(msg) == shapes[stat.value], stat


def test_custom_field_rides_on_stock_reports_and_futures_reports_have_none(quiet):
    api = _client(quiet)
    got = _listen(api)

    stock = api.place_order(api.Contracts.Stocks["2890"], _mkt(quantity=1, custom_field="MEANRE"))
    fut = api.place_order(api.Contracts.Futures["TXFR1"], sj.FuturesOrder(
        action="Buy", price=0, quantity=1, price_type="MKT", time_in_force="IOC", octype="Auto", custom_field="MEANRE"))
    api.drain_orders(5)

    by_state = {stat.value: msg for _, stat, msg in got}
    assert by_state["SORDER"]["order"]["custom_field"] == "MEANRE" and by_state["SDEAL"]["custom_field"] == "MEANRE"
    assert "custom_field" not in by_state["FORDER"]["order"] and "custom_field" not in by_state["FDEAL"]
    assert stock.order.custom_field == fut.order.custom_field == "MEANRE"


def test_reports_reach_the_callback_from_the_sim_thread_after_the_latency(quiet):
    api = _client(quiet, ack_latency_s=0.05, fill_latency_s=0.02)
    got = _listen(api)

    trade = api.place_order(api.Contracts.Stocks["2330"], _mkt())
    assert got == []  # nothing before the ack latency
    assert api.drain_orders(5)

    assert {name for name, _, _ in got} == {"sim-shioaji-order-cb"}
    assert [msg["operation"]["op_type"] if "operation" in msg else "Deal" for _, _, msg in got] == ["New", "Deal", "Deal"]
    assert isinstance(trade, SimTrade) and trade.status.status == sj.OrderStatus.PendingSubmit
    assert (len(trade.order.id), trade.order.seqno[:1], trade.order.ordno[:1]) == (8, "9", "Z")


def test_market_order_fills_at_the_mark_in_two_deals(quiet):
    api = _client(quiet)
    api.broker.set_mark("2330", "1005")
    got = _listen(api)

    api.place_order(api.Contracts.Stocks["2330"], _mkt(quantity=3))
    api.drain_orders(5)

    deals = [msg for _, stat, msg in got if stat.value == "SDEAL"]
    assert [(d["quantity"], d["price"]) for d in deals] == [(2, 1005.0), (1, 1005.0)]
    times = [msg["ts"] if "ts" in msg else msg["status"]["exchange_ts"] for _, _, msg in got]
    assert times == sorted(times) and len(set(times)) == 3


def test_marketable_limit_fills_and_a_limit_away_from_the_mark_rests_until_cancelled(quiet):
    api = _client(quiet)
    api.broker.set_mark("2330", "1000")
    got = _listen(api)

    api.place_order(api.Contracts.Stocks["2330"], _lmt("Buy", 1010))  # through the mark
    resting = api.place_order(api.Contracts.Stocks["2330"], _lmt("Buy", 990, quantity=2))
    api.drain_orders(5)
    api.update_status(trade=resting)
    assert resting.status.status == sj.OrderStatus.Submitted

    api.cancel_order(resting)
    api.drain_orders(5)

    ops = [(msg["order"]["id"], msg["operation"]["op_type"], msg["status"]["cancel_quantity"])
           for _, stat, msg in got if stat.value == "SORDER"]
    assert ops[-1] == (resting.order.id, "Cancel", 2)
    assert [msg["price"] for _, stat, msg in got if stat.value == "SDEAL"] == [1000.0]  # the mark, not the limit
    assert resting.status.status == sj.OrderStatus.Cancelled and resting.status.cancel_quantity == 2


def test_ioc_limit_away_from_the_mark_is_cancelled_at_once(quiet):
    api = _client(quiet)
    api.broker.set_mark("2330", "1000")
    got = _listen(api)

    api.place_order(api.Contracts.Stocks["2330"], _lmt("Sell", 1050, quantity=2, tif="IOC"))
    api.drain_orders(5)

    assert [(msg["operation"]["op_type"], msg["status"]["cancel_quantity"]) for _, _, msg in got] == [("New", 0), ("Cancel", 2)]
    assert api.broker.placed_fills == ()


def test_broker_positions_records_and_trades_include_placed_orders(quiet):
    api = _client(quiet)
    api.broker.set_mark("2330", "1000")
    api.broker.set_mark("TXFL6", "27900")
    base_stock = {(p.code, p.cond.value): p.quantity for p in api.list_positions(api.stock_account, unit=sj.Unit.Share)}

    trade = api.place_order(api.Contracts.Stocks["2330"], _mkt(quantity=2))
    api.place_order(api.Contracts.Stocks["2330"], _mkt("Sell", quantity=1))
    api.place_order(api.Contracts.Stocks["2330"], sj.StockOrder(
        action="Buy", price=1000, quantity=150, price_type="LMT", time_in_force="ROD", order_lot="IntradayOdd"))
    api.place_order(api.Contracts.Futures["TXFL6"], sj.FuturesOrder(
        action="Buy", price=27900, quantity=1, price_type="LMT", time_in_force="ROD", octype="Auto"))

    stock = {(p.code, p.cond.value): p.quantity for p in api.list_positions(api.stock_account, unit=sj.Unit.Share)}
    futures = {p.code: p.quantity for p in api.list_positions(api.futopt_account)}
    assert stock[("2330", "Cash")] == 1000 + 150 and base_stock.get(("2330", "Cash"), 0) == 0
    assert stock[("2330", "MarginTrading")] == base_stock[("2330", "MarginTrading")]  # other books untouched
    assert futures["TXFL6"] == 2 + 1  # yesterday's 2 plus the placed 1
    records = api.order_deal_records(api.stock_account)
    assert sum(1 for stat, msg in records if stat.value == "SDEAL" and msg["trade_id"] == trade.order.id) == 2
    api.update_status(trade=trade)
    assert trade.status.status == sj.OrderStatus.Filled and trade.status.deal_quantity == 2
    assert {t.order.id for t in api.list_trades()} >= {trade.order.id}


def test_exchange_times_follow_where_the_replay_of_the_day_stands(day):
    api = _client(day)
    got = _listen(api)
    api.play(stop=50)  # as_of moves with the replay
    as_of = api.broker.as_of

    api.place_order(api.Contracts.Stocks["2330"], _mkt(quantity=1))
    api.drain_orders(5)

    new = [msg for _, stat, msg in got[50:] if stat.value == "SORDER"][0]
    assert new["status"]["exchange_ts"] > as_of
    assert new["event_id"].startswith("sorder-20261125-p")
    assert all(msg["event_id"] != new["event_id"] for _, msg in day.events)


def test_placed_reports_lost_in_a_disconnect_are_in_the_brokers_records(quiet):
    api = _client(quiet)
    got = _listen(api)
    api.disconnect()

    trade = api.place_order(api.Contracts.Stocks["2330"], _mkt(quantity=1))
    api.drain_orders(5)
    api.reconnect()

    assert got == [] and api.placed_events["lost"] == 2
    assert api.trade_cache_health(api.stock_account).state == sj.TradeCacheHealthState.Degraded
    records = api.order_deal_records(api.stock_account)
    assert trade.order.id in {msg["order"]["id"] for stat, msg in records if stat.value == "SORDER"}
    assert api.trade_cache_health(api.stock_account).state == sj.TradeCacheHealthState.Healthy


def test_the_251st_order_call_within_10s_is_refused_and_bans(quiet):
    clock = FakeClock()
    api = _client(quiet, clock=clock)
    contract = api.Contracts.Stocks["2330"]
    resting = [api.place_order(contract, _lmt("Buy", 500)) for _ in range(200)]
    for trade in resting[:50]:
        api.cancel_order(trade)  # cancels spend the same budget

    with pytest.raises(sj.ServerError, match=BAN_MESSAGE):
        api.place_order(contract, _lmt("Buy", 500))
    clock.t += 30  # the ban lasts 60 s
    with pytest.raises(sj.ServerError):
        api.place_order(contract, _lmt("Buy", 500))
    clock.t += 31
    assert api.place_order(contract, _lmt("Buy", 500)).order.id


@pytest.mark.parametrize(("contract", "order", "error", "text"), [
    (sj.Future(exchange="TAIFEX", code="ZZZL6"), sj.FuturesOrder(action="Buy", price=0, quantity=1, price_type="MKT", time_in_force="IOC"),
     sj.ShioajiValueError, "contract.code='ZZZL6'"),
    (sj.Future(exchange="TAIFEX", code="TXFL6"), _mkt(), sj.ShioajiTypeError, "needs sj.FuturesOrder"),
    (sj.Stock(exchange="TSE", code="2330"), _mkt(quantity=0), sj.ShioajiValueError, "order.quantity=0"),
    (sj.Stock(exchange="TSE", code="2330"), _lmt("Buy", 0), sj.ShioajiValueError, "order.price=0"),
    (sj.Stock(exchange="TSE", code="2330"), _mkt(custom_field="TOOLONG"), sj.ShioajiValueError, "custom_field='TOOLONG'"),
])
def test_orders_the_broker_refuses_raise_naming_the_field(quiet, contract, order, error, text):
    api = _client(quiet)

    with pytest.raises(error, match=text.replace("(", r"\(")):
        api.place_order(contract, order)
    assert api.broker.placed_fills == ()


def test_contracts_are_real_shioaji_contracts_by_code_symbol_and_r1(quiet):
    api = _client(quiet)

    stock, fut = api.Contracts.Stocks["2330"], api.Contracts.Futures["TXF202612"]
    opt = api.Contracts.Options["TXO27800L6"]

    assert (type(stock), type(fut), type(opt)) == (sj.Stock, sj.Future, sj.Option)
    assert api.Contracts.Futures["TXFR1"].code == fut.code == "TXFL6" and fut.multiplier == 200
    assert opt.option_right == sj.OptionRight.Call and opt.strike_price == 27800.0
    assert api.Contracts.Futures.get("2330") is None
    with pytest.raises(KeyError):
        api.Contracts.Options["TXFL6"]


def test_placing_needs_a_login(quiet):
    api = SimShioaji(quiet, clock=FakeClock())

    with pytest.raises(sj.AuthError):
        api.place_order(sj.Stock(exchange="TSE", code="2330"), _mkt())


def test_placed_fill_truth_is_in_position_units(quiet):
    api = _client(quiet)
    api.broker.set_mark("2890", "26.85")

    api.place_order(api.Contracts.Stocks["2890"], _mkt(quantity=2))
    api.place_order(api.Contracts.Stocks["2890"], sj.StockOrder(
        action="Sell", price=0, quantity=37, price_type="MKT", time_in_force="IOC", order_lot="IntradayOdd"))

    assert [(f.action, f.quantity, f.price) for f in api.broker.placed_fills] == [
        ("Buy", 1000, Decimal("26.85")), ("Buy", 1000, Decimal("26.85")), ("Sell", 19, Decimal("26.85")), ("Sell", 18, Decimal("26.85"))]
    assert all(f.account == STOCK and f.symbol == "2890" for f in api.broker.placed_fills)


def test_a_restarted_broker_restores_placed_reports_and_continues_their_ids(quiet):
    api = _client(quiet)
    got = _listen(api)
    api.place_order(api.Contracts.Stocks["2330"], _mkt(quantity=2))
    api.place_order(api.Contracts.Futures["TXFL6"], sj.FuturesOrder(
        action="Sell", price=0, quantity=1, price_type="MKT", time_in_force="IOC", octype="Auto"))
    api.drain_orders(5)
    journal = [(stat.value, msg) for _, stat, msg in got]
    for state, msg in journal:
        if "order" in msg:
            del msg["order"]["account"]["person_id"]  # as the journal writes them
    before = {p.code: p.quantity for p in api.list_positions(api.futopt_account)}

    again = _client(quiet)
    restored = again.restore_placed(journal + [("SDEAL", {"event_id": "sdeal-20261125-p999999"}), ("SORDER", {"event_id": "x"})])
    trade = again.place_order(again.Contracts.Stocks["2330"], _mkt(quantity=1))

    assert restored == len(journal) == 5
    assert {p.code: p.quantity for p in again.list_positions(again.futopt_account)} == before
    assert sum(f.quantity for f in again.broker.placed_fills if f.code == "2330") == 3000
    old_ids = {msg.get("trade_id") or msg["order"]["id"] for _, msg in journal}
    old_events = {msg["event_id"] for _, msg in journal}
    new_records = [m for s, m in again.broker.truth_records() if (m.get("trade_id") or m["order"]["id"]) == trade.order.id]
    assert trade.order.id not in old_ids and not {m["event_id"] for m in new_records} & old_events
    assert all(m["order"]["account"]["person_id"] == "" for m in (m for _, m in again.broker.truth_records()) if "order" in m)


def test_outbox_survives_a_raising_delivery_and_delivers_the_rest():
    from execstate.bridge.sim.placement import Outbox

    delivered: list[str] = []

    def deliver(state: str, msg: dict) -> None:
        if msg["n"] == 1:
            raise RuntimeError("bad callback")
        delivered.append(msg["n"])

    outbox = Outbox(deliver)
    outbox.send([(0.0, "SORDER", {"n": 1}), (0.0, "SORDER", {"n": 2})])
    assert outbox.join(timeout=5)
    outbox.send([(0.0, "SORDER", {"n": 3})])
    assert outbox.join(timeout=5)

    assert delivered == [2, 3]
    assert outbox.errors == 1
