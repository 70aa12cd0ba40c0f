"""Value types of the simulator: truth records and mirrors of Shioaji's report objects.

Entry points: truth records `InitialPosition`, `DEFAULT_INITIAL_POSITIONS`, `SimFill`,
`SimIntent`, `SimOrder`, `event_ts`, `copy_payload`; broker report mirrors `SimStockPosition`,
`SimFuturePosition`, `SimStockProfitLoss`, `SimFutureProfitLoss`, `SimStockProfitDetail`,
`SimFutureProfitDetail`, `SimSettlement`, `SimTrade` (+ `SimOrderResult`,
`SimOrderStatusInfo`, `SimDeal`); `build_trades(records, accounts)`.

Invariants:
- Every record is a frozen dataclass. Mirrors carry exactly the attribute names of the 1.7.9
  stub classes (which cannot be instantiated), with real `shioaji` enums in enum-typed fields
  and floats where the stub says float.
- Truth quantities are in position units (shares / contracts), prices exact `Decimal`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

import shioaji as sj

from execstate.bridge.sim.catalog import (
    FUTOPT_ACCOUNT, STOCK_ACCOUNT, TAIPEI, UNASSIGNED, instrument_for, symbol_for)


@dataclass(frozen=True)
class InitialPosition:
    """Yesterday's holding: in broker queries (yd_quantity), produces no callback today.

    `quantity` is signed, in position units; `code` is the broker's position code (stock code
    or futures full code); `cond` is "" for futures/options.
    """

    account: str
    code: str
    cond: str
    quantity: int
    price: Decimal
    strategy_id: str = UNASSIGNED

    @property
    def symbol(self) -> str:
        """Pipeline symbol (see `catalog.symbol_for`)."""
        return symbol_for(instrument_for(self.code), self.cond)


_S, _F = STOCK_ACCOUNT.key, FUTOPT_ACCOUNT.key
DEFAULT_INITIAL_POSITIONS: tuple[InitialPosition, ...] = (
    InitialPosition(_S, "2890", "Cash", 2037, Decimal("26.15"), "meanrev"),
    InitialPosition(_S, "00878", "Cash", 5000, Decimal("21.8")),
    InitialPosition(_S, "2330", "MarginTrading", 2000, Decimal("985"), "momo"),
    InitialPosition(_S, "2317", "ShortSelling", -3000, Decimal("212.5"), "meanrev"),
    InitialPosition(_F, "TXFL6", "", 2, Decimal("27650"), "fut_trend"),
    InitialPosition(_F, "TXO28200L6", "", -4, Decimal("145"), "fut_trend"),
)


@dataclass(frozen=True)
class SimFill:
    """One executed deal (truth). `quantity` > 0 in position units; `action` "Buy"/"Sell"."""

    account: str
    order_id: str
    strategy_id: str
    symbol: str
    code: str
    action: str
    price: Decimal
    quantity: int
    multiplier: int
    order_cond: str  # "" for futures/options
    order_lot: str  # "" for futures/options
    ts: float
    seqno: str
    ordno: str
    exchange_seq: str
    security_type: str

    @property
    def signed_quantity(self) -> int:
        """+quantity for Buy, -quantity for Sell."""
        return self.quantity if self.action == "Buy" else -self.quantity

    @property
    def position_code(self) -> str:
        """Broker position code: stock code, or futures/options full code."""
        return self.code if self.security_type == "STK" else self.symbol


@dataclass(frozen=True)
class SimIntent:
    """What an order adapter registers when a strategy places an order."""

    order_id: str
    strategy_id: str
    symbol: str
    custom_field: str


@dataclass(frozen=True)
class SimOrder:
    """Summary of one order's life, quantities in order units (lots or shares or contracts)."""

    order_id: str
    account: str
    strategy_id: str
    symbol: str
    code: str
    action: str
    order_lot: str
    order_cond: str
    quantity: int
    live_quantity: int
    filled: int
    cancelled: int
    rejected: bool
    ops: tuple[str, ...]


