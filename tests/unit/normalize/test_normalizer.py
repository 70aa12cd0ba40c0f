"""Normalizer: raw (ts, state, msg) in, one OrderEvent / FillEvent / DeadLetter / None out."""

from decimal import Decimal

import pytest
import shioaji as sj
from payloads import EventDictLike, futures_deal, futures_order, stock_deal, stock_order, without

from execstate.config import parse_settings
from execstate.domain.events import DeadLetter, FillEvent, OrderEvent
from execstate.normalize.instruments import InstrumentResolver
from execstate.normalize.intents import IntentRegistry
from execstate.normalize.worker import Normalizer
from execstate.telemetry.stats import LatencySamples, PipelineStats

T_RECV = 1_779_333_920_500_000_000  # a fixed "now" for ts_recv
SDEAL, SORDER = sj.OrderState.StockDeal, sj.OrderState.StockOrder
FDEAL, FORDER = sj.OrderState.FuturesDeal, sj.OrderState.FuturesOrder
ACCT = "9A95-1234567"
FACCT = "F002000-1234567"


def make(tags=None, capacity=2_000_000, **settings_overrides):
    settings = parse_settings({"strategies": {"tags": tags if tags is not None else {"MOMO": "momo", "FTRD": "fut_trend"}},
                               **settings_overrides})
    intents = IntentRegistry(dict(settings.strategies.tags))
    stats = PipelineStats(latency_ns=LatencySamples(8))
    return Normalizer(intents, InstrumentResolver(settings), stats, capacity)


def run(norm, state, msg, ts=T_RECV):
    return norm.normalize((ts, state, msg))


# ---------------------------------------------------------------------------------------
# Basic output
# ---------------------------------------------------------------------------------------


def test_stock_deal_becomes_a_fill_event_in_shares_with_exact_price():
    # Arrange
    norm = make()

    # Act
    fill = run(norm, SDEAL, stock_deal(price=26.85, quantity=2))

    # Assert
    assert isinstance(fill, FillEvent)
    assert fill.quantity == 2000
    assert fill.price == Decimal("26.85")
    assert (fill.account, fill.order_id, fill.exchange_seq) == (ACCT, "892f730b", "669915")
    assert (fill.symbol, fill.code, fill.kind, fill.side) == ("2890", "2890", "STK", "Buy")
    assert fill.multiplier == 1
    assert fill.ts_event == 1_779_333_920_000_000_000
    assert fill.ts_recv == T_RECV
    assert fill.event_id == f"F:{ACCT}:892f730b:669915"
    assert norm.stats.fills == 1


def test_stock_order_becomes_an_order_event_with_status():
    # Arrange
    norm = make()

    # Act
    ev = run(norm, SORDER, stock_order(quantity=3))

    # Assert
    assert isinstance(ev, OrderEvent)
    assert ev.status == "Submitted"
    assert ev.ok is True
    assert ev.order_quantity == 3000
    assert ev.price == Decimal("26.85")
    assert ev.event_id == f"O:{ACCT}:892f730b:New:1779333919920000000"
    assert ev.ts_event == 1_779_333_919_920_000_000
    assert norm.stats.orders == 1


@pytest.mark.parametrize("state", ["SDEAL", "StockDeal", sj.OrderState("SDEAL"), sj.OrderState("StockDeal")],
                         ids=["value", "name", "enum-from-value", "enum-from-name"])
def test_state_given_as_enum_value_or_name_is_accepted(state):
    # Arrange
    norm = make()

    # Act
    out = run(norm, state, stock_deal())

    # Assert
    assert isinstance(out, FillEvent)


def test_dict_like_payload_is_normalized():
    # Arrange
    norm = make()

    # Act
    out = run(norm, SDEAL, EventDictLike(stock_deal()))

    # Assert
    assert isinstance(out, FillEvent)
    assert out.quantity == 1000


# ---------------------------------------------------------------------------------------
# Dedupe
# ---------------------------------------------------------------------------------------


