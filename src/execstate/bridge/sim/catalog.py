"""Static reference data for the simulated broker: instruments, ticks, accounts, fees, time.

Entry points: `STOCKS`, `FUTURES`, `OPTIONS`, `INSTRUMENTS` (by position code), `tick_size`,
`round_to_tick`, `AccountSpec`, `STRATEGY_TAGS`, `symbol_for`, `lot_shares`, `FeeModel`,
`taipei_ms`, `TAIPEI`, `business_days_after`; `OrderTicket`, which renders the 1.7.9 callback
payload shapes (StockOrderEvent, StockDealEvent, FuturesOrderEvent, FuturesDealEvent).

Invariants:
- Prices are `Decimal` on the instrument's Taiwan tick grid; payloads get `float(price)`, and
  `Decimal(str(float(price))) == price` for every price produced here.
- Position units: stocks in shares (Common/Fixing/BlockTrade lots x 1000; Odd/IntradayOdd are
  already shares), futures and options in contracts; `Instrument.multiplier` turns
  quantity x price into TWD (1 for stocks).
- Symbol convention shared with the pipeline: stock symbol is `code` for cond "Cash", else
  f"{code}:{cond}"; futures and options use `full_code`.
- Times are integer milliseconds since the Unix epoch (UTC); Taipei is UTC+8 all year.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

TAIPEI = dt.timezone(dt.timedelta(hours=8), "Asia/Taipei")

# Tag (custom_field, <= 6 chars) -> strategy id. Futures payloads carry no custom_field.
STRATEGY_TAGS: dict[str, str] = {"MOMO": "momo", "MREV": "meanrev", "FTRD": "fut_trend"}
TAG_OF: dict[str, str] = {strategy: tag for tag, strategy in STRATEGY_TAGS.items()}
STOCK_STRATEGIES = ("momo", "meanrev")
FUTOPT_STRATEGIES = ("fut_trend",)
UNASSIGNED = "unassigned"

LOT_SHARES = 1000
_LOT_UNITS = {"Common": LOT_SHARES, "Fixing": LOT_SHARES, "BlockTrade": LOT_SHARES,
              "Odd": 1, "IntradayOdd": 1}


@dataclass(frozen=True)
class AccountSpec:
    """One broker account as the payloads and `sj.Account` name it."""

    account_type: str  # "S" stock, "F" futures/options
    broker_id: str
    account_id: str
    person_id: str = ""  # the account holder's national id, as Shioaji's payloads carry it (not in `key`)

    @property
    def key(self) -> str:
        """Account key used in truth data: f"{broker_id}-{account_id}"."""
        return f"{self.broker_id}-{self.account_id}"


STOCK_ACCOUNT = AccountSpec("S", "9A95", "1234567")
FUTOPT_ACCOUNT = AccountSpec("F", "F002000", "7654321")


@dataclass(frozen=True)
class Instrument:
    """A tradable contract. `position_code` is the code the broker's position rows use."""

    code: str  # payload `code`: stock code or futures/options product root
    security_type: str  # STK / FUT / OPT
    exchange: str
    name: str
    base_price: Decimal
    multiplier: int = 1
    is_etf: bool = False
    full_code: str = ""
    delivery_month: str = ""
    delivery_date: str = ""
    strike_price: float = 0.0
    option_right: str = ""  # Future / OptionCall / OptionPut ("" for stocks)
    vol_bp: int = 8  # per-minute random-walk volatility in basis points

    @property
    def is_stock(self) -> bool:
        """True for TWSE/TPEx stocks and ETFs."""
        return self.security_type == "STK"

    @property
    def position_code(self) -> str:
        """Stock code, or futures/options full code."""
        return self.code if self.is_stock else self.full_code


def _fut(root: str, name: str, mult: int) -> Instrument:
    return Instrument(root, "FUT", "TAIFEX", name, Decimal("27850"), mult, full_code=f"{root}L6",
                      delivery_month="202612", delivery_date="2026/12/16",
                      option_right="Future", vol_bp=6)


def _opt(strike: int, right: str) -> Instrument:
    letter = "L" if right == "OptionCall" else "X"  # December: calls A-L, puts M-X
    return Instrument("TXO", "OPT", "TAIFEX", "臺指選擇權", Decimal(0), 50,
                      full_code=f"TXO{strike}{letter}6", delivery_month="202612",
                      delivery_date="2026/12/16", strike_price=float(strike), option_right=right)


STOCKS: tuple[Instrument, ...] = (
    Instrument("2330", "STK", "TSE", "台積電", Decimal("1000"), vol_bp=9),
    Instrument("2454", "STK", "TSE", "聯發科", Decimal("1400"), vol_bp=10),
    Instrument("2317", "STK", "TSE", "鴻海", Decimal("215"), vol_bp=9),
    Instrument("2890", "STK", "TSE", "永豐金", Decimal("26.85"), vol_bp=7),
    Instrument("0050", "STK", "TSE", "元大台灣50", Decimal("190"), is_etf=True, vol_bp=6),
    Instrument("00878", "STK", "TSE", "國泰永續高股息", Decimal("22"), is_etf=True, vol_bp=5),
    Instrument("6488", "STK", "OTC", "環球晶", Decimal("420"), vol_bp=12),
)
FUTURES: tuple[Instrument, ...] = (
    _fut("TXF", "臺股期貨", 200), _fut("MXF", "小型臺指", 50), _fut("TMF", "微型臺指", 10))
