"""Parsing of Shioaji order and deal payloads: validation, units, exact prices, timestamps."""

import ast
import math
from decimal import Decimal
from pathlib import Path

import pytest
import shioaji as sj
from payloads import (
    futures_deal,
    futures_order,
    stock_deal,
    stock_order,
    with_value,
    without,
)

from execstate.domain.errors import FieldError, MalformedEvent
from execstate.domain.payloads import state_name
from execstate.normalize.parse import epoch_s_to_ns, parse_deal, parse_order

# ---------------------------------------------------------------------------------------
# The builders themselves: shaped exactly like the 1.7.9 TypedDicts
# ---------------------------------------------------------------------------------------

_STUB = Path(sj.__file__).parent / "_core.pyi"


def _typeddicts() -> dict[str, dict[str, str]]:
    """TypedDict name -> {key: annotation source} from the installed stub."""
    tree = ast.parse(_STUB.read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") == "TypedDict" for b in node.bases):
            out[node.name] = {
                stmt.target.id: ast.unparse(stmt.annotation)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    return out


def _assert_shape(payload: dict, typed: str, dicts: dict[str, dict[str, str]], path: str = "") -> None:
    fields = dicts[typed]
    assert set(payload) == set(fields), f"{path or typed}: keys differ from {typed}"
    for key, annotation in fields.items():
        if annotation in dicts:
            _assert_shape(payload[key], annotation, dicts, f"{path}{key}.")


@pytest.mark.parametrize(
    ("builder", "typed"),
    [
        (stock_order, "StockOrderEvent"),
        (stock_deal, "StockDealEvent"),
        (futures_order, "FuturesOrderEvent"),
        (futures_deal, "FuturesDealEvent"),
    ],
)
def test_payload_builders_have_exactly_the_keys_of_the_shioaji_typeddicts(builder, typed):
    # Arrange
    dicts = _typeddicts()

    # Act
    payload = builder()

    # Assert
    _assert_shape(payload, typed, dicts)


# ---------------------------------------------------------------------------------------
# Happy paths
# ---------------------------------------------------------------------------------------


def test_stock_deal_common_lot_is_parsed_into_shares_with_exact_price():
    # Arrange
    msg = stock_deal(price=26.85, quantity=2, order_lot="Common")

    # Act
    d = parse_deal("SDEAL", msg)

    # Assert
    assert d.quantity == 2000
    assert d.price == Decimal("26.85")
    assert type(d.price) is Decimal
    assert d.account == "9A95-1234567"
    assert (d.trade_id, d.seqno, d.ordno, d.exchange_seq) == ("892f730b", "361840", "Y23CL", "669915")
    assert (d.security_type, d.side, d.code, d.order_cond) == ("STK", "Buy", "2890", "Cash")


@pytest.mark.parametrize(("order_lot", "quantity", "shares"), [
    ("Common", 1, 1000),
    ("Fixing", 3, 3000),
    ("BlockTrade", 5, 5000),
    ("IntradayOdd", 3, 3),
    ("Odd", 250, 250),
])
def test_stock_deal_quantity_is_converted_to_shares_by_order_lot(order_lot, quantity, shares):
    # Arrange
    msg = stock_deal(order_lot=order_lot, quantity=quantity)

    # Act
    d = parse_deal("SDEAL", msg)

    # Assert
    assert d.quantity == shares
    assert d.order_lot == order_lot


@pytest.mark.parametrize(("order_lot", "quantity", "shares"), [("Common", 2, 2000), ("IntradayOdd", 10, 10)])
def test_stock_order_quantities_are_converted_to_shares(order_lot, quantity, shares):
    # Arrange
    msg = stock_order(order_lot=order_lot, quantity=quantity, cancel_quantity=1)

    # Act
    o = parse_order("SORDER", msg)

    # Assert
    assert o.quantity == shares
    assert o.order_quantity == shares
    assert o.cancel_quantity == shares // quantity


def test_futures_deal_quantity_is_in_contracts_and_keeps_full_code():
    # Arrange
    msg = futures_deal(quantity=3, price=25.0)

    # Act
    d = parse_deal("FDEAL", msg)

    # Assert
    assert d.quantity == 3
    assert d.price == Decimal("25.0")
    assert (d.code, d.full_code, d.security_type, d.market_type) == ("TX1", "TX127900L5", "OPT", "Day")
    assert d.account == "F002000-1234567"
    assert d.order_lot == "" and d.order_cond == ""


def test_futures_order_quantity_is_in_contracts():
    # Arrange
    msg = futures_order(quantity=4, order_quantity=4, cancel_quantity=1)

    # Act
    o = parse_order("FORDER", msg)

    # Assert
    assert (o.quantity, o.order_quantity, o.cancel_quantity) == (4, 4, 1)
    assert (o.full_code, o.security_type) == ("TMFF6", "FUT")
    assert o.price == Decimal("36112.0")


@pytest.mark.parametrize(("raw", "exact"), [
    (26.85, "26.85"),
    (0.1, "0.1"),
    (1.15, "1.15"),
    (36112.0, "36112.0"),
    (579, "579"),
    (1e-05, "0.00001"),
])
def test_float_prices_become_the_decimal_the_broker_printed(raw, exact):
    # Arrange
    msg = stock_deal(price=raw)

    # Act
    d = parse_deal("SDEAL", msg)

    # Assert
    assert d.price == Decimal(exact)  # Decimal(26.85) from the binary float would differ
    assert type(d.price) is Decimal


@pytest.mark.parametrize(("ts", "ns"), [
    (1779333920.0, 1_779_333_920_000_000_000),
    (1673577256.354, 1_673_577_256_354_000_000),
    (1779333919.92, 1_779_333_919_920_000_000),
    (1764685425, 1_764_685_425_000_000_000),
])
def test_epoch_seconds_become_integer_nanoseconds_at_microsecond_resolution(ts, ns):
    # Act
    got = epoch_s_to_ns(ts, "ts")

    # Assert
    assert got == ns
    assert type(got) is int


def test_deal_ts_and_order_exchange_ts_are_converted_to_ns():
    # Arrange
    deal = stock_deal(ts=1673577256.354)
    order = stock_order(exchange_ts=1779333919.92)

    # Act
    d = parse_deal("SDEAL", deal)
    o = parse_order("SORDER", order)

    # Assert
    assert d.ts_event == 1_673_577_256_354_000_000
    assert o.ts_event == 1_779_333_919_920_000_000
    assert o.exchange_ts == 1779333919.92


def test_order_time_in_force_falls_back_to_order_type():
    # Arrange
    msg = without(stock_order(time_in_force="IOC"), "order.time_in_force")

    # Act
    o = parse_order("SORDER", msg)

    # Assert
    assert o.time_in_force == "IOC"


def test_market_order_with_zero_price_is_accepted():
    # Arrange
    msg = stock_order(price=0.0, price_type="MKT", time_in_force="IOC")

    # Act
    o = parse_order("SORDER", msg)

    # Assert
    assert o.price == 0


def test_parsing_does_not_mutate_the_payload():
    # Arrange
    msg = stock_order()
    before = repr(msg)

    # Act
    parse_order("SORDER", msg)

    # Assert
    assert repr(msg) == before


@pytest.mark.parametrize(("state", "name"), [
    (sj.OrderState.StockOrder, "SORDER"),
    (sj.OrderState.StockDeal, "SDEAL"),
    (sj.OrderState.FuturesOrder, "FORDER"),
    (sj.OrderState.FuturesDeal, "FDEAL"),
    (sj.OrderState("SDEAL"), "SDEAL"),
    (sj.OrderState("StockDeal"), "SDEAL"),
    ("StockOrder", "SORDER"),
    ("StockDeal", "SDEAL"),
    ("FuturesOrder", "FORDER"),
    ("FuturesDeal", "FDEAL"),
    ("FDEAL", "FDEAL"),
], ids=lambda v: str(getattr(v, "value", v)))
def test_state_names_come_from_the_enum_its_value_or_its_name(state, name):
    # Act
    got = state_name(state)

    # Assert
    assert got == name
    assert type(got) is str


def test_state_that_is_not_a_string_is_malformed():
    # Act / Assert
    with pytest.raises(MalformedEvent, match=r"state=42"):
        state_name(42)


# ---------------------------------------------------------------------------------------
# Missing fields
# ---------------------------------------------------------------------------------------

_DEAL_REQUIRED = ["broker_id", "account_id", "price", "quantity", "ts", "trade_id", "exchange_seq", "action", "code"]
_STOCK_DEAL_REQUIRED = [*_DEAL_REQUIRED, "order_lot", "order_cond"]
_FUTURES_DEAL_REQUIRED = [*_DEAL_REQUIRED, "security_type", "full_code"]
_ORDER_REQUIRED = [
    "operation", "order", "status", "contract",
    "order.account", "order.account.broker_id", "order.account.account_id",
    "operation.op_type", "operation.op_code",
    "order.id", "order.action", "order.price", "order.quantity",
    "status.exchange_ts", "status.order_quantity", "status.cancel_quantity",
    "contract.code",
]
_STOCK_ORDER_REQUIRED = [*_ORDER_REQUIRED, "order.order_lot", "order.order_cond"]
_FUTURES_ORDER_REQUIRED = [*_ORDER_REQUIRED, "contract.security_type", "contract.full_code"]


@pytest.mark.parametrize("field", _STOCK_DEAL_REQUIRED)
def test_stock_deal_missing_required_field_is_malformed_naming_it(field):
    # Arrange
    msg = without(stock_deal(), field)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason == f"{field}: missing"


@pytest.mark.parametrize("field", _FUTURES_DEAL_REQUIRED)
def test_futures_deal_missing_required_field_is_malformed_naming_it(field):
    # Arrange
    msg = without(futures_deal(), field)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("FDEAL", msg)

    # Assert
    assert exc.value.reason == f"{field}: missing"


@pytest.mark.parametrize("field", _STOCK_ORDER_REQUIRED)
def test_stock_order_missing_required_field_is_malformed_naming_it(field):
    # Arrange
    msg = without(stock_order(), field)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("SORDER", msg)

    # Assert
    assert exc.value.reason == f"{field}: missing"


@pytest.mark.parametrize("field", _FUTURES_ORDER_REQUIRED)
def test_futures_order_missing_required_field_is_malformed_naming_it(field):
    # Arrange
    msg = without(futures_order(), field)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("FORDER", msg)

    # Assert
    assert exc.value.reason == f"{field}: missing"


@pytest.mark.parametrize("field", ["event_id", "seqno", "ordno", "custom_field", "web_id"])
def test_stock_deal_without_optional_identifier_still_parses(field):
    # Arrange
    msg = without(stock_deal(), field)

    # Act
    d = parse_deal("SDEAL", msg)

    # Assert
    assert d.trade_id == "892f730b"


@pytest.mark.parametrize("payload", [None, [], "SDEAL", 42])
def test_payload_that_is_not_an_object_is_malformed(payload):
    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", payload)  # type: ignore[arg-type]

    # Assert
    assert "expected" in exc.value.reason


@pytest.mark.parametrize("section", ["operation", "order", "status", "contract", "order.account"])
def test_order_section_that_is_not_an_object_is_malformed(section):
    # Arrange
    msg = with_value(stock_order(), section, "oops")

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("SORDER", msg)

    # Assert
    assert exc.value.reason.startswith(f"{section}='oops': expected ")
    assert "object" in exc.value.reason


# ---------------------------------------------------------------------------------------
# Wrong types and values
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("quantity", 1.0),
    ("quantity", True),
    ("quantity", "1"),
    ("quantity", None),
    ("quantity", 0),
    ("quantity", -1),
    ("price", float("nan")),
    ("price", float("inf")),
    ("price", float("-inf")),
    ("price", -26.85),
    ("price", True),
    ("price", None),
    ("price", "26.85"),
    ("price", "abc"),
    ("price", [26.85]),
])
def test_stock_deal_bad_price_or_quantity_is_malformed_naming_field_and_value(field, value):
    # Arrange
    msg = stock_deal(**{field: value})

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason.startswith(f"{field}={value!r}: expected ")


