"""Pure parsing of Shioaji order and deal payloads into validated field sets.

Entry points: `parse_order(state, msg) -> ParsedOrder`, `parse_deal(state, msg) -> ParsedDeal`,
`epoch_s_to_ns(value, field)`.

Invariants:
- Input is a Mapping shaped like Shioaji 1.7.9's TypedDicts (plain dicts; the pipeline turns
  Shioaji's dict-like `OrderEventDict` into one first); nothing is mutated.
- Validation is the msgspec schemas of `normalize.schema` (in C), then a deal price > 0, the
  status id = the order id, and no lone surrogate in the text kept. The first bad field
  raises `MalformedEvent` whose reason names the field and the value, e.g.
  `price=nan: expected float >= 0.0` or `order.account.broker_id: missing`.
- Floats become Decimal through their repr; epoch seconds become int nanoseconds at
  microsecond resolution (deterministic for the same float).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, get_args

import msgspec

from execstate.domain.errors import FieldError, MalformedEvent
from execstate.domain.instruments import shares_per_unit
from execstate.normalize.schema import Derivative, FuturesDealMsg, FuturesOrderMsg, OpType, OrderCond, OrderLot, Side, StockDealMsg, StockOrderMsg

ORDER_STATES = frozenset({"SORDER", "FORDER"})
DEAL_STATES = frozenset({"SDEAL", "FDEAL"})
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def epoch_s_to_ns(value: Any, field: str) -> int:
    """Float epoch seconds -> int ns (microsecond resolution)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise FieldError(field, value, "epoch seconds > 0")
    return round(value * 1_000_000) * 1000


_ALLOWED = {
    "action": get_args(Side), "order_cond": get_args(OrderCond), "order_lot": get_args(OrderLot),
    "op_type": get_args(OpType), "security_type": get_args(Derivative),
}


def _lookup(msg: Any, path: list[str]) -> Any:
    value = msg
    for part in path:
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _split(message: str) -> tuple[str, str]:
    """msgspec's message -> (what, path after `$`), e.g. ("Expected `float`, got `str`", ".order.price").
    A partition, not a regex: an enum value of a megabyte is in the message (a regex took 44 ms)."""
    what, sep, rest = message.rpartition(" - at `$")
    if sep and rest.endswith("`") and "`" not in rest[:-1]:
        return what, rest[:-1]
    return message, ""


def _reason(exc: msgspec.ValidationError, msg: Mapping[str, Any]) -> str:
    """Rewrite msgspec's message as `field=value: expected ...` (or `field: missing`)."""
    what, raw_path = _split(str(exc))
    parts = [p for p in re.split(r"\.|\[|\]", raw_path) if p]
    missing = _MISSING.match(what)
    if missing:
        return ".".join([*parts, missing.group("field")]) + ": missing"
    field = ".".join(parts) or "<payload>"
    try:
        found = _lookup(msg, parts)
        value = repr(found[:61] if type(found) is str else found)  # (a megabyte string: only what is shown)
    except Exception:
        value = "?"
    if len(value) > 60:
        value = value[:57] + "..."
    if what.startswith("Invalid enum value") and parts and parts[-1] in _ALLOWED:
        return f"{field}={value}: expected one of {', '.join(_ALLOWED[parts[-1]])}"
    expected = what[:240].replace("`", "")[:120]
    expected = expected[0].lower() + expected[1:] if expected else expected
    return f"{field}={value}: {expected}"