def test_duplicate_deal_with_same_event_id_is_dropped_and_counted():
    # Arrange
    norm = make()
    run(norm, SDEAL, stock_deal(event_id="evt-1"))

    # Act
    out = run(norm, SDEAL, stock_deal(event_id="evt-1"))

    # Assert
    assert out is None
    assert norm.stats.duplicates == 1
    assert norm.stats.fills == 1
    assert norm.orders.get(ACCT, "892f730b").filled_quantity == 1000


def test_duplicate_deal_without_event_id_is_dropped():
    # Arrange
    norm = make()
    run(norm, SDEAL, stock_deal(event_id=""))

    # Act
    out = run(norm, SDEAL, stock_deal(event_id=""))

    # Assert
    assert out is None
    assert norm.stats.duplicates == 1


@pytest.mark.parametrize(("first", "second"), [("evt-1", ""), ("", "evt-1"), ("evt-1", "evt-2")])
def test_redelivered_deal_is_dropped_whether_or_not_it_carries_an_event_id(first, second):
    # Arrange
    norm = make()
    run(norm, SDEAL, stock_deal(event_id=first))

    # Act
    out = run(norm, SDEAL, stock_deal(event_id=second))

    # Assert
    assert out is None
    assert norm.stats.duplicates == 1
    assert norm.orders.get(ACCT, "892f730b").filled_quantity == 1000


def test_two_partial_fills_with_same_seqno_and_different_exchange_seq_are_both_kept():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(quantity=2))

    # Act
    a = run(norm, SDEAL, stock_deal(event_id="", seqno="361840", exchange_seq="669915"))
    b = run(norm, SDEAL, stock_deal(event_id="", seqno="361840", exchange_seq="669916"))

    # Assert
    assert isinstance(a, FillEvent) and isinstance(b, FillEvent)
    assert a.event_id != b.event_id
    assert norm.stats.duplicates == 0
    assert norm.orders.get(ACCT, "892f730b").status.value == "Filled"


def test_same_exchange_seq_on_another_account_is_not_a_duplicate():
    # Arrange
    norm = make()
    run(norm, SDEAL, stock_deal(event_id="", account_id="1111111"))

    # Act
    out = run(norm, SDEAL, stock_deal(event_id="", account_id="2222222"))

    # Assert
    assert isinstance(out, FillEvent)


def test_duplicate_order_event_without_event_id_is_dropped_by_natural_key():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(event_id=""))

    # Act
    out = run(norm, SORDER, stock_order(event_id=""))

    # Assert
    assert out is None
    assert norm.stats.duplicates == 1
    assert norm.stats.orders == 1


@pytest.mark.parametrize("change", [{"op_type": "Cancel", "cancel_quantity": 1}, {"exchange_ts": 1779333999.5},
                                    {"order_id": "aaaa0001"}, {"account_id": "7654321"}],
                         ids=["op_type", "exchange_ts", "order_id", "account"])
def test_order_events_differing_in_a_natural_key_part_are_both_kept(change):
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(event_id=""))

    # Act
    out = run(norm, SORDER, stock_order(event_id="", **change))

    # Assert
    assert isinstance(out, OrderEvent)
    assert norm.stats.duplicates == 0


def test_redelivered_order_event_with_and_without_event_id_is_dropped():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(event_id="evt-9"))

    # Act
    out = run(norm, SORDER, stock_order(event_id=""))

    # Assert
    assert out is None
    assert norm.stats.duplicates == 1


def test_dedupe_memory_is_bounded_and_forgets_the_oldest_keys():
    # Arrange: 4 keys fit; a deal without event_id uses one key
    norm = make(capacity=4)
    for seq in ("1", "2", "3", "4", "5"):
        run(norm, SDEAL, stock_deal(event_id="", exchange_seq=seq))

    # Act
    oldest = run(norm, SDEAL, stock_deal(event_id="", exchange_seq="1"))
    newest = run(norm, SDEAL, stock_deal(event_id="", exchange_seq="5"))

    # Assert
    assert isinstance(oldest, FillEvent)  # forgotten, so emitted again
    assert newest is None
    assert len(norm.seen) == 4
    assert norm.seen.evicted >= 1


# ---------------------------------------------------------------------------------------
# Order lifecycle across deals and order events
# ---------------------------------------------------------------------------------------