def test_deal_at_zero_price_is_malformed():
    # Arrange
    msg = futures_deal(price=0.0)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("FDEAL", msg)

    # Assert
    assert exc.value.reason == "price=0.0: expected a deal price > 0"


@pytest.mark.parametrize(("field", "value"), [
    ("order.quantity", 1.5),
    ("order.quantity", False),
    ("order.quantity", -1),
    ("status.order_quantity", 2.0),
    ("status.cancel_quantity", -1),
    ("order.price", float("nan")),
    ("order.price", -1.0),
    ("status.modified_price", float("inf")),
])
def test_stock_order_bad_number_is_malformed_naming_the_dotted_field(field, value):
    # Arrange
    msg = with_value(stock_order(), field, value)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("SORDER", msg)

    # Assert
    assert exc.value.reason.startswith(f"{field}={value!r}: expected ")


def test_stock_order_with_zero_quantity_is_accepted():
    # Arrange: a fully cancelled order may report zero totals
    msg = stock_order(quantity=0, order_quantity=0)

    # Act
    o = parse_order("SORDER", msg)

    # Assert
    assert (o.quantity, o.order_quantity) == (0, 0)


@pytest.mark.parametrize(("field", "value"), [
    ("action", "Hold"),
    ("order_lot", "Lot"),
    ("order_cond", "Credit"),
])
def test_stock_deal_unknown_enum_value_is_malformed_naming_field_and_value(field, value):
    # Arrange
    msg = stock_deal(**{field: value})

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason.startswith(f"{field}={value!r}")


