"""rows: Arrow types per column, exact Decimals (never a float), deterministic keys, snapshot flattening."""

import math
from decimal import Decimal as D

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from execstate.domain.events import DeadLetter, FillEvent, OrderEvent, PositionDelta, PositionRecord, PositionSnapshot, ReconcileRecord
from execstate.record.rows import KEYS, arrow_schema, dead_letter_id, dead_letter_json, row_count, to_arrow
from execstate.record.tables import TABLES

TS = pa.timestamp("ns", tz="Asia/Taipei")
MONEY, BOOK = pa.decimal128(18, 4), pa.decimal128(38, 10)


def fill(**overrides) -> FillEvent:
    fields = dict(
        event_id="F:9A95-1234567:892f730b:669915", account="9A95-1234567", order_id="892f730b", seqno="361840",
        ordno="Y23CL", exchange_seq="669915", strategy="alpha", symbol="2890", code="2890", kind="STK", side="Buy",
        price=D("26.85"), quantity=1000, multiplier=D("1"), is_etf=False, order_cond="Cash", order_lot="Common",
        market_type="", custom_field="", ts_event=1_779_333_920_123_456_789, ts_recv=1_779_333_920_200_000_001,
    )
    fields.update(overrides)
    return FillEvent(**fields)


def delta(**overrides) -> PositionDelta:
    fields = dict(
        seq=7, cause="fill", source_id="F:9A95-1234567:892f730b:669915", account="9A95-1234567", strategy="alpha",
        symbol="2890", quantity_before=0, quantity_after=1000, avg_price=D("26.850000"), realized_pnl_change=D("0"),
        realized_pnl=D("0"), fee=D("38"), tax=D("0"), fees=D("38"), taxes=D("0"),
        ts_event=1_779_333_920_123_456_789, ts_recv=1_779_333_920_200_000_001,
    )
    fields.update(overrides)
    return PositionDelta(**fields)


def record(symbol: str = "2890", mark: D | None = None) -> PositionRecord:
    return PositionRecord(account="9A95-1234567", strategy="alpha", symbol=symbol, quantity=1000, avg_price=D("26.85"),
                          realized_pnl=D("0"), unrealized_pnl=D("-50"), fees=D("38"), taxes=D("0"), mark_price=mark,
                          multiplier=D("1"))


def test_every_table_has_an_arrow_schema_and_a_key_of_its_own_columns():
    for table in TABLES:
        names = arrow_schema(table).names
        assert set(KEYS[table]) <= set(names), table
        assert "recorded_at" not in names  # the database fills it in


@pytest.mark.parametrize(("table", "column", "arrow_type"), [
    ("orders", "price", MONEY), ("orders", "modified_price", MONEY), ("orders", "ok", pa.bool_()),
    ("orders", "order_quantity", pa.int64()), ("orders", "ts_event", TS), ("orders", "status", pa.string()),
    ("fills", "multiplier", MONEY), ("fills", "ts_recv", TS), ("fills", "correction", pa.string()),
    ("position_deltas", "avg_price", BOOK), ("position_deltas", "realized_pnl_change", BOOK), ("position_deltas", "fee", MONEY),
    ("position_snapshots", "ts", TS), ("position_snapshots", "mark_price", MONEY), ("position_snapshots", "unrealized_pnl", BOOK),
    ("dead_letters", "ts_recv", TS), ("dead_letters", "msg", pa.string()),
    ("reconciliations", "accounts", pa.list_(pa.string())), ("reconciliations", "started_ns", TS),
    ("reconciliations", "duration_ms", pa.float64()), ("reconciliations", "halted", pa.bool_()),
])
def test_columns_have_the_exact_arrow_types(table, column, arrow_type):
    assert arrow_schema(table).field(column).type == arrow_type