def test_deal_before_order_is_emitted_at_once_with_strategy_from_custom_field():
    # Arrange
    norm = make()

    # Act
    fill = run(norm, SDEAL, stock_deal(custom_field="MOMO", quantity=1))

    # Assert
    assert isinstance(fill, FillEvent)
    assert fill.strategy == "momo"
    assert norm.stats.deals_before_order == 1
    assert norm.orders.get(ACCT, "892f730b").status.value == "Unknown"


def test_deal_before_order_uses_the_registered_intent():
    # Arrange
    norm = make()
    norm.intents.register("892f730b", "meanrev")

    # Act
    fill = run(norm, SDEAL, stock_deal(custom_field="MOMO"))

    # Assert
    assert fill.strategy == "meanrev"


@pytest.mark.parametrize(("order_qty", "status"), [(2, "PartFilled"), (1, "Filled")])
def test_order_arriving_after_its_deal_completes_status_by_quantity(order_qty, status):
    # Arrange
    norm = make()
    run(norm, SDEAL, stock_deal(quantity=1))

    # Act
    ev = run(norm, SORDER, stock_order(quantity=order_qty))

    # Assert
    assert ev.status == status
    assert norm.stats.unexpected_transitions == 0


def test_late_new_after_filled_does_not_roll_the_status_back():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(quantity=1, exchange_ts=1779333919.92))
    run(norm, SDEAL, stock_deal(quantity=1))

    # Act: the same New, re-reported later (new receipt id, new timestamp)
    ev = run(norm, SORDER, stock_order(quantity=1, event_id="evt-late", exchange_ts=1779333921.0))

    # Assert
    assert ev.status == "Filled"
    assert norm.orders.get(ACCT, "892f730b").status.value == "Filled"


def test_cancel_after_filled_is_counted_as_unexpected_and_status_kept():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(quantity=1))
    run(norm, SDEAL, stock_deal(quantity=1))

    # Act
    ev = run(norm, SORDER, stock_order(op_type="Cancel", event_id="evt-c", quantity=1, cancel_quantity=1,
                                       exchange_ts=1779333930.0))

    # Assert
    assert ev.status == "Filled"
    assert norm.stats.unexpected_transitions == 1
    assert norm.orders.get(ACCT, "892f730b").status.value == "Filled"


def test_rejected_new_is_failed_and_counted():
    # Arrange
    norm = make()

    # Act
    ev = run(norm, SORDER, stock_order(op_code="88", op_msg="rejected"))

    # Assert
    assert ev.status == "Failed"
    assert ev.ok is False
    assert (ev.op_code, ev.op_msg) == ("88", "rejected")
    assert norm.stats.order_failures == 1


def test_reject_op_type_is_failed():
    # Arrange
    norm = make()

    # Act
    ev = run(norm, FORDER, futures_order(op_type="Reject", op_code="9938"))

    # Assert
    assert ev.status == "Failed"
    assert norm.stats.order_failures == 1


def test_refused_cancel_keeps_the_order_working():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(quantity=2))

    # Act
    ev = run(norm, SORDER, stock_order(op_type="Cancel", op_code="01", event_id="evt-c", quantity=2,
                                       exchange_ts=1779333930.0))

    # Assert
    assert ev.status == "Submitted"
    assert ev.ok is False
    assert norm.stats.order_failures == 1
    assert norm.stats.unexpected_transitions == 0


def test_update_qty_reducing_live_quantity_to_the_filled_quantity_is_filled():
    # Arrange: 3 lots ordered, 1 filled
    norm = make()
    run(norm, SORDER, stock_order(quantity=3))
    run(norm, SDEAL, stock_deal(quantity=1))

    # Act: 2 lots cancelled by UpdateQty
    ev = run(norm, SORDER, stock_order(op_type="UpdateQty", event_id="evt-u", quantity=3, cancel_quantity=2,
                                       exchange_ts=1779333925.0))

    # Assert
    assert ev.status == "Filled"
    assert ev.cancel_quantity == 2000
    assert norm.orders.get(ACCT, "892f730b").live_quantity == 1000


