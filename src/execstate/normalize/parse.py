"""Pure parsing of Shioaji order and deal payloads into validated field sets.

Entry points: `parse_order(state, msg)`, `parse_deal(state, msg)`,
`epoch_s_to_ns(value, field)`.

Invariants:
- Input is any Mapping shaped like Shioaji 1.7.9's TypedDicts (the real `OrderEventDict`
  or a plain dict); nothing is mutated.
- Every identifier, price and quantity is checked; the first bad field raises
  `MalformedEvent` whose reason names the field and the value.
- Floats become Decimal through their repr; epoch seconds become int nanoseconds at
  microsecond resolution (deterministic for the same float).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from execstate.domain.errors import FieldError, MalformedEvent
from execstate.domain.instruments import STOCK_ORDER_CONDS, shares_per_unit
from execstate.domain.money import to_price, to_quantity
from execstate.domain.payloads import state_name  # noqa: F401  (re-exported)

ORDER_STATES = frozenset({"SORDER", "FORDER"})
DEAL_STATES = frozenset({"SDEAL", "FDEAL"})
OP_TYPES = frozenset({"New", "Cancel", "UpdatePrice", "UpdateQty", "Reject"})
SIDES = frozenset({"Buy", "Sell"})
DERIVATIVE_TYPES = frozenset({"FUT", "OPT"})
_MAX_ID = 64


def _field(msg: Mapping[str, Any], key: str, path: str) -> Any:
    try:
        return msg[key]
    except KeyError:
        raise MalformedEvent(f"{path}{key}: missing") from None
    except Exception as exc:  # an exotic mapping
        raise MalformedEvent(f"{path}{key}: unreadable ({type(exc).__name__})") from None


def _mapping(msg: Mapping[str, Any], key: str, path: str = "") -> Mapping[str, Any]:
    value = _field(msg, key, path)
    if not isinstance(value, Mapping) and not hasattr(value, "keys"):
        raise MalformedEvent(f"{path}{key}={value!r:.80}: expected an object")
    return value


def _str(msg: Mapping[str, Any], key: str, path: str = "", *, required: bool = True, choices: frozenset[str] | None = None) -> str:
    if not required and key not in msg:
        return ""
    value = _field(msg, key, path)
    if not isinstance(value, str):
        raise MalformedEvent(f"{path}{key}={value!r:.80}: expected a string")
    if len(value) > _MAX_ID and choices is None:
        raise MalformedEvent(f"{path}{key}={value[:40]!r}...: expected at most {_MAX_ID} characters")
    if required and not value:
        raise MalformedEvent(f"{path}{key}='': expected a non-empty string")
    if choices is not None and value not in choices:
        raise MalformedEvent(f"{path}{key}={value[:40]!r}: expected one of {', '.join(sorted(choices))}")
    return value


def _checked(fn: Any, msg: Mapping[str, Any], key: str, path: str, **kw: Any) -> Any:
    try:
        return fn(_field(msg, key, path), f"{path}{key}", **kw)
    except FieldError as exc:
        raise MalformedEvent(str(exc)) from None


def epoch_s_to_ns(value: Any, field: str) -> int:
    """Float epoch seconds -> int ns (microsecond resolution)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise FieldError(field, value, "epoch seconds > 0")
    return round(value * 1_000_000) * 1000


class ParsedDeal(NamedTuple):
    state: str
    event_id: str
    account: str
    trade_id: str
    seqno: str
    ordno: str
    exchange_seq: str
    side: str
    code: str
    full_code: str
    security_type: str  # STK, FUT or OPT
    order_cond: str
    order_lot: str
    price: Decimal
    quantity: int  # book units
    market_type: str
    custom_field: str
    ts_event: int


class ParsedOrder(NamedTuple):
    state: str
    event_id: str
    account: str
    order_id: str
    seqno: str
    ordno: str
    op_type: str
    op_code: str
    op_msg: str
    side: str
    code: str
    full_code: str
    security_type: str
    order_cond: str
    order_lot: str
    price: Decimal
    quantity: int  # order.quantity, book units
    order_quantity: int  # status.order_quantity, book units
    cancel_quantity: int  # status.cancel_quantity (cumulative), book units
    modified_price: Decimal
    price_type: str
    time_in_force: str
    custom_field: str
    exchange_ts: float
    ts_event: int


def _units(order_lot: str, path: str) -> int:
    per_unit = shares_per_unit(order_lot)
    if per_unit is None:
        raise MalformedEvent(f"{path}order_lot={order_lot!r}: expected Common, Odd, IntradayOdd, Fixing or BlockTrade")
    return per_unit