def copy_payload(obj: Any) -> Any:
    """Deep copy of a callback payload (nested dicts of immutable leaves)."""
    return {k: copy_payload(v) for k, v in obj.items()} if isinstance(obj, dict) else obj


def event_ts(state: str, payload: dict) -> float:
    """Exchange time of a callback payload: deal `ts` or order `status.exchange_ts`."""
    return payload["ts"] if state.endswith("DEAL") else payload["status"]["exchange_ts"]


@dataclass(frozen=True)
class SimStockPosition:
    """Mirror of `shioaji.StockPosition`."""

    id: int
    code: str
    direction: sj.Action
    quantity: int
    price: float
    last_price: float
    pnl: float
    yd_quantity: int
    cond: sj.StockOrderCond
    margin_purchase_amount: int
    collateral: int
    short_sale_margin: int
    interest: int


@dataclass(frozen=True)
class SimFuturePosition:
    """Mirror of `shioaji.FuturePosition` (`code` = full code, e.g. "TXFL6")."""

    id: int
    code: str
    direction: sj.Action
    quantity: int
    price: float
    last_price: float
    pnl: float


@dataclass(frozen=True)
class SimStockProfitLoss:
    """Mirror of `shioaji.StockProfitLoss`; `price` is the closing trade price."""

    id: int
    code: str
    quantity: int
    pnl: float
    date: str
    dseq: str
    price: float
    pr_ratio: float
    cond: sj.StockOrderCond
    seqno: str


@dataclass(frozen=True)
class SimFutureProfitLoss:
    """Mirror of `shioaji.FutureProfitLoss`; `direction` is the side of the closed position."""

    id: int
    code: str
    quantity: int
    pnl: float
    date: str
    entry_price: float
    cover_price: float
    tax: int
    fee: int
    direction: sj.Action


@dataclass(frozen=True)
class SimStockProfitDetail:
    """Mirror of `shioaji.StockProfitDetail`: one matched entry lot; `cost` includes its fee."""

    date: str
    code: str
    quantity: int
    dseq: str
    fee: int
    tax: int
    currency: str
    price: float
    cost: int
    rep_margintrading_amt: int
    rep_collateral: int
    rep_margin: int
    shortselling_fee: int
    ex_dividend_amt: int
    interest: int
    trade_type: sj.TradeType
    cond: sj.StockOrderCond


@dataclass(frozen=True)
class SimFutureProfitDetail:
    """Mirror of `shioaji.FutureProfitDetail`."""

    date: str
    code: str
    quantity: int
    dseq: str
    fee: float
    tax: float
    currency: str
    direction: sj.Action
    entry_date: str
    entry_quantity: int
    entry_seqno: str
    entry_price: float
    cover_price: float
    pnl: int


@dataclass(frozen=True)
class SimSettlement:
    """Mirror of the legacy `shioaji.Settlement` (T, T+1, T+2 stock cash; t2 = today's trades)."""

    t_money: float
    t1_money: float
    t2_money: float
    t_day: str
    t1_day: str
    t2_day: str
    status: sj.FetchStatus


@dataclass(frozen=True)
class SimDeal:
    """Mirror of `shioaji.Deal` (`seq` = exchange_seq)."""

    seq: str
    price: float
    quantity: int
    ts: float
    datetime: dt.datetime | None


@dataclass(frozen=True)
class SimOrderResult:
    """Mirror of `shioaji.OrderResult` (stock-only fields None for futures and vice versa)."""

    id: str
    seqno: str
    ordno: str
    action: sj.Action
    price: float
    quantity: int
    time_in_force: sj.TimeInForce | None
    order_type: sj.OrderType | None
    price_type: sj.PriceType | None
    custom_field: str | None
    account: Any
    daytrade_short: bool | None
    order_cond: sj.StockOrderCond | None
    order_lot: sj.StockOrderLot | None
    octype: sj.FuturesOCType | None