def test_update_qty_leaving_more_than_filled_is_part_filled():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(quantity=5))
    run(norm, SDEAL, stock_deal(quantity=1))

    # Act
    ev = run(norm, SORDER, stock_order(op_type="UpdateQty", event_id="evt-u", quantity=5, cancel_quantity=2,
                                       exchange_ts=1779333925.0))

    # Assert
    assert ev.status == "PartFilled"


def test_fill_beyond_the_order_quantity_is_counted_as_overfill():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(quantity=1))
    run(norm, SDEAL, stock_deal(quantity=1, exchange_seq="1"))

    # Act
    out = run(norm, SDEAL, stock_deal(quantity=1, exchange_seq="2", event_id="evt-x"))

    # Assert
    assert isinstance(out, FillEvent)  # a deal is a fact: still emitted
    assert norm.stats.overfills == 1


# ---------------------------------------------------------------------------------------
# Attribution
# ---------------------------------------------------------------------------------------


def test_registered_intent_wins_over_custom_field_tag():
    # Arrange
    norm = make()
    norm.intents.register("892f730b", "meanrev")

    # Act
    ev = run(norm, SORDER, stock_order(custom_field="MOMO"))

    # Assert
    assert ev.strategy == "meanrev"


def test_custom_field_tag_from_settings_attributes_the_order():
    # Arrange
    norm = make(tags={"MREV": "meanrev"})

    # Act
    ev = run(norm, SORDER, stock_order(custom_field="MREV"))

    # Assert
    assert ev.strategy == "meanrev"


@pytest.mark.parametrize("custom_field", ["", "NOPE"])
def test_order_with_no_intent_and_no_known_tag_is_unassigned(custom_field):
    # Arrange
    norm = make()

    # Act
    ev = run(norm, SORDER, stock_order(custom_field=custom_field))

    # Assert
    assert ev.strategy == "unassigned"


def test_later_fills_keep_the_strategy_of_the_order():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(quantity=2, custom_field="MOMO"))

    # Act: Shioaji's deal carries the same memo, but attribution comes from the order
    fill = run(norm, SDEAL, stock_deal(quantity=1, custom_field=""))

    # Assert
    assert fill.strategy == "momo"


def test_intent_registered_after_the_first_fill_attributes_later_fills():
    # Arrange: the first deal arrives before the strategy could register its order
    norm = make()
    first = run(norm, FDEAL, futures_deal(exchange_seq="1", event_id=""))
    norm.intents.register("4e6df0f6", "fut_trend")

    # Act
    second = run(norm, FDEAL, futures_deal(exchange_seq="2", event_id=""))

    # Assert
    assert first.strategy == "unassigned"
    assert second.strategy == "fut_trend"


def test_futures_deal_without_custom_field_uses_the_registered_intent():
    # Arrange
    norm = make()
    norm.intents.register("4e6df0f6", "fut_trend")

    # Act
    fill = run(norm, FDEAL, futures_deal())

    # Assert
    assert fill.strategy == "fut_trend"
    assert fill.custom_field == ""


# ---------------------------------------------------------------------------------------
# Instruments
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("security_type", "code", "full_code", "multiplier"), [
    ("FUT", "TXF", "TXFL6", Decimal(200)),
    ("FUT", "MXF", "MXFL6", Decimal(50)),
    ("FUT", "TMF", "TMFF6", Decimal(10)),
    ("OPT", "TXO", "TXO27900L6", Decimal(50)),
])
def test_futures_fill_symbol_is_full_code_and_multiplier_comes_from_config(security_type, code, full_code, multiplier):
    # Arrange
    norm = make()

    # Act
    fill = run(norm, FDEAL, futures_deal(security_type=security_type, code=code, full_code=full_code, quantity=2))

    # Assert
    assert fill.symbol == full_code
    assert fill.code == code
    assert fill.kind == security_type
    assert fill.multiplier == multiplier
    assert fill.quantity == 2
    assert norm.instruments.unknown_products == set()