def _surrogate_at(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The dotted path of the first string holding a lone surrogate (key or value), if any."""
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path or '<payload>'}={value[:40]!r}"
        return None
    if depth < 32 and isinstance(value, Mapping):
        for k, v in value.items():
            name = f"{path}.{k}" if path else str(k)
            found = _surrogate_at(k, name, depth + 1) if type(k) is str else None
            found = found or _surrogate_at(v, name, depth + 1)
            if found:
                return found
    return None


def _convert(msg: Mapping[str, Any], schema: type) -> Any:
    try:
        return msgspec.convert(msg, schema)
    except msgspec.ValidationError as exc:
        raise MalformedEvent(_reason(exc, msg)) from None
    except UnicodeEncodeError:  # msgspec could not quote a lone surrogate in its message: find it ourselves
        raise MalformedEvent(f"{_surrogate_at(msg) or '<payload>'}: expected text without lone surrogates") from None


class ParsedDeal(msgspec.Struct, frozen=True, gc=False):
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


class ParsedOrder(msgspec.Struct, frozen=True, gc=False):
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


def _units(order_lot: str) -> int:
    per_unit = shares_per_unit(order_lot)
    assert per_unit is not None  # the schema admits only known lots
    return per_unit


_PRICES: dict[float, Decimal] = {}
_PRICES_MAX = 200_000


def _price(value: float) -> Decimal:
    """The decimal the broker printed (shortest repr of the float); cached, since prices repeat on a tick grid."""
    if type(value) is not float:
        return Decimal(value)
    price = _PRICES.get(value)
    if price is None:
        if len(_PRICES) >= _PRICES_MAX:
            _PRICES.clear()
        price = _PRICES[value] = Decimal(repr(value))
    return price


def _valid_text(fields: tuple[tuple[str, str], ...]) -> None:
    """Refuse a lone surrogate (text that is not Unicode): no journal line, table row, snapshot or
    log line could hold it. Called only when the fields together are not ASCII (rare)."""
    for name, value in fields:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedEvent(f"{name}={value[:40]!r}: expected text without lone surrogates") from None


def parse_deal(state: str, msg: Mapping[str, Any]) -> ParsedDeal:
    """Validate an SDEAL / FDEAL payload."""
    if state == "SDEAL":
        d = _convert(msg, StockDealMsg)
        quantity = d.quantity * _units(d.order_lot)
        security_type, full_code, order_cond, order_lot, market_type, custom_field = "STK", "", d.order_cond, d.order_lot, "", d.custom_field
    else:
        d = _convert(msg, FuturesDealMsg)
        quantity = d.quantity
        security_type, full_code, order_cond, order_lot, market_type, custom_field = d.security_type, d.full_code, "", "", d.market_type, ""
    if d.price == 0:
        raise MalformedEvent(f"price={d.price!r}: expected a deal price > 0")
    if not (d.event_id + d.broker_id + d.account_id + d.trade_id + d.seqno + d.ordno + d.exchange_seq + d.code + full_code + market_type + custom_field).isascii():
        _valid_text((("event_id", d.event_id), ("broker_id", d.broker_id), ("account_id", d.account_id), ("trade_id", d.trade_id),
                     ("seqno", d.seqno), ("ordno", d.ordno), ("exchange_seq", d.exchange_seq), ("code", d.code), ("full_code", full_code),
                     ("market_type", market_type), ("custom_field", custom_field)))
    return ParsedDeal(
        state, d.event_id, f"{d.broker_id}-{d.account_id}", d.trade_id, d.seqno, d.ordno, d.exchange_seq, d.action,
        d.code, full_code, security_type, order_cond, order_lot, _price(d.price), quantity, market_type, custom_field,
        epoch_s_to_ns(d.ts, "ts"),
    )


def parse_order(state: str, msg: Mapping[str, Any]) -> ParsedOrder:
    """Validate an SORDER / FORDER payload."""
    if state == "SORDER":
        o = _convert(msg, StockOrderMsg)
        units = _units(o.order.order_lot)
        security_type, full_code, order_cond, order_lot, custom_field = "STK", "", o.order.order_cond, o.order.order_lot, o.order.custom_field
    else:
        o = _convert(msg, FuturesOrderMsg)
        units = 1
        security_type, full_code, order_cond, order_lot, custom_field = o.contract.security_type, o.contract.full_code, "", "", ""
    order, status, op = o.order, o.status, o.operation
    if status.id and status.id != order.id:
        raise MalformedEvent(f"status.id={status.id!r}: expected the order id {order.id!r}")
    account, tif = order.account, order.time_in_force or order.order_type
    if not (o.event_id + account.broker_id + account.account_id + order.id + order.seqno + order.ordno + op.op_code + op.op_msg
            + o.contract.code + full_code + order.price_type + tif + custom_field).isascii():
        _valid_text((("event_id", o.event_id), ("order.account.broker_id", account.broker_id), ("order.account.account_id", account.account_id),
                     ("order.id", order.id), ("order.seqno", order.seqno), ("order.ordno", order.ordno), ("operation.op_code", op.op_code),
                     ("operation.op_msg", op.op_msg), ("contract.code", o.contract.code), ("contract.full_code", full_code),
                     ("order.price_type", order.price_type), ("order.time_in_force" if order.time_in_force else "order.order_type", tif),
                     ("order.custom_field", custom_field)))
    return ParsedOrder(  # positional: keyword construction costs ~4x on this hot path
        state, o.event_id, f"{order.account.broker_id}-{order.account.account_id}", order.id, order.seqno, order.ordno,
        op.op_type, op.op_code, op.op_msg, order.action, o.contract.code, full_code, security_type, order_cond, order_lot,
        _price(order.price), order.quantity * units, status.order_quantity * units, status.cancel_quantity * units,
        _price(status.modified_price), order.price_type, order.time_in_force or order.order_type, custom_field,
        status.exchange_ts, epoch_s_to_ns(status.exchange_ts, "status.exchange_ts"),
    )