@pytest.mark.parametrize(("field", "value"), [
    ("operation.op_type", "Amend"),
    ("order.action", "buy"),
    ("order.order_lot", "Board"),
    ("order.order_cond", "Margin"),
])
def test_stock_order_unknown_enum_value_is_malformed_naming_field_and_value(field, value):
    # Arrange
    msg = with_value(stock_order(), field, value)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("SORDER", msg)

    # Assert
    assert exc.value.reason.startswith(f"{field}={value!r}")


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("action", "Hold", ["Buy", "Sell"]),
    ("order_cond", "Credit", ["Cash", "MarginTrading", "ShortSelling"]),
])
def test_unknown_enum_value_reason_lists_the_allowed_values(field, value, allowed):
    # Arrange
    msg = stock_deal(**{field: value})

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert all(a in exc.value.reason for a in allowed)


def test_futures_deal_unknown_security_type_is_malformed():
    # Arrange
    msg = futures_deal(security_type="STK")

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("FDEAL", msg)

    # Assert
    assert exc.value.reason.startswith("security_type='STK'")


def test_futures_order_unknown_security_type_is_malformed():
    # Arrange
    msg = futures_order(security_type="IND")

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("FORDER", msg)

    # Assert
    assert exc.value.reason.startswith("contract.security_type='IND'")