def test_fills_become_arrow_with_exact_decimals_and_nanosecond_timestamps():
    # Arrange
    event = fill(price=D("26.85"), multiplier=D("200"))
    # Act
    table = to_arrow("fills", [event])
    # Assert
    assert table.schema == arrow_schema("fills")
    row = table.to_pylist()[0]
    assert row["price"] == D("26.85") and str(row["price"]) == "26.8500"
    assert row["multiplier"] == D("200")
    assert table.column("ts_event").cast(pa.int64()).to_pylist() == [1_779_333_920_123_456_789]
    assert table.column("ts_event").type.tz == "Asia/Taipei"


@pytest.mark.parametrize(("value", "expected"), [
    (D("0.0001"), D("0.0001")),
    (D("0.00005"), D("0.0000")),  # half-even: to the even neighbour
    (D("0.00015"), D("0.0002")),
    (D("0.00025"), D("0.0002")),
    (D("-0.00015"), D("-0.0002")),
    (D("0.30000000000000004"), D("0.3000")),  # a float's shortest repr, rounded as a decimal
    (D("99999999999999.9999"), D("99999999999999.9999")),  # the largest Decimal(18, 4)
    (577, D("577")),  # ints are exact too
])
def test_money_is_quantized_half_even_to_the_column_scale(value, expected):
    row = to_arrow("fills", [fill(price=value)]).to_pylist()[0]
    assert row["price"] == expected and row["price"].as_tuple().exponent == -4


def test_book_values_keep_ten_decimal_places():
    event = delta(avg_price=D("26.8512345678"), realized_pnl_change=D("-123456789012345678.0123456789"))
    row = to_arrow("position_deltas", [event]).to_pylist()[0]
    assert row["avg_price"] == D("26.8512345678")
    assert row["realized_pnl_change"] == D("-123456789012345678.0123456789")


@pytest.mark.parametrize("value", [26.85, float("nan"), True, "26.85"])
def test_a_float_or_other_non_decimal_money_value_is_refused(value):
    with pytest.raises(ValueError, match=r"fills\.price=.*expected a Decimal"):
        to_arrow("fills", [fill(price=value)])


@pytest.mark.parametrize(("value", "match"), [
    (D("100000000000000"), "expected at most 14 integer digits"),
    (D("-100000000000000.0000"), "expected at most 14 integer digits"),
    (D("NaN"), "expected a finite number"),
    (D("Infinity"), "expected a finite number"),
])
def test_a_decimal_the_column_cannot_hold_is_an_error_not_a_truncation(value, match):
    with pytest.raises(ValueError, match=rf"fills\.price=.*{match}"):
        to_arrow("fills", [fill(price=value)])


@given(st.decimals(min_value=D("-99999999999999.9999"), max_value=D("99999999999999.9999"), places=4, allow_nan=False))
def test_any_four_place_decimal_survives_arrow_exactly(value):
    assert to_arrow("fills", [fill(price=value)]).column("price").to_pylist() == [value]


@given(st.decimals(min_value=D("-1e27"), max_value=D("1e27"), places=10, allow_nan=False))
def test_any_ten_place_book_value_survives_arrow_exactly(value):
    assert to_arrow("position_deltas", [delta(realized_pnl=value)]).column("realized_pnl").to_pylist() == [value]


def test_a_timestamp_that_is_not_an_int_is_refused():
    with pytest.raises(ValueError, match=r"fills\.ts_event=1\.5: expected int nanoseconds"):
        to_arrow("fills", [fill(ts_event=1.5)])


def test_snapshots_flatten_to_one_row_per_position_with_the_snapshot_seq_and_ts():
    # Arrange
    first = PositionSnapshot(seq=3, ts=1_779_333_921_000_000_001, positions=(record("2330"), record("2890", D("26.9"))))
    second = PositionSnapshot(seq=4, ts=1_779_333_922_000_000_002, positions=(record("2330"),))
    empty = PositionSnapshot(seq=5, ts=1_779_333_923_000_000_003, positions=())
    # Act
    table = to_arrow("position_snapshots", [first, second, empty])
    # Assert
    assert table.num_rows == row_count("position_snapshots", [first, second, empty]) == 3
    assert table.column("seq").to_pylist() == [3, 3, 4]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [first.ts, first.ts, second.ts]
    assert table.column("symbol").to_pylist() == ["2330", "2890", "2330"]
    assert table.column("mark_price").to_pylist() == [None, D("26.9"), None]


