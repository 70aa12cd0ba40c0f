"""Session generator: determinism, payload shapes (1.7.9 TypedDicts), fault mix, truth oracle."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from decimal import Decimal

import pytest
import shioaji as sj
from hypothesis import given, settings
from hypothesis import strategies as st

from execstate.bridge.sim import (
    INSTRUMENTS, STRATEGY_TAGS, UNASSIGNED, SimBroker, SimConfig, event_ts, generate_session,
    write_journal)
from execstate.bridge.sim.catalog import TAIPEI, lot_shares, tick_size

# Key sets and value types copied from shioaji 1.7.9 `_core.pyi` (StockOrderEvent & co.).
OPERATION = {"op_type": str, "op_code": str, "op_msg": str}
STATUS = {"id": str, "exchange_ts": float, "modified_price": float, "cancel_quantity": int,
          "order_quantity": int, "web_id": str}
ACCOUNT = {"account_type": str, "person_id": str, "broker_id": str, "account_id": str,
           "signed": bool, "username": str}
_ORDER_COMMON = {"id": str, "seqno": str, "ordno": str, "account": dict, "action": str, "price": float,
                 "quantity": int, "time_in_force": str, "order_type": str, "price_type": str}
STOCK_ORDER = {**_ORDER_COMMON, "order_cond": str, "order_lot": str, "custom_field": str}
FUTURES_ORDER = {**_ORDER_COMMON, "market_type": str, "oc_type": str, "subaccount": str, "combo": bool}
STOCK_CONTRACT = {"exchange": str, "code": str, "security_type": str, "symbol": str, "name": str,
                  "currency": str}
FUTURES_CONTRACT = {"security_type": str, "code": str, "exchange": str, "delivery_month": str,
                    "full_code": str, "delivery_date": str, "strike_price": float, "option_right": str}
ORDER_EVENT = {"event_id": str, "operation": dict, "order": dict, "status": dict, "contract": dict}
_DEAL_COMMON = {"event_id": str, "trade_id": str, "seqno": str, "ordno": str, "exchange_seq": str,
                "broker_id": str, "account_id": str, "action": str, "code": str, "price": float,
                "quantity": int, "ts": float}
STOCK_DEAL = {**_DEAL_COMMON, "order_cond": str, "order_lot": str, "web_id": str, "custom_field": str}
FUTURES_DEAL = {**_DEAL_COMMON, "full_code": str, "subaccount": str, "security_type": str,
                "delivery_month": str, "strike_price": float, "option_right": str,
                "market_type": str, "combo": bool}


@pytest.fixture(scope="module")
def session():
    return generate_session(SimConfig(seed=1))


def _assert_shape(obj: dict, shape: dict, where: str) -> None:
    assert set(obj) == set(shape), where
    for key, typ in shape.items():
        assert type(obj[key]) is typ, f"{where}.{key}: {type(obj[key]).__name__}"


def _ms(ts: float) -> int:
    return round(ts * 1000)


def test_same_seed_gives_byte_identical_session(tmp_path):
    a, b = generate_session(SimConfig(seed=7)), generate_session(SimConfig(seed=7))

    assert a == b
    write_journal(a, tmp_path / "a.jsonl")
    write_journal(b, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_different_seeds_give_different_sessions():
    a, b = generate_session(SimConfig(seed=1, n_orders=50)), generate_session(SimConfig(seed=2, n_orders=50))

    assert a.events != b.events
    assert a.fills != b.fills


def test_every_payload_has_exactly_the_typeddict_keys_and_types(session):
    seen = set()
    for state, msg in session.events + session.records:
        seen.add(state)
        if state == "SDEAL":
            _assert_shape(msg, STOCK_DEAL, state)
        elif state == "FDEAL":
            _assert_shape(msg, FUTURES_DEAL, state)
        else:
            stock = state == "SORDER"
            _assert_shape(msg, ORDER_EVENT, state)
            _assert_shape(msg["operation"], OPERATION, state + ".operation")
            _assert_shape(msg["status"], STATUS, state + ".status")
            _assert_shape(msg["order"], STOCK_ORDER if stock else FUTURES_ORDER, state + ".order")
            _assert_shape(msg["order"]["account"], ACCOUNT, state + ".order.account")
            _assert_shape(msg["contract"], STOCK_CONTRACT if stock else FUTURES_CONTRACT, state + ".contract")
            assert msg["order"]["account"]["person_id"] == ""
    assert seen == {"SORDER", "SDEAL", "FORDER", "FDEAL"}


def test_event_ids_are_unique_except_identical_duplicates(session):
    by_id = defaultdict(list)
    for state, msg in session.events:
        if msg["event_id"]:
            by_id[msg["event_id"]].append((state, msg))

    repeated = [group for group in by_id.values() if len(group) > 1]
    assert repeated, "expected some duplicate deliveries"
    assert all(all(item == group[0] for item in group) for group in repeated)
    truth_ids = [m["event_id"] for _, m in session.records if m["event_id"]]
    assert len(truth_ids) == len(set(truth_ids))


def test_default_session_contains_every_fault_and_mix(session):
    stats = session.stats()
    positions = defaultdict(list)
    for i, (_, msg) in enumerate(session.events):
        positions[json.dumps(msg, sort_keys=True)].append(i)
    gaps = [p[1] - p[0] for p in positions.values() if len(p) > 1]
    ops = {(m["operation"]["op_type"], m["operation"]["op_code"] == "00")
           for s, m in session.records if s.endswith("ORDER")}
    lots = {m["order_lot"] for s, m in session.records if s == "SDEAL"}
    conds = {m["order_cond"] for s, m in session.records if s == "SDEAL"}
    sec = {m["security_type"] for s, m in session.records if s == "FDEAL"}

    assert stats["duplicates"] > 0 and min(gaps) <= 3 and max(gaps) > 100  # immediate and late
    assert stats["deal_before_order"] > 0
    assert stats["no_event_id"] > 0
    assert ("New", False) in ops and ("Reject", False) in ops
    assert {("Cancel", True), ("UpdateQty", True), ("UpdatePrice", True)} <= ops
    assert {"Common", "IntradayOdd", "Odd"} <= lots
    assert {"Cash", "MarginTrading", "ShortSelling"} <= conds
    assert sec == {"FUT", "OPT"}
    assert any(o.strategy_id == UNASSIGNED for o in session.orders)
    assert 2000 <= stats["events"] <= 6000


def _check_lifecycles(session) -> None:
    per_order = defaultdict(list)
    for state, msg in session.records:
        per_order[msg["trade_id"] if state.endswith("DEAL") else msg["order"]["id"]].append((state, msg))
    xseqs = [m["exchange_seq"] for s, m in session.records if s.endswith("DEAL")]

    assert len(xseqs) == len(set(xseqs))
    for tid, items in per_order.items():
        assert re.fullmatch(r"[0-9a-f]{8}", tid)
        new = items[0][1]
        assert new["operation"]["op_type"] in ("New", "Reject")
        qty, filled, cancelled, price, stock = new["order"]["quantity"], 0, 0, new["order"]["price"], items[0][0] == "SORDER"
        assert re.fullmatch(r"\d{6}", new["order"]["seqno"]) and len(new["order"]["ordno"]) == 5
        times = [_ms(event_ts(s, m)) for s, m in items]
        assert times == sorted(times) and len(set(times)) == len(times)
        for state, msg in items[1:]:
            if state.endswith("DEAL"):
                assert msg["price"] == price and msg["seqno"] == new["order"]["seqno"]
                assert msg["ordno"] == new["order"]["ordno"] if stock else msg["ordno"].startswith(new["order"]["ordno"])
                filled += msg["quantity"]
                assert filled <= qty - cancelled
                continue
            st, op = msg["status"], msg["operation"]["op_type"]
            assert st["order_quantity"] == qty and st["id"] == tid and st["cancel_quantity"] >= cancelled
            cancelled = st["cancel_quantity"]
            assert qty - cancelled >= filled  # UpdateQty never below filled
            if op == "UpdatePrice":
                assert st["modified_price"] != price
                price = st["modified_price"]
            if op == "Cancel":
                assert cancelled + filled == qty


def test_order_lifecycles_respect_quantity_and_time_rules(session):
    _check_lifecycles(session)


@settings(max_examples=12, deadline=None, database=None)
@given(seed=st.integers(0, 2**32), cancel=st.floats(0, 0.9), reduce=st.floats(0, 0.9),
       reprice=st.floats(0, 0.9), odd=st.floats(0, 0.6), dup=st.floats(0, 0.5))
def test_lifecycle_and_book_laws_hold_for_any_seed_and_mix(seed, cancel, reduce, reprice, odd, dup):
    s = generate_session(SimConfig(seed=seed, n_orders=80, cancel_rate=cancel, update_qty_rate=reduce,
                                   update_price_rate=reprice, odd_lot_rate=odd, dup_rate=dup))

    _check_lifecycles(s)
    net = defaultdict(int)
    for p in s.initial_positions:
        net[(p.account, p.code, p.cond)] += p.quantity
    for f in s.fills:
        net[(f.account, f.position_code, f.order_cond)] += f.signed_quantity
        assert net[(f.account, f.position_code, "MarginTrading")] >= 0
        assert net[(f.account, f.position_code, "ShortSelling")] <= 0
    broker = SimBroker(s, clock=lambda: 0.0)
    got = {}
    for acct in (broker.stock_account, broker.futopt_account):
        for p in broker.list_positions(acct, unit="Share"):
            cond = getattr(p, "cond", None)
            key = (f"{acct.broker_id}-{acct.account_id}", p.code, cond.value if cond is not None else "")
            got[key] = p.quantity if p.direction == sj.Action.Buy else -p.quantity
    assert got == {k: v for k, v in net.items() if v}


def test_times_fall_inside_the_taipei_sessions(session):
    import datetime as dt

    def hms(ts):
        return dt.datetime.fromtimestamp(ts, TAIPEI).time()

    for state, msg in session.records:
        ts, t = event_ts(state, msg), hms(event_ts(state, msg))
        assert dt.datetime.fromtimestamp(ts, TAIPEI).date() == session.config.trade_date
        if state.startswith("F"):
            assert dt.time(8, 45) <= t <= dt.time(13, 45)
            continue
        lot = msg["order_lot"] if state == "SDEAL" else msg["order"]["order_lot"]
        if lot in ("Odd", "Fixing"):
            assert dt.time(13, 40) <= t <= dt.time(14, 30, 1)
        else:
            assert dt.time(9, 0) <= t <= dt.time(13, 30, 6)
        if state == "SDEAL" and lot == "IntradayOdd":
            assert t >= dt.time(9, 10) and _ms(ts) % 5000 <= 300  # 5-second matching grid


def test_prices_are_on_taiwan_tick_grid(session):
    for state, msg in session.records:
        if state.endswith("DEAL"):
            code, price = (msg["code"] if state == "SDEAL" else msg["full_code"]), msg["price"]
        else:
            code = msg["contract"]["code"] if state == "SORDER" else msg["contract"]["full_code"]
            price = msg["status"]["modified_price"] or msg["order"]["price"]
        p = Decimal(str(price))
        assert p > 0 and p % tick_size(INSTRUMENTS[code], p) == 0, (code, price)


def test_fills_mirror_every_truth_deal_in_position_units(session):
    deals = [(s, m) for s, m in session.records if s.endswith("DEAL")]

    assert len(session.fills) == len(deals)
    for fill, (state, msg) in zip(session.fills, deals):
        assert fill.order_id == msg["trade_id"] and fill.exchange_seq == msg["exchange_seq"]
        assert fill.price == Decimal(str(msg["price"]))
        if state == "SDEAL":
            assert fill.quantity == msg["quantity"] * lot_shares(msg["order_lot"])
            cond = msg["order_cond"]
            assert fill.symbol == (msg["code"] if cond == "Cash" else f"{msg['code']}:{cond}")
            assert fill.multiplier == 1
        else:
            assert fill.quantity == msg["quantity"] and fill.symbol == msg["full_code"]
            assert fill.multiplier == {"TXF": 200, "MXF": 50, "TMF": 10, "TXO": 50}[msg["code"]]


def test_expected_quantities_and_cash_are_sums_of_signed_fills(session):
    qty, cash = defaultdict(int), defaultdict(Decimal)
    for f in session.fills:
        sign = 1 if f.action == "Buy" else -1
        qty[(f.account, f.strategy_id, f.symbol)] += sign * f.quantity
        cash[(f.account, f.strategy_id, f.symbol)] -= sign * f.quantity * f.price * f.multiplier

    assert session.expected_quantities() == dict(qty)
    assert session.expected_cash_flows() == dict(cash)
    with_initial = session.expected_quantities(include_initial=True)
    assert with_initial[("9A95-1234567", "meanrev", "2890")] == qty[("9A95-1234567", "meanrev", "2890")] + 2037


def test_intents_and_tags_attribute_every_strategy_order(session):
    intents = {i.order_id: i for i in session.intents}
    first = {}
    for state, msg in session.records:
        if state.endswith("ORDER"):
            first.setdefault(msg["order"]["id"], (state, msg))

    for order in session.orders:
        state, msg = first[order.order_id]
        if order.strategy_id == UNASSIGNED:
            assert order.order_id not in intents
            assert msg["order"].get("custom_field", "") == ""
            continue
        intent = intents[order.order_id]
        assert (intent.strategy_id, intent.symbol) == (order.strategy_id, order.symbol)
        if state == "SORDER":
            tag = msg["order"]["custom_field"]
            assert len(tag) <= 6 and STRATEGY_TAGS[tag] == order.strategy_id == STRATEGY_TAGS[intent.custom_field]
        else:
            assert "custom_field" not in msg["order"] and intent.custom_field == ""


def test_positions_go_long_short_and_flip_within_broker_rules(session):
    running = {(p.account, p.code, p.cond): p.quantity for p in session.initial_positions}
    signs = defaultdict(set)
    for f in session.fills:
        key = (f.account, f.position_code, f.order_cond)
        running[key] = running.get(key, 0) + f.signed_quantity
        signs[(f.security_type, f.order_cond)].add((running[key] > 0) - (running[key] < 0))
        if f.order_cond == "MarginTrading":
            assert running[key] >= 0
        if f.order_cond == "ShortSelling":
            assert running[key] <= 0

    assert {-1, 0, 1} <= signs[("FUT", "")]
    assert {-1, 0, 1} <= signs[("STK", "Cash")]  # cash day-trade sells go short
    assert -1 in signs[("STK", "ShortSelling")]


def test_journal_lines_are_monotonic_receive_times_after_event_time(session, tmp_path):
    path = tmp_path / "journal.jsonl"

    n = write_journal(session, path)

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert n == len(lines) == len(session.events)
    stamps = [line["ts_ns"] for line in lines]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    for line in lines:
        assert line["ts_ns"] >= _ms(event_ts(line["state"], line["msg"])) * 1_000_000
    assert [(line["state"], line["msg"]) for line in lines] == session.events


def test_dropped_events_stay_in_truth_but_are_never_delivered():
    s = generate_session(SimConfig(seed=3, n_orders=300, drop_rate=0.05))
    delivered = {json.dumps(m, sort_keys=True) for _, m in s.events}

    assert s.dropped
    assert all(json.dumps(m, sort_keys=True) not in delivered for _, _, m in s.dropped)
    assert len(s.fills) == sum(1 for st, _ in s.records if st.endswith("DEAL"))
    assert [pos for pos, _, _ in s.dropped] == sorted(pos for pos, _, _ in s.dropped)


def test_fault_free_config_delivers_truth_in_exchange_order():
    cfg = dataclasses.replace(SimConfig(seed=4, n_orders=200), dup_rate=0, deal_before_order_rate=0,
                              no_event_id_rate=0, reorder_window=1)

    s = generate_session(cfg)

    assert s.stats()["duplicates"] == 0 and s.stats()["no_event_id"] == 0
    by_order = defaultdict(list)
    for state, msg in s.events:
        by_order[msg["trade_id"] if state.endswith("DEAL") else msg["order"]["id"]].append(event_ts(state, msg))
    assert all(ts == sorted(ts) for ts in by_order.values())
    assert sorted(json.dumps(m, sort_keys=True) for _, m in s.events) == sorted(
        json.dumps(m, sort_keys=True) for _, m in s.records)


def test_configured_person_id_is_carried_by_payloads_and_accounts():
    # Arrange
    from execstate.bridge.sim import SimShioaji

    config = SimConfig(seed=3, n_orders=30, person_id="Z123456789")

    # Act
    session = generate_session(config)
    accounts = SimShioaji(session).login("k", "s")

    # Assert
    orders = [msg for state, msg in session.events if state in ("SORDER", "FORDER")]
    assert orders and {msg["order"]["account"]["person_id"] for msg in orders} == {"Z123456789"}
    assert {a.person_id for a in accounts} == {"Z123456789"}
    assert config.stock_account.key == "9A95-1234567"  # the account key does not change