OPTIONS: tuple[Instrument, ...] = (
    _opt(27800, "OptionCall"), _opt(28200, "OptionCall"), _opt(29600, "OptionCall"),
    _opt(27400, "OptionPut"), _opt(26600, "OptionPut"))
INSTRUMENTS: dict[str, Instrument] = {i.position_code: i for i in STOCKS + FUTURES + OPTIONS}


def instrument_for(position_code: str) -> Instrument:
    """The catalog's instrument, or a generic listed stock for any other code (large
    carried-over books in tests and benchmarks hold codes the day's orders never touch)."""
    inst = INSTRUMENTS.get(position_code)
    if inst is None:
        inst = Instrument(position_code, "STK", "TSE", position_code, Decimal("50"), is_etf=position_code.startswith("00"))
    return inst


def tick_size(inst: Instrument, price: Decimal) -> Decimal:
    """Taiwan tick size for `inst` at `price` (TWSE/TPEx stock and ETF rules, TAIFEX rules)."""
    if inst.security_type == "FUT":
        return Decimal(1)
    if inst.security_type == "OPT":
        for bound, tick in ((10, "0.1"), (50, "0.5"), (500, "1"), (1000, "5")):
            if price < bound:
                return Decimal(tick)
        return Decimal(10)
    if inst.is_etf:
        return Decimal("0.01") if price < 50 else Decimal("0.05")
    for bound, tick in ((10, "0.01"), (50, "0.05"), (100, "0.1"), (500, "0.5"), (1000, "1")):
        if price < bound:
            return Decimal(tick)
    return Decimal(5)


def round_to_tick(inst: Instrument, price: Decimal) -> Decimal:
    """Nearest on-grid price (half up), never below one tick."""
    tick = tick_size(inst, price)
    rounded = (price / tick).to_integral_value(ROUND_HALF_UP) * tick
    return max(rounded, tick)


def step_ticks(inst: Instrument, price: Decimal, n: int) -> Decimal:
    """Move `price` by `n` ticks (negative = down), re-evaluating the tick at each step."""
    for _ in range(abs(n)):
        tick = tick_size(inst, price - (tick_size(inst, price) if n < 0 else 0))
        price = round_to_tick(inst, price + tick if n > 0 else price - tick)
    return price


def option_premium(inst: Instrument, underlying: float) -> float:
    """Toy premium: intrinsic value plus a time value decaying with moneyness."""
    strike = inst.strike_price
    intrinsic = max(0.0, underlying - strike if inst.option_right == "OptionCall" else strike - underlying)
    return intrinsic + 320.0 * math.exp(-abs(strike - underlying) / 450.0) + 0.3


def lot_shares(order_lot: str) -> int:
    """Shares per order unit for a stock order lot ("Common" -> 1000, "IntradayOdd" -> 1)."""
    return _LOT_UNITS[order_lot]


def symbol_for(inst: Instrument, order_cond: str) -> str:
    """Pipeline symbol: stock code (+ ":cond" unless Cash); futures/options full code."""
    if not inst.is_stock:
        return inst.full_code
    return inst.code if order_cond in ("Cash", "") else f"{inst.code}:{order_cond}"


def taipei_ms(day: dt.date, hh: int, mm: int, ss: int = 0) -> int:
    """Epoch milliseconds of Taipei wall-clock time hh:mm:ss on `day`."""
    moment = dt.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=TAIPEI)
    return int(moment.timestamp()) * 1000


def business_days_after(day: dt.date, n: int) -> dt.date:
    """The n-th weekday after `day` (no holiday calendar)."""
    while n > 0:
        day += dt.timedelta(days=1)
        if day.weekday() < 5:
            n -= 1
    return day