@pytest.mark.parametrize(("security_type", "code", "full_code"), [
    ("FUT", "CDF", "CDFL6"),
    ("OPT", "CDO", "CDO00900L6"),
])
def test_unknown_product_uses_the_default_multiplier_and_is_recorded(security_type, code, full_code):
    # Arrange
    norm = make()

    # Act
    fill = run(norm, FDEAL, futures_deal(security_type=security_type, code=code, full_code=full_code))

    # Assert
    assert fill.multiplier == Decimal(2000)
    assert norm.instruments.unknown_products == {code}


def test_weekly_txo_series_root_uses_the_txo_multiplier():
    # Arrange: the reference example's weekly option deal (code "TX1")
    norm = make()

    # Act
    fill = run(norm, FDEAL, futures_deal(security_type="OPT", code="TX1", full_code="TX127900L5"))

    # Assert
    assert fill.multiplier == Decimal(50)
    assert norm.instruments.unknown_products == set()


def test_full_code_override_wins_over_product_multiplier():
    # Arrange
    norm = make(multipliers={"overrides": {"TXFL6": "100"}})

    # Act
    fill = run(norm, FDEAL, futures_deal(security_type="FUT", code="TXF", full_code="TXFL6"))

    # Assert
    assert fill.multiplier == Decimal(100)


def test_futures_order_event_uses_full_code_as_symbol():
    # Arrange
    norm = make()

    # Act
    ev = run(norm, FORDER, futures_order(code="TXF", full_code="TXFL6"))

    # Assert
    assert ev.symbol == "TXFL6"
    assert ev.kind == "FUT"
    assert ev.account == FACCT


@pytest.mark.parametrize(("order_cond", "symbol"), [
    ("Cash", "2330"),
    ("MarginTrading", "2330:MarginTrading"),
    ("ShortSelling", "2330:ShortSelling"),
])
def test_stock_symbol_carries_a_non_cash_order_condition(order_cond, symbol):
    # Arrange
    norm = make()

    # Act
    fill = run(norm, SDEAL, stock_deal(code="2330", order_cond=order_cond))

    # Assert
    assert fill.symbol == symbol
    assert fill.order_cond == order_cond


@pytest.mark.parametrize(("code", "is_etf"), [("0050", True), ("00878", True), ("2330", False), ("1101", False)])
def test_etf_flag_follows_the_00_code_prefix(code, is_etf):
    # Arrange
    norm = make()

    # Act
    fill = run(norm, SDEAL, stock_deal(code=code))

    # Assert
    assert fill.is_etf is is_etf


def test_odd_lot_fill_shares_the_board_lot_symbol_by_default():
    # Arrange
    norm = make()

    # Act
    fill = run(norm, SDEAL, stock_deal(code="2330", order_lot="IntradayOdd", quantity=3))

    # Assert
    assert fill.symbol == "2330"
    assert fill.quantity == 3


def test_odd_lot_fill_gets_its_own_symbol_when_not_combined():
    # Arrange
    norm = make(odd_lots={"combine_with_board_lots": False})

    # Act
    fill = run(norm, SDEAL, stock_deal(code="2330", order_lot="Odd", quantity=3))

    # Assert
    assert fill.symbol == "2330:Odd"


# ---------------------------------------------------------------------------------------
# Malformed input
# ---------------------------------------------------------------------------------------


def test_malformed_deal_becomes_a_dead_letter_and_the_next_event_is_processed():
    # Arrange
    norm = make()
    bad = without(stock_deal(), "exchange_seq")

    # Act
    dead = run(norm, SDEAL, bad)
    good = run(norm, SDEAL, stock_deal())

    # Assert
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "exchange_seq: missing"
    assert dead.state == "SDEAL"
    assert dead.ts_recv == T_RECV
    assert dead.msg == bad
    assert isinstance(good, FillEvent)
    assert norm.stats.dead_letters == 1
    assert norm.stats.fills == 1


def test_malformed_deal_does_not_poison_dedupe_memory():
    # Arrange
    norm = make()
    run(norm, SDEAL, stock_deal(quantity=0))

    # Act: the corrected redelivery
    out = run(norm, SDEAL, stock_deal(quantity=1))

    # Assert
    assert isinstance(out, FillEvent)
    assert norm.stats.duplicates == 0