@dataclass(frozen=True)
class SimOrderStatusInfo:
    """Mirror of `shioaji.OrderStatusInfo`; `deals` is a tuple (the real one is a live view)."""

    id: str
    status: sj.OrderStatus
    status_code: str | None
    web_id: str | None
    order_datetime: dt.datetime | None
    msg: str | None
    modified_time: dt.datetime | None
    modified_price: float | None
    order_quantity: int | None
    deal_quantity: int | None
    cancel_quantity: int | None
    deals: tuple[SimDeal, ...]


@dataclass(frozen=True)
class SimTrade:
    """Mirror of `shioaji.Trade`; `contract` is a real `sj.BaseContract` (futures: full code)."""

    contract: Any
    order: SimOrderResult
    status: SimOrderStatusInfo


def _when(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, TAIPEI)


def build_trades(records: Iterable[tuple[str, dict]], accounts: dict[str, Any]) -> list[SimTrade]:
    """Fold (state, payload) records into Trade-like rows, one per order id, in placement order.

    Records are sorted by exchange time first; a deal whose order event is absent is left out
    (the SDK holds such a report as pending). `accounts` maps "broker-account" -> account object.
    """
    acc: dict[str, dict] = {}
    for state, msg in sorted(records, key=lambda r: event_ts(*r)):
        if state.endswith("DEAL"):
            if msg["trade_id"] in acc:
                acc[msg["trade_id"]]["deals"].append(SimDeal(
                    msg["exchange_seq"], msg["price"], msg["quantity"], msg["ts"], _when(msg["ts"])))
            continue
        op, st = msg["operation"], msg["status"]
        t = acc.setdefault(st["id"], {"msg": msg, "deals": [], "fail": None, "cancel": False,
                                      "mt": None, "mp": 0.0, "cq": 0})
        if op["op_code"] != "00" or op["op_type"] == "Reject":
            t["fail"] = (op["op_code"], op["op_msg"])
        t["cancel"] |= op["op_type"] == "Cancel"
        t["cq"] = max(t["cq"], st["cancel_quantity"])
        t["mp"] = st["modified_price"] or t["mp"]
        t["mt"] = st["exchange_ts"] if op["op_type"] != "New" else t["mt"]
    out = []
    for tid, t in acc.items():
        msg = t["msg"]
        o, c, st = msg["order"], msg["contract"], msg["status"]
        stock = "order_cond" in o
        dq = sum(d.quantity for d in t["deals"])
        status = (sj.OrderStatus.Failed if t["fail"] else sj.OrderStatus.Cancelled if t["cancel"]
                  else sj.OrderStatus.Filled if dq and dq >= o["quantity"] - t["cq"]
                  else sj.OrderStatus.PartFilled if dq else sj.OrderStatus.Submitted)
        acct = accounts.get(f'{o["account"]["broker_id"]}-{o["account"]["account_id"]}')
        order = SimOrderResult(
            tid, o["seqno"], o["ordno"], sj.Action(o["action"]), o["price"], o["quantity"],
            sj.TimeInForce(o["time_in_force"]), sj.OrderType(o["order_type"]),
            sj.PriceType(o["price_type"]), o.get("custom_field", ""), acct,
            False if stock else None, sj.StockOrderCond(o["order_cond"]) if stock else None,
            sj.StockOrderLot(o["order_lot"]) if stock else None,
            None if stock else sj.FuturesOCType(o["oc_type"]))
        info = SimOrderStatusInfo(
            tid, status, t["fail"][0] if t["fail"] else "00", st["web_id"], _when(st["exchange_ts"]),
            t["fail"][1] if t["fail"] else "", _when(t["mt"]) if t["mt"] else None, t["mp"],
            o["quantity"], dq, t["cq"], tuple(t["deals"]))
        contract = sj.BaseContract(security_type=c["security_type"], exchange=c["exchange"],
                                   code=c["code"] if stock else c["full_code"])
        out.append(SimTrade(contract, order, info))
    return out