def test_no_events_give_an_empty_table_with_the_schema():
    for table in TABLES:
        assert to_arrow(table, []).schema == arrow_schema(table)
        assert to_arrow(table, []).num_rows == row_count(table, []) == 0


def test_delta_key_is_its_cause_and_position_not_its_run_sequence_number():
    assert KEYS["position_deltas"] == ("account", "strategy", "symbol", "source_id", "cause")
    assert "seq" not in KEYS["position_snapshots"]


def test_dead_letter_id_is_deterministic_and_ignores_key_order():
    a = DeadLetter(reason="price=nan: expected a finite price", state="SDEAL", ts_recv=1_779_333_920_000_000_001,
                   msg={"price": math.nan, "code": "2890", "nested": {"b": 1, "a": [1, 2]}})
    b = DeadLetter(reason=a.reason, state=a.state, ts_recv=a.ts_recv,
                   msg={"nested": {"a": [1, 2], "b": 1}, "code": "2890", "price": math.nan})
    assert dead_letter_id(a) == dead_letter_id(b)
    assert len(dead_letter_id(a)) == 32


@pytest.mark.parametrize("change", [
    {"reason": "other"}, {"state": "SORDER"}, {"ts_recv": 1_779_333_920_000_000_002}, {"msg": {"code": "2891"}},
])
def test_dead_letter_id_changes_with_any_of_its_fields(change):
    base = dict(reason="r", state="SDEAL", ts_recv=1_779_333_920_000_000_001, msg={"code": "2890"})
    assert dead_letter_id(DeadLetter(**base)) != dead_letter_id(DeadLetter(**{**base, **change}))


def test_dead_letter_rows_carry_the_id_and_the_payload_as_json_with_nan_kept():
    dead = DeadLetter(reason="price=nan", state="SDEAL", ts_recv=1, msg={"price": math.nan, "name": "台積電"})
    row = to_arrow("dead_letters", [dead]).to_pylist()[0]
    assert row["letter_id"] == dead_letter_id(dead)
    assert row["msg"] == dead_letter_json(dead.msg) == '{"name":"台積電","price":NaN}'


def test_reconcile_records_keep_accounts_as_a_list():
    rec = ReconcileRecord(record_id="R:1:poll", reason="poll", accounts=("9A95-1234567", "F002000-7654321"), started_ns=1,
                          duration_ms=12.5, records_resubmitted=0, recovered_fills=2, discrepancies="[]", corrections="[]",
                          error="", halted=False)
    row = to_arrow("reconciliations", [rec]).to_pylist()[0]
    assert row["accounts"] == ["9A95-1234567", "F002000-7654321"]
    assert row["duration_ms"] == 12.5


def test_orders_round_trip_every_field():
    order = OrderEvent(event_id="O:9A95-1234567:892f730b:New:1779333919920000000", account="9A95-1234567", order_id="892f730b",
                       seqno="361840", ordno="Y23CL", strategy="alpha", symbol="2890", code="2890", kind="STK", op_type="New",
                       op_code="00", op_msg="", ok=True, action="Buy", price=D("26.85"), order_quantity=1000, cancel_quantity=0,
                       modified_price=D("0"), order_cond="Cash", order_lot="Common", price_type="LMT", time_in_force="ROD",
                       custom_field="", status="Submitted", ts_event=1_779_333_919_920_000_000, ts_recv=1_779_333_919_950_000_000)
    row = to_arrow("orders", [order]).to_pylist()[0]
    row["ts_event"], row["ts_recv"] = order.ts_event, order.ts_recv
    assert OrderEvent(**row) == order


def test_an_event_of_another_type_or_an_unknown_table_is_refused():
    with pytest.raises(ValueError, match="orders: got FillEvent, expected OrderEvent"):
        to_arrow("orders", [fill()])
    with pytest.raises(ValueError, match="table='trades'"):
        to_arrow("trades", [])
    with pytest.raises(ValueError, match="table='trades'"):
        row_count("trades", [])