@pytest.mark.parametrize("state", ["XDEAL", "", "SDEALX"])
def test_unknown_state_is_a_dead_letter_naming_the_state(state):
    # Arrange
    norm = make()

    # Act
    dead = run(norm, state, stock_deal())

    # Assert
    assert isinstance(dead, DeadLetter)
    assert dead.reason.startswith(f"state={state!r}: expected ")
    assert dead.state == state


def test_non_string_state_is_a_dead_letter():
    # Arrange
    norm = make()

    # Act
    dead = run(norm, None, stock_deal())

    # Assert
    assert isinstance(dead, DeadLetter)
    assert dead.reason.startswith("state=None")


def test_payload_that_breaks_on_reading_is_parked_not_raised():
    # Arrange
    class Exploding(EventDictLike):
        def __getitem__(self, key):
            raise RuntimeError("boom")

        def items(self):
            raise RuntimeError("boom")

    norm = make()

    # Act
    dead = run(norm, SDEAL, Exploding(stock_deal()))
    good = run(norm, SDEAL, stock_deal())

    # Assert
    assert isinstance(dead, DeadLetter)
    assert "boom" in dead.reason
    assert norm.stats.dead_letters == 1
    assert isinstance(good, FillEvent)


def test_order_payload_sent_as_deal_is_a_dead_letter():
    # Arrange
    norm = make()

    # Act
    dead = run(norm, SDEAL, stock_order())

    # Assert
    assert isinstance(dead, DeadLetter)
    assert dead.reason.endswith(": missing")


def test_dead_letter_msg_of_dict_like_payload_is_a_plain_dict():
    # Arrange
    norm = make()
    msg = EventDictLike(stock_deal(price=-1.0))

    # Act
    dead = run(norm, SDEAL, msg)

    # Assert
    assert dead.reason.startswith("price=-1.0: expected ")
    assert type(dead.msg) is dict
    assert dead.msg["price"] == -1.0


# ---------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------


def test_same_payloads_in_two_fresh_normalizers_give_the_same_event_ids():
    # Arrange
    stream = [
        (SDEAL, stock_deal(exchange_seq="1")),
        (SORDER, stock_order(quantity=2)),
        (SDEAL, stock_deal(exchange_seq="2", event_id="")),
        (FDEAL, futures_deal()),
        (FORDER, futures_order()),
    ]

    # Act
    first = [run(make(), s, m).event_id for s, m in stream]
    norm = make()
    second = [run(norm, s, m).event_id for s, m in stream]

    # Assert
    assert first == second
    assert len(set(second)) == len(second)


def test_event_id_does_not_depend_on_receive_time_or_receipt_id():
    # Arrange
    a, b = make(), make()

    # Act
    one = run(a, SDEAL, stock_deal(event_id="evt-1"), ts=1)
    two = run(b, SDEAL, stock_deal(event_id="evt-2"), ts=2)

    # Assert
    assert one.event_id == two.event_id


# ---------------------------------------------------------------------------------------
# Log lines: duplicates and order failures (rare events, with account, symbol and order ids)
# ---------------------------------------------------------------------------------------
from structlog.testing import capture_logs  # noqa: E402

from execstate.domain.events import RawExecEvent  # noqa: E402


def _events(logs, name):
    return [e for e in logs if e["event"] == name]


def test_duplicate_deal_redelivered_by_the_callback_is_logged_at_info_with_its_ids():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order(custom_field="MOMO"))
    run(norm, SDEAL, stock_deal(custom_field="MOMO"))

    # Act
    with capture_logs() as logs:
        out = run(norm, SDEAL, stock_deal(custom_field="MOMO", event_id="evt-other"))

    # Assert
    assert out is None
    (line,) = _events(logs, "duplicate_dropped")
    assert line["log_level"] == "info" and line["source"] == "callback" and line["state"] == "SDEAL"
    assert (line["account"], line["symbol"], line["order_id"], line["exchange_seq"], line["event_id"]) == (ACCT, "2890", "892f730b", "669915", "evt-other")
    assert line["fill_id"] == f"F:{ACCT}:892f730b:669915"