def parse_deal(state: str, msg: Mapping[str, Any]) -> ParsedDeal:
    """Validate an SDEAL / FDEAL payload."""
    account = f"{_str(msg, 'broker_id')}-{_str(msg, 'account_id')}"
    price = _checked(to_price, msg, "price", "")
    if price == 0:
        raise MalformedEvent(f"price={msg['price']!r}: expected a deal price > 0")
    quantity = _checked(to_quantity, msg, "quantity", "")
    if state == "SDEAL":
        order_lot = _str(msg, "order_lot")
        quantity *= _units(order_lot, "")
        security_type, full_code = "STK", ""
        order_cond = _str(msg, "order_cond", choices=STOCK_ORDER_CONDS)
        market_type = ""
    else:
        order_lot, order_cond = "", ""
        security_type = _str(msg, "security_type", choices=DERIVATIVE_TYPES)
        full_code = _str(msg, "full_code")
        market_type = _str(msg, "market_type", required=False)
    try:
        ts_event = epoch_s_to_ns(_field(msg, "ts", ""), "ts")
    except FieldError as exc:
        raise MalformedEvent(str(exc)) from None
    return ParsedDeal(
        state=state,
        event_id=_str(msg, "event_id", required=False),
        account=account,
        trade_id=_str(msg, "trade_id"),
        seqno=_str(msg, "seqno", required=False),
        ordno=_str(msg, "ordno", required=False),
        exchange_seq=_str(msg, "exchange_seq"),
        side=_str(msg, "action", choices=SIDES),
        code=_str(msg, "code"),
        full_code=full_code,
        security_type=security_type,
        order_cond=order_cond,
        order_lot=order_lot,
        price=price,
        quantity=quantity,
        market_type=market_type,
        custom_field=_str(msg, "custom_field", required=False),
        ts_event=ts_event,
    )


def parse_order(state: str, msg: Mapping[str, Any]) -> ParsedOrder:
    """Validate an SORDER / FORDER payload."""
    operation = _mapping(msg, "operation")
    order = _mapping(msg, "order")
    status = _mapping(msg, "status")
    contract = _mapping(msg, "contract")
    account_map = _mapping(order, "account", "order.")
    account = f"{_str(account_map, 'broker_id', 'order.account.')}-{_str(account_map, 'account_id', 'order.account.')}"
    if state == "SORDER":
        order_lot = _str(order, "order_lot", "order.")
        units = _units(order_lot, "order.")
        order_cond = _str(order, "order_cond", "order.", choices=STOCK_ORDER_CONDS)
        security_type, full_code = "STK", ""
    else:
        order_lot, order_cond, units = "", "", 1
        security_type = _str(contract, "security_type", "contract.", choices=DERIVATIVE_TYPES)
        full_code = _str(contract, "full_code", "contract.")
    exchange_ts = _field(status, "exchange_ts", "status.")
    try:
        ts_event = epoch_s_to_ns(exchange_ts, "status.exchange_ts")
    except FieldError as exc:
        raise MalformedEvent(str(exc)) from None
    order_id = _str(order, "id", "order.")
    status_id = _str(status, "id", "status.", required=False)
    if status_id and status_id != order_id:
        raise MalformedEvent(f"status.id={status_id!r}: expected the order id {order_id!r}")
    tif = _str(order, "time_in_force", "order.", required=False) or _str(order, "order_type", "order.", required=False)
    return ParsedOrder(
        state=state,
        event_id=_str(msg, "event_id", required=False),
        account=account,
        order_id=order_id,
        seqno=_str(order, "seqno", "order.", required=False),
        ordno=_str(order, "ordno", "order.", required=False),
        op_type=_str(operation, "op_type", "operation.", choices=OP_TYPES),
        op_code=_str(operation, "op_code", "operation."),
        op_msg=_str(operation, "op_msg", "operation.", required=False),
        side=_str(order, "action", "order.", choices=SIDES),
        code=_str(contract, "code", "contract."),
        full_code=full_code,
        security_type=security_type,
        order_cond=order_cond,
        order_lot=order_lot,
        price=_checked(to_price, order, "price", "order."),
        quantity=_checked(to_quantity, order, "quantity", "order.", allow_zero=True) * units,
        order_quantity=_checked(to_quantity, status, "order_quantity", "status.", allow_zero=True) * units,
        cancel_quantity=_checked(to_quantity, status, "cancel_quantity", "status.", allow_zero=True) * units,
        modified_price=_checked(to_price, status, "modified_price", "status."),
        price_type=_str(order, "price_type", "order.", required=False),
        time_in_force=tif,
        custom_field=_str(order, "custom_field", "order.", required=False),
        exchange_ts=float(exchange_ts),
        ts_event=ts_event,
    )