@pytest.mark.parametrize("field", ["trade_id", "exchange_seq", "code", "broker_id", "account_id"])
def test_empty_required_identifier_is_malformed(field):
    # Arrange
    msg = stock_deal(**{field: ""})

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason.startswith(f"{field}='': expected ")


@pytest.mark.parametrize("field", ["trade_id", "exchange_seq", "event_id", "custom_field"])
def test_identifier_of_wrong_type_is_malformed(field):
    # Arrange
    msg = stock_deal(**{field: 12345})

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason.startswith(f"{field}=12345: expected ")
    assert "str" in exc.value.reason




@pytest.mark.parametrize("field", [
    "trade_id", "event_id", "custom_field",
    "action",
    "order_lot",
])
def test_huge_string_is_malformed_with_a_short_reason(field):
    # Arrange
    msg = stock_deal(**{field: "X" * 1_000_000})

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason.startswith(f"{field}='XXXX")
    assert len(exc.value.reason) < 300


def test_huge_string_price_is_malformed_with_a_short_reason():
    # Arrange
    msg = stock_deal(price="Z" * 1_000_000)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason.startswith("price='ZZZ")
    assert len(exc.value.reason) < 200


@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf"), True, None, "1779333920.0"])
def test_bad_deal_timestamp_is_malformed_naming_field_and_value(value):
    # Arrange
    msg = stock_deal(ts=value)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason.startswith(f"ts={value!r}: expected ")


def test_bad_order_exchange_ts_names_the_dotted_field():
    # Arrange
    msg = stock_order(exchange_ts=math.inf)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("SORDER", msg)

    # Assert
    assert exc.value.reason.startswith("status.exchange_ts=inf: expected ")


def test_epoch_conversion_raises_field_error_naming_the_field():
    # Act
    with pytest.raises(FieldError) as exc:
        epoch_s_to_ns(None, "status.exchange_ts")

    # Assert
    assert exc.value.field == "status.exchange_ts"
    assert exc.value.value is None


def test_status_id_different_from_order_id_is_malformed():
    # Arrange
    msg = stock_order(order_id="892f730b", status_id="deadbeef")

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("SORDER", msg)

    # Assert
    assert exc.value.reason == "status.id='deadbeef': expected the order id '892f730b'"