@dataclass(frozen=True)
class FeeModel:
    """Broker fee and tax estimate. Real rates are account-specific; keep these configurable.

    Stock fee: max(minimum, floor(amount x 0.1425% x discount)); tax on sells only:
    0.3% (0.15% cash day trade, 0.1% ETF), floored to whole TWD. Futures: a flat broker fee per
    contract and the TAIFEX tax (2e-5 futures, 1e-3 options premium) rounded per contract.
    """

    stock_rate: Decimal = Decimal("0.001425")
    stock_discount: Decimal = Decimal("0.6")
    stock_min_board: int = 20
    stock_min_odd: int = 1
    futures_fee_per_contract: int = 50
    options_fee_per_contract: int = 25

    def stock_fee(self, amount: Decimal, odd: bool) -> int:
        """Commission on one stock fill of `amount` TWD."""
        fee = int(amount * self.stock_rate * self.stock_discount)
        return max(self.stock_min_odd if odd else self.stock_min_board, fee)

    def stock_tax(self, amount: Decimal, inst: Instrument, day_trade: bool) -> int:
        """Securities transaction tax on a sell of `amount` TWD."""
        rate = Decimal("0.001") if inst.is_etf else Decimal("0.0015") if day_trade else Decimal("0.003")
        return int(amount * rate)

    def futures_fee(self, inst: Instrument, contracts: int) -> int:
        """Broker fee for `contracts` futures/options contracts."""
        per = self.options_fee_per_contract if inst.security_type == "OPT" else self.futures_fee_per_contract
        return per * contracts

    def futures_tax(self, inst: Instrument, price: Decimal, contracts: int) -> int:
        """Futures transaction tax, rounded per contract then times contracts."""
        rate = Decimal("0.001") if inst.security_type == "OPT" else Decimal("0.00002")
        per = (price * inst.multiplier * rate).to_integral_value(ROUND_HALF_UP)
        return int(per) * contracts


class OrderTicket:
    """One order as the callback payloads describe it; renders order and deal payloads.

    Payload dicts carry every key of the 1.7.9 TypedDicts with their Python types; `event_id`
    is left "" for the caller to assign. Stock: web_id "137"; futures: web_id "Z", Day session.
    `price_type` / `time_in_force` / `oc_type` default to LMT / ROD / Auto (the generated day's
    orders); placed orders (`placement`) set them from the Shioaji order. `person_id` is the
    account's (`AccountSpec.person_id`, "" unless configured).
    """

    __slots__ = ("inst", "acct", "strategy", "tag", "action", "qty", "price", "lot", "cond",
                 "trade_id", "seqno", "ordno", "symbol", "price_type", "time_in_force", "oc_type")
    inst: Instrument
    acct: AccountSpec
    price: Decimal

    def __init__(self) -> None:
        self.price_type, self.time_in_force, self.oc_type = "LMT", "ROD", "Auto"

    def order_payload(self, op: str, code: str, msg: str, t_ms: int, cancelled: int,
                      modified: float) -> dict:
        """SORDER/FORDER payload for operation `op` at exchange time `t_ms`."""
        inst, acct = self.inst, self.acct
        order = {"id": self.trade_id, "seqno": self.seqno, "ordno": self.ordno,
                 "account": {"account_type": acct.account_type, "person_id": acct.person_id, "broker_id": acct.broker_id,
                             "account_id": acct.account_id, "signed": True, "username": ""},
                 "action": self.action, "price": float(self.price), "quantity": self.qty,
                 "time_in_force": self.time_in_force, "order_type": self.time_in_force,
                 "price_type": self.price_type}
        if inst.is_stock:
            order.update(order_cond=self.cond, order_lot=self.lot, custom_field=self.tag)
            contract = {"exchange": inst.exchange, "code": inst.code, "security_type": "STK",
                        "symbol": inst.exchange + inst.code, "name": inst.name, "currency": "TWD"}
        else:
            order.update(market_type="Day", oc_type=self.oc_type, subaccount="", combo=False)
            contract = {"security_type": inst.security_type, "code": inst.code, "exchange": inst.exchange,
                        "delivery_month": inst.delivery_month, "full_code": inst.full_code,
                        "delivery_date": inst.delivery_date, "strike_price": inst.strike_price,
                        "option_right": inst.option_right}
        return {"event_id": "", "operation": {"op_type": op, "op_code": code, "op_msg": msg},
                "order": order,
                "status": {"id": self.trade_id, "exchange_ts": t_ms / 1000, "modified_price": modified,
                           "cancel_quantity": cancelled, "order_quantity": self.qty,
                           "web_id": "137" if inst.is_stock else "Z"},
                "contract": contract}

    def deal_payload(self, t_ms: int, price: Decimal, qty: int, ordno: str, exchange_seq: str) -> dict:
        """SDEAL/FDEAL payload for a fill of `qty` order units at `price`."""
        inst, acct = self.inst, self.acct
        payload = {"event_id": "", "trade_id": self.trade_id, "seqno": self.seqno, "ordno": ordno,
                   "exchange_seq": exchange_seq, "broker_id": acct.broker_id, "account_id": acct.account_id,
                   "action": self.action, "code": inst.code}
        if inst.is_stock:
            payload.update(order_cond=self.cond, order_lot=self.lot, price=float(price), quantity=qty,
                           web_id="137", custom_field=self.tag, ts=t_ms / 1000)
        else:
            payload.update(full_code=inst.full_code, price=float(price), quantity=qty, subaccount="",
                           security_type=inst.security_type, delivery_month=inst.delivery_month,
                           strike_price=inst.strike_price, option_right=inst.option_right,
                           market_type="Day", combo=False, ts=t_ms / 1000)
        return payload
