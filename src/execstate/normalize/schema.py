"""msgspec schemas of Shioaji 1.7.9's order and deal payloads (the stub's TypedDicts).

Entry points: `StockDealMsg`, `FuturesDealMsg`, `StockOrderMsg`, `FuturesOrderMsg`.
Validation runs in C (`msgspec.convert`): required identifiers present and non-empty,
strings bounded, enums closed, prices finite in [0, 1e6], quantities ints (bools refused) up
to 1e6, epoch seconds in (0, 2100-01-01] (`MAX_EPOCH_S`). Lone surrogates in kept text are refused by
`parse` (no journal line, table row, snapshot or log line could hold them).
Extra keys are ignored (Shioaji may add fields); `person_id` is never kept.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Id = Annotated[str, Meta(min_length=1, max_length=64)]
Text = Annotated[str, Meta(max_length=64)]
Msg = Annotated[str, Meta(max_length=512)]
# Bounds far above anything traded in Taiwan (prices in the thousands, index points in the tens of
# thousands, orders of at most 499 lots or 1000 odd shares), low enough that every accepted deal
# can be recorded: a fill's value (1e6 x 1e6 lots x 1000 shares = 1e15 TWD) keeps its fee and
# tax (<= 3e12) within Decimal(18, 4) (1e14), and so do a position's totals over dozens of them.
PRICE_MAX = 1e6  # TWD (or index points) per unit
QTY_MAX = 1_000_000  # units of the payload: lots, shares (odd lots) or contracts
Price = Annotated[float, Meta(ge=0, le=PRICE_MAX)]
Qty = Annotated[int, Meta(gt=0, le=QTY_MAX)]
QtyOrZero = Annotated[int, Meta(ge=0, le=QTY_MAX)]
MAX_EPOCH_S = 4_102_444_800  # 2100-01-01T00:00:00Z: a later broker time is garbage, and past 2262 it overflows int64 ns
EpochS = Annotated[float, Meta(gt=0, le=MAX_EPOCH_S)]
Side = Literal["Buy", "Sell"]
OrderCond = Literal["Cash", "Netting", "MarginTrading", "ShortSelling", "SBLShort", "SBLShortPriceExempt", "Emerging"]
OrderLot = Literal["Common", "Odd", "IntradayOdd", "Fixing", "BlockTrade"]
OpType = Literal["New", "Cancel", "UpdatePrice", "UpdateQty", "Reject"]
Derivative = Literal["FUT", "OPT"]


class _Base(msgspec.Struct, frozen=True, gc=False):
    pass


class _DealMsg(_Base, kw_only=True):
    """Fields common to StockDealEvent and FuturesDealEvent."""

    trade_id: Id
    exchange_seq: Id
    broker_id: Id
    account_id: Id
    action: Side
    code: Id
    price: Price
    quantity: Qty
    ts: EpochS
    event_id: Text = ""
    seqno: Text = ""
    ordno: Text = ""
    web_id: Text = ""


class StockDealMsg(_DealMsg, kw_only=True):
    order_cond: OrderCond
    order_lot: OrderLot
    custom_field: Text = ""


class FuturesDealMsg(_DealMsg, kw_only=True):
    full_code: Id
    security_type: Derivative
    market_type: Text = ""
    subaccount: Text = ""
    delivery_month: Text = ""


class OperationMsg(_Base):
    op_type: OpType
    op_code: Annotated[str, Meta(min_length=1, max_length=16)]
    op_msg: Msg = ""


class AccountMsg(_Base):
    broker_id: Id
    account_id: Id


class OrderStatusMsg(_Base):
    exchange_ts: EpochS
    order_quantity: QtyOrZero
    cancel_quantity: QtyOrZero
    modified_price: Price = 0.0
    id: Text = ""
    web_id: Text = ""


class _OrderDetailMsg(_Base, kw_only=True):
    """Fields common to StockOrderDetailDict and FuturesOrderDetailDict."""

    id: Id
    account: AccountMsg
    action: Side
    price: Price
    quantity: QtyOrZero
    seqno: Text = ""
    ordno: Text = ""
    price_type: Text = ""
    time_in_force: Text = ""
    order_type: Text = ""


class StockOrderDetailMsg(_OrderDetailMsg, kw_only=True):
    order_cond: OrderCond
    order_lot: OrderLot
    custom_field: Text = ""


class FuturesOrderDetailMsg(_OrderDetailMsg, kw_only=True):
    market_type: Text = ""
    oc_type: Text = ""


class StockContractMsg(_Base):
    code: Id
    security_type: Text = "STK"


class FuturesContractMsg(_Base):
    code: Id
    full_code: Id
    security_type: Derivative
    delivery_month: Text = ""


class StockOrderMsg(_Base):
    operation: OperationMsg
    order: StockOrderDetailMsg
    status: OrderStatusMsg
    contract: StockContractMsg
    event_id: Text = ""


class FuturesOrderMsg(_Base):
    operation: OperationMsg
    order: FuturesOrderDetailMsg
    status: OrderStatusMsg
    contract: FuturesContractMsg
    event_id: Text = ""