# ---------------------------------------------------------------------------------------
# Found by the normalizer fuzz (chaos/fuzz.py)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ts", "ok"), [(4_102_444_800, True), (4_102_444_800.5, False), (9.3e9, False), (5e10, False), (1e11, False)])
def test_deal_time_after_2100_is_malformed_instead_of_overflowing_int64_ns(ts, ok):
    # Arrange: 1e11 s used to pass and became 1e20 ns: no table row or Arrow column could hold it
    msg = stock_deal(ts=ts)

    # Act / Assert
    if ok:
        assert parse_deal("SDEAL", msg).ts_event == 4_102_444_800 * 10**9
    else:
        with pytest.raises(MalformedEvent) as exc:
            parse_deal("SDEAL", msg)
        assert exc.value.reason.startswith(f"ts={ts!r}: expected float <= ")


def test_order_exchange_time_after_2100_is_malformed():
    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("FORDER", futures_order(exchange_ts=5e10))

    # Assert
    assert exc.value.reason.startswith("status.exchange_ts=50000000000.0: expected float <= ")


@pytest.mark.parametrize(("field", "value"), [
    ("code", "23\udc80"), ("trade_id", "\ud800"), ("event_id", "e\udfff"), ("custom_field", "MO\ud800"), ("exchange_seq", "\udc80" * 3),
])
def test_stock_deal_text_with_a_lone_surrogate_is_malformed_naming_the_field(field, value):
    # Arrange: accepted before, it then broke the journal, the fills table, snapshots and logs
    msg = stock_deal(**{field: value})

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason == f"{field}={value!r}: expected text without lone surrogates"


@pytest.mark.parametrize(("field", "value"), [
    ("order.id", "892f\ud800"), ("operation.op_msg", "委託\udc80"), ("contract.code", "\ud800"), ("order.account.broker_id", "9A\udfff"),
])
def test_stock_order_text_with_a_lone_surrogate_is_malformed_naming_the_dotted_field(field, value):
    # Arrange
    msg = with_value(stock_order(), field, value)
    if field == "order.id":
        msg = with_value(msg, "status.id", value)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("SORDER", msg)

    # Assert
    assert exc.value.reason == f"{field}={value!r}: expected text without lone surrogates"


def test_enum_value_with_a_lone_surrogate_is_malformed_naming_the_field():
    # Arrange: msgspec cannot quote it in its own message (UnicodeEncodeError, not a ValidationError)
    msg = with_value(futures_order(), "operation.op_type", "\ud800")

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_order("FORDER", msg)

    # Assert
    assert exc.value.reason == "operation.op_type='\\ud800': expected text without lone surrogates"


def test_chinese_text_is_still_accepted():
    # Act
    order = parse_order("SORDER", stock_order(op_code="88", op_msg="此證券配額張數不足"))

    # Assert
    assert order.op_msg == "此證券配額張數不足"


def test_reason_for_a_megabyte_enum_value_is_short_and_names_the_field():
    # Arrange: msgspec puts the whole value in its message; the reason shows 57 characters of it
    msg = stock_deal(action="x" * 1_000_000)

    # Act
    with pytest.raises(MalformedEvent) as exc:
        parse_deal("SDEAL", msg)

    # Assert
    assert exc.value.reason == "action='" + "x" * 56 + "...: expected one of Buy, Sell"


@pytest.mark.parametrize(("field", "value", "ok"), [
    ("price", 1e6, True), ("price", 1e6 + 0.5, False), ("price", 1e12, False),
    ("quantity", 1_000_000, True), ("quantity", 1_000_001, False), ("quantity", 10_000_000, False),
])
def test_deal_price_and_quantity_are_bounded_so_the_fill_can_be_recorded(field, value, ok):
    # Arrange: price 1e12 x 1e7 lots used to pass; its fee (1.4e19 TWD) fits no Decimal(18, 4) column
    msg = stock_deal(**{field: value})

    # Act / Assert
    if ok:
        parse_deal("SDEAL", msg)
    else:
        with pytest.raises(MalformedEvent) as exc:
            parse_deal("SDEAL", msg)
        assert exc.value.reason.startswith(f"{field}={value!r}: expected int <= " if field == "quantity" else f"{field}={value!r}: expected float <= ")