def test_duplicate_order_event_is_logged_with_order_ids():
    # Arrange
    norm = make()
    run(norm, SORDER, stock_order())

    # Act
    with capture_logs() as logs:
        run(norm, SORDER, stock_order())

    # Assert
    (line,) = _events(logs, "duplicate_dropped")
    assert (line["state"], line["account"], line["symbol"], line["order_id"], line["op_type"], line["ordno"]) == ("SORDER", ACCT, "2890", "892f730b", "New", "Y23CL")


def test_duplicate_from_a_recovery_is_logged_at_debug():
    # Arrange: resubmitted broker records and journal replays travel as RawExecEvent
    norm = make()
    run(norm, SDEAL, stock_deal())

    # Act
    with capture_logs() as logs:
        norm.normalize(RawExecEvent(T_RECV, "SDEAL", stock_deal()))

    # Assert
    (line,) = _events(logs, "duplicate_dropped")
    assert line["log_level"] == "debug" and line["source"] == "recovery"


def test_fresh_events_log_nothing():
    norm = make()
    with capture_logs() as logs:
        run(norm, SORDER, stock_order(custom_field="MOMO"))
        run(norm, SDEAL, stock_deal(custom_field="MOMO"))
    assert logs == []


def test_order_failure_reported_by_the_broker_is_logged_as_a_warning():
    # Arrange
    norm = make()

    # Act
    with capture_logs() as logs:
        event = run(norm, SORDER, stock_order(op_type="New", op_code="88", op_msg="此證券配額張數不足", custom_field="MOMO"))

    # Assert
    assert event.ok is False
    (line,) = _events(logs, "order_failed")
    assert line["log_level"] == "warning"
    assert (line["account"], line["strategy"], line["symbol"], line["order_id"], line["op_type"], line["op_code"], line["op_msg"]) == (
        ACCT, "momo", "2890", "892f730b", "New", "88", "此證券配額張數不足")


def test_dead_letter_keeps_the_payload_without_person_id():
    # Arrange
    norm = make()
    msg = stock_order()
    msg["order"]["account"]["person_id"] = "A123456789"
    msg["order"]["action"] = "Hold"  # malformed

    # Act
    dead = run(norm, SORDER, msg)

    # Assert
    assert isinstance(dead, DeadLetter)
    assert "A123456789" not in repr(dead) and "person_id" not in repr(dead.msg)
    assert dead.msg["order"]["account"]["broker_id"] == "9A95"


# ---------------------------------------------------------------------------------------
# Found by the normalizer fuzz (chaos/fuzz.py): what a dead letter keeps is bounded and storable
# ---------------------------------------------------------------------------------------


def test_dead_letter_of_a_payload_with_a_1mb_string_keeps_a_bounded_copy():
    # Arrange
    norm = make()
    bad = stock_order(event_id="x" * 1_000_000)

    # Act
    dead = run(norm, SORDER, bad)

    # Assert
    assert dead.reason.startswith("event_id='xxx") and len(dead.reason) < 200
    assert 1000 < len(dead.msg["event_id"]) < 1100
    assert dead.msg["order"]["id"] == bad["order"]["id"]
    assert "person_id" not in dead.msg["order"]["account"]


def test_dead_letter_of_a_lone_surrogate_state_and_payload_can_be_recorded():
    # Arrange
    from execstate.record.rows import to_arrow

    norm = make()

    # Act
    dead = run(norm, "SDEAL\ud800", {**stock_deal(), "code": "\udc80"})

    # Assert
    assert dead.state == "SDEAL\\ud800"
    assert dead.msg["code"] == "\\udc80"
    assert to_arrow("dead_letters", [dead]).num_rows == 1


def test_dead_letter_of_a_state_whose_value_raises_is_still_a_dead_letter():
    # Arrange
    class BadState:
        @property
        def value(self):
            raise RuntimeError("boom")

    norm = make()

    # Act
    dead = run(norm, BadState(), stock_deal())

    # Assert
    assert isinstance(dead, DeadLetter)
    assert dead.state == "<BadState>"
    assert norm.stats.dead_letters == 1
