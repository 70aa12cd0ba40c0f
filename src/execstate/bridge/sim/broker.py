"""Simulated SinoPac broker: the day's truth, answering Shioaji's portfolio and order queries.

Entry points: `SimBroker(session, clock=time.monotonic, ...)` with the sync `shioaji.Shioaji`
method names and parameters (`list_positions`, `list_profit_loss`, `list_profit_loss_detail`,
`list_settlements`, `update_status`, `order_deal_records`, `list_trades`), plus `set_mark`,
`set_as_of`, `fail_next`, `calls`, `banned_until`, `truth_records`, and for orders placed
through `SimShioaji.place_order`: `add_placed(records, fills)`, `mark_price(code)`,
`placed_fills`. Report types live in `records`.

Invariants:
- Truth = `session.initial_positions` + every truth fill (dropped deliveries included) with
  `ts <= as_of` (`as_of=None`: the whole day) + every placed order's records and fills (live
  facts, never cut by `as_of`). Queries never depend on what was delivered.
- Position key (account, code, direction, cond) for stocks, (account, full_code, direction) for
  futures/options; lots are matched FIFO (a partly closed lot keeps its share of its opening
  costs). `last_price` = `set_mark`, else the last trade. `price` and `pnl` follow the broker's
  convention (shared/reference/shioaji-facts.md section 5, issue #177):
  - stock long: `price` = (open lots' trade cost + their buy fees) / qty, and
    `pnl = last x qty - floor(0.1425% x last x qty) - floor(tax x last x qty) - price x qty`
    (list commission rate, no discount, no minimum; tax 0.3%, ETFs 0.1%);
  - stock short (ShortSelling, or a cash day-trade short) [I, the reference is silent; the
    mirror image]: `price` = (open lots' sale proceeds - their sell fees and taxes) / qty, and
    `pnl = price x qty - last x qty - floor(0.1425% x last x qty)` (the estimated buy-back fee);
  - futures and options: `price` = average trade price of the open lots (no fees), and
    `pnl = (last - price) x net x multiplier` (the docs' MXF and TXO examples).
- `unit=sj.Unit.Common` (default) reports stock quantities in lots, odd shares floored
  (2037 shares -> 2; a 200-share row is kept with quantity 0, as in issue #177); `Share` in shares.
- Profit-loss: one row per closing fill; `pnl` = gross - fees - taxes of both legs (`FeeModel`);
  `detail_id` = row id -> the matched entry lots. Dates are "YYYY-MM-DD" [I for futures].
- Every server call passes the `RateGate` first (see `ratelimit`); `list_trades` is local and free.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable

import shioaji as sj

from execstate.bridge.sim.catalog import (
    FUTURES, FeeModel, business_days_after, instrument_for, option_premium, round_to_tick)
from execstate.bridge.sim.ratelimit import ACCOUNTING, ORDER, RateGate
from execstate.bridge.sim.records import (
    SimFill, SimFuturePosition, SimFutureProfitDetail, SimFutureProfitLoss, SimSettlement,
    SimStockPosition, SimStockProfitDetail, SimStockProfitLoss, SimTrade, build_trades, copy_payload,
    event_ts)


@dataclass(frozen=True)
class _Piece:
    sign: int  # +1 a long lot was closed, -1 a short lot
    qty: int
    price: Decimal
    date: str
    dseq: str
    seqno: str
    today: bool


class _Lot:
    __slots__ = ("qty", "price", "date", "dseq", "seqno", "today", "cost")

    def __init__(self, qty: int, price: Decimal, date: str, dseq: str, seqno: str, today: bool,
                 cost: Decimal = Decimal(0)) -> None:
        self.qty, self.price, self.date, self.dseq, self.seqno, self.today = qty, price, date, dseq, seqno, today
        self.cost = cost  # opening fees (and, for a short, the sale's tax) of the open quantity, TWD

    def reduce(self, take: int) -> None:
        """Close `take` units of this lot; the opening costs shrink in proportion."""
        left = abs(self.qty) - take
        self.cost = self.cost * left / abs(self.qty) if left else Decimal(0)
        self.qty -= take if self.qty > 0 else -take


def _account_key_of(msg: dict) -> str:
    acct = msg["order"]["account"] if "order" in msg else msg
    return f'{acct["broker_id"]}-{acct["account_id"]}'


def _is_share(unit: Any) -> bool:
    return unit is not None and unit == "Share"


class SimBroker:
    """The broker's books for one simulated day. Thread-safe; see the module docstring."""

    def __init__(self, session: Any, clock: Callable[[], float] = time.monotonic, *,
                 fees: FeeModel | None = None, latency_s: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep, extend_ban_on_retry: bool = False) -> None:
        self.session = session
        self.gate = RateGate(clock, extend_ban_on_retry=extend_ban_on_retry)
        self.fees = fees or FeeModel()
        self.latency_s = latency_s
        self._sleep = sleep
        self._lock = threading.RLock()
        self._faults: list[Any] = [0, None]
        self._marks: dict[str, Decimal] = {}
        self.as_of: float | None = None
        cfg = session.config
        self.today = cfg.trade_date.isoformat()
        yday = cfg.trade_date - dt.timedelta(days=1)
        while yday.weekday() >= 5:
            yday -= dt.timedelta(days=1)
        self._yday = yday.isoformat()
        s, f = cfg.stock_account, cfg.futopt_account
        self.stock_account = sj.Account(account_type=sj.AccountType.Stock, person_id=s.person_id,
                                        broker_id=s.broker_id, account_id=s.account_id, signed=True, username="")
        self.futopt_account = sj.Account(account_type=sj.AccountType.Future, person_id=f.person_id,
                                         broker_id=f.broker_id, account_id=f.account_id, signed=True, username="")
        self.accounts = {s.key: self.stock_account, f.key: self.futopt_account}
        # placed orders' truth: ((state, payload) records, fills), swapped whole (copy-on-write)
        self._placed: tuple[tuple[tuple[str, dict], ...], tuple[SimFill, ...]] = ((), ())

    # -- control -------------------------------------------------------------------------------
    @property
    def calls(self) -> dict[str, int]:
        """Attempted server calls per rate-limit group."""
        return dict(self.gate.calls)

    @property
    def banned_until(self) -> float | None:
        """Clock time the current or last ban ends (None if never banned)."""
        return self.gate.banned_until

    def set_mark(self, code: str, price: Decimal | float | str) -> None:
        """Mark price for a position code (stock code or futures full code)."""
        self._marks[code] = Decimal(str(price))

    def set_as_of(self, ts: float | None) -> None:
        """Make the books reflect only events with exchange time <= ts (None: whole day)."""
        self.as_of = ts

    def add_placed(self, records: Iterable[tuple[str, dict]], fills: Iterable[SimFill]) -> None:
        """Book a placed order's records (state, payload) and fills into the truth."""
        with self._lock:
            old_records, old_fills = self._placed
            self._placed = (old_records + tuple(records), old_fills + tuple(fills))

    @property
    def placed_fills(self) -> tuple[SimFill, ...]:
        """Fills of orders placed through `SimShioaji.place_order`, in placement order."""
        return self._placed[1]

    def mark_price(self, code: str) -> Decimal:
        """The price a marketable order on position code `code` trades at: `set_mark`, else
        the last truth fill (as of now), else yesterday's position price, else the catalog's."""
        mark = self._marks.get(code)
        if mark is not None:
            return mark
        cutoff = self.as_of
        seen = [f for f in self.session.fills if f.position_code == code and (cutoff is None or f.ts <= cutoff)]
        seen += [f for f in self._placed[1] if f.position_code == code]
        if seen:
            return max(reversed(seen), key=lambda f: f.ts).price  # the latest; on a tie, the last booked
        for p in self.session.initial_positions:
            if p.code == code:
                return p.price
        inst = instrument_for(code)
        if inst.security_type == "OPT":
            return round_to_tick(inst, Decimal(repr(round(option_premium(inst, float(FUTURES[0].base_price)), 3))))
        return inst.base_price

    def fail_next(self, n: int, exc: BaseException) -> None:
        """The next `n` admitted server calls raise `exc` (after rate accounting)."""
        self._faults = [n, exc]

    def server_call(self, group: str) -> None:
        """Rate-limit, delay and fault-inject one server call of `group`."""
        with self._lock:
            self.gate.check(group)
            fault = self._faults[1] if self._faults[0] > 0 else None
            self._faults[0] -= fault is not None
        if self.latency_s:
            self._sleep(self.latency_s)
        if fault is not None:
            raise fault

    def account_key(self, account: Any) -> str:
        """'broker-account' for an account object; None means the stock account."""
        account = self.stock_account if account is None else account
        key = f"{account.broker_id}-{account.account_id}"
        if key not in self.accounts:
            raise sj.AccountNotProvideError(f"unknown account {key}")
        return key

    # -- books ---------------------------------------------------------------------------------
    def _fills(self, key: str) -> list[SimFill]:
        cutoff = self.as_of
        out = [f for f in self.session.fills if f.account == key and (cutoff is None or f.ts <= cutoff)]
        placed = [f for f in self._placed[1] if f.account == key]
        return sorted(out + placed, key=lambda f: f.ts) if placed else out  # stable: ties keep exchange order

    def _replay(self, key: str) -> tuple[dict, list, dict, dict]:
        books: dict[tuple[str, str], list[_Lot]] = {}
        closes: list[tuple[SimFill, tuple[_Piece, ...]]] = []
        last: dict[str, Decimal] = {}
        yd: dict[tuple[str, str], int] = {}
        for p in self.session.initial_positions:
            if p.account == key:
                books.setdefault((p.code, p.cond), []).append(_Lot(p.quantity, p.price, self._yday, "", "", False))
                yd[(p.code, p.cond)] = yd.get((p.code, p.cond), 0) + p.quantity
                last.setdefault(p.code, p.price)
        for f in self._fills(key):
            last[f.position_code] = f.price
            lots = books.setdefault((f.position_code, f.order_cond), [])
            q, pieces = f.signed_quantity, []
            while q and lots and (lots[0].qty > 0) != (q > 0):
                lot = lots[0]
                take = min(abs(q), abs(lot.qty))
                sign = 1 if lot.qty > 0 else -1
                pieces.append(_Piece(sign, take, lot.price, lot.date, lot.dseq, lot.seqno, lot.today))
                lot.reduce(take)
                q += sign * take
                if lot.qty == 0:
                    lots.pop(0)
            if pieces:
                closes.append((f, tuple(pieces)))
            if q:
                lots.append(_Lot(q, f.price, self.today, f.ordno, f.seqno, True, self._opening_cost(f) * abs(q) / f.quantity))
        return books, closes, last, yd

    def _opening_cost(self, f: SimFill) -> Decimal:
        """What opening a position with all of fill `f` costs on top of its price: a stock buy's
        fee; a stock sale's fee and tax (at the regular rate: the day-trade rate is known only
        once it is covered); nothing for futures and options."""
        if f.security_type != "STK":
            return Decimal(0)
        amount = f.quantity * f.price
        cost = self.fees.stock_fee(amount, f.order_lot in ("Odd", "IntradayOdd"))
        if f.action == "Sell":
            cost += self.fees.stock_tax(amount, instrument_for(f.code), False)
        return Decimal(cost)

    def _stock_price_pnl(self, inst: Any, lots: list[_Lot], net: int, mark: Decimal) -> tuple[Decimal, Decimal]:
        """(price, pnl) of an open stock position, in the broker's convention (module docstring)."""
        qty = abs(net)
        trade = sum(abs(lot.qty) * lot.price for lot in lots)
        opening = sum((lot.cost for lot in lots), Decimal(0))
        value = mark * qty
        fee = int(value * self.fees.stock_rate)  # floor: list rate, no discount, no minimum
        if net > 0:
            basis = trade + opening
            return basis / qty, value - fee - self.fees.stock_tax(value, inst, False) - basis
        basis = trade - opening
        return basis / qty, basis - value - fee

    def _done(self, result: Any, cb: Callable[[Any], None] | None) -> Any:
        if cb is not None:
            cb(result)
        return result

    # -- accounting group ----------------------------------------------------------------------
    def list_positions(self, account: Any = None, unit: Any = None, timeout: int | None = 30000,
                       cb: Callable | None = None) -> list[SimStockPosition | SimFuturePosition]:
        """Open positions of `account` (default: stock account)."""
        key = self.account_key(account)
        self.server_call(ACCOUNTING)
        scale = 1 if _is_share(unit) else 1000
        books, _, last, yd = self._replay(key)
        out: list[Any] = []
        for (code, cond), lots in books.items():
            net = sum(lot.qty for lot in lots)
            if not net:
                continue
            inst, qty = instrument_for(code), abs(net)
            avg = sum(abs(lot.qty) * lot.price for lot in lots) / qty
            mark = self._marks.get(code, last.get(code, avg))
            side = sj.Action.Buy if net > 0 else sj.Action.Sell
            if not inst.is_stock:
                pnl = float((mark - avg) * net * inst.multiplier)
                out.append(SimFuturePosition(len(out), code, side, qty, float(avg), float(mark), pnl))
                continue
            price, pnl_twd = self._stock_price_pnl(inst, lots, net, mark)
            y = yd.get((code, cond), 0)
            value = int(avg * qty)
            out.append(SimStockPosition(
                len(out), code, side, qty // scale, float(price), float(mark), float(pnl_twd),
                abs(y) // scale if y and (y > 0) == (net > 0) else 0, sj.StockOrderCond(cond),
                int(value * 0.6) if cond == "MarginTrading" else 0,
                value if cond == "ShortSelling" else 0, int(value * 0.9) if cond == "ShortSelling" else 0, 0))
        return self._done(out, cb)

    def _profit_loss(self, key: str, scale: int) -> list[tuple[Any, list[Any]]]:
        _, closes, _, _ = self._replay(key)
        rows: list[tuple[Any, list[Any]]] = []
        fees = self.fees
        for i, (f, pieces) in enumerate(closes):
            inst = instrument_for(f.position_code)
            closed = sum(p.qty for p in pieces)
            gross = sum(p.sign * p.qty * (f.price - p.price) for p in pieces) * inst.multiplier
            if not inst.is_stock:
                entry_fee = [fees.futures_fee(inst, p.qty) for p in pieces]
                entry_tax = [fees.futures_tax(inst, p.price, p.qty) for p in pieces]
                fee = fees.futures_fee(inst, closed) + sum(entry_fee)
                tax = fees.futures_tax(inst, f.price, closed) + sum(entry_tax)
                side = sj.Action.Buy if pieces[0].sign > 0 else sj.Action.Sell
                entry = sum(p.qty * p.price for p in pieces) / closed
                row = SimFutureProfitLoss(i, f.position_code, closed, float(gross - fee - tax), self.today,
                                          float(entry), float(f.price), tax, fee, side)
                details = [SimFutureProfitDetail(
                    self.today, f.position_code, p.qty, f.ordno, float(pf), float(pt), "NTD", side, p.date,
                    p.qty, p.seqno, float(p.price), float(f.price),
                    int(p.sign * p.qty * (f.price - p.price) * inst.multiplier))
                    for p, pf, pt in zip(pieces, entry_fee, entry_tax)]
                rows.append((row, details))
                continue
            day = f.order_cond == "Cash" and all(p.today for p in pieces)
            exit_amt = closed * f.price
            exit_fee = fees.stock_fee(exit_amt, f.order_lot in ("Odd", "IntradayOdd"))
            exit_tax = fees.stock_tax(exit_amt, inst, day) if f.action == "Sell" else 0
            entry_fee = [fees.stock_fee(p.qty * p.price, p.qty % 1000 != 0) for p in pieces]
            entry_tax = [fees.stock_tax(p.qty * p.price, inst, day) if p.sign < 0 else 0 for p in pieces]
            cost = sum(p.qty * p.price for p in pieces)
            pnl = gross - exit_fee - exit_tax - sum(entry_fee) - sum(entry_tax)
            cond = sj.StockOrderCond(f.order_cond)
            row = SimStockProfitLoss(i, f.code, closed // scale, float(pnl), self.today, f.ordno,
                                     float(f.price), round(float(pnl / cost * 100), 4) if cost else 0.0,
                                     cond, f.seqno)
            details = [SimStockProfitDetail(
                p.date, f.code, p.qty // scale, p.dseq, pf, pt, "NTD", float(p.price), int(p.qty * p.price) + pf,
                0, 0, 0, 0, 0, 0, sj.TradeType.DayTrade if p.today else sj.TradeType.Common, cond)
                for p, pf, pt in zip(pieces, entry_fee, entry_tax)]
            rows.append((row, details))
        return rows

    def list_profit_loss(self, account: Any = None, begin_date: str = "", end_date: str = "",
                         unit: Any = None, timeout: int | None = 30000,
                         cb: Callable | None = None) -> list[SimStockProfitLoss | SimFutureProfitLoss]:
        """Realized profit-loss rows (one per closing fill) dated within [begin_date, end_date]."""
        key = self.account_key(account)
        self.server_call(ACCOUNTING)
        if not (begin_date or self.today) <= self.today <= (end_date or self.today):
            return self._done([], cb)
        rows = [row for row, _ in self._profit_loss(key, 1 if _is_share(unit) else 1000)]
        return self._done(rows, cb)

    def list_profit_loss_detail(self, account: Any = None, detail_id: int = 0, unit: Any = None,
                                timeout: int | None = 30000,
                                cb: Callable | None = None) -> list[SimStockProfitDetail | SimFutureProfitDetail]:
        """Matched entry lots of profit-loss row `detail_id` ([] if no such row)."""
        key = self.account_key(account)
        self.server_call(ACCOUNTING)
        rows = self._profit_loss(key, 1 if _is_share(unit) else 1000)
        return self._done(list(rows[detail_id][1]) if 0 <= detail_id < len(rows) else [], cb)

    def list_settlements(self, account: Any = None, timeout: int | None = 30000,
                         cb: Callable | None = None) -> SimSettlement:
        """Stock cash settlement: today's net trade cash (fees and taxes deducted) settles T+2."""
        key = self.account_key(account)
        self.server_call(ACCOUNTING)
        cash = Decimal(0)
        for f in self._fills(key):
            if f.security_type == "STK":
                amount = f.quantity * f.price
                cash -= f.signed_quantity * f.price + self.fees.stock_fee(amount, f.order_lot in ("Odd", "IntradayOdd"))
                cash -= self.fees.stock_tax(amount, instrument_for(f.code), False) if f.action == "Sell" else 0
        day = self.session.config.trade_date
        days = [d.isoformat() for d in (day, business_days_after(day, 1), business_days_after(day, 2))]
        return self._done(SimSettlement(0.0, 0.0, float(cash), *days, sj.FetchStatus.Fetched), cb)

    # -- order group ---------------------------------------------------------------------------
    def update_status(self, account: Any = None, *, trade: Any = None, timeout: int | None = 30000,
                      cb: Callable | None = None) -> None:
        """Refresh order status from the server (order group budget). Returns None, as the SDK."""
        if account is not None:
            self.account_key(account)
        self.server_call(ORDER)
        if cb is not None:
            cb(self.list_trades())

    def truth_records(self, account: Any = None) -> list[tuple[str, dict]]:
        """Truth (state, payload) with exchange time <= as_of, in exchange order; no rate limit."""
        keys = {self.account_key(account)} if account is not None else set(self.accounts)
        cutoff = self.as_of
        out = []
        for state, msg in self.session.records:
            acct = msg["order"]["account"] if "order" in msg else msg
            if f'{acct["broker_id"]}-{acct["account_id"]}' in keys and (cutoff is None or event_ts(state, msg) <= cutoff):
                out.append((state, msg))
        placed = [(state, msg) for state, msg in self._placed[0] if _account_key_of(msg) in keys]
        return sorted(out + placed, key=lambda r: event_ts(*r)) if placed else out  # stable sort

    def order_deal_records(self, account: Any = None, timeout: int | None = 30000,
                           cb: Callable | None = None) -> list[tuple[sj.OrderState, dict]]:
        """Today's complete (OrderState, payload) records in exchange order (None: all accounts).

        Budgeted against the order group [I: the docs list it in no group]. Payloads are copies.
        """
        self.server_call(ORDER)
        out = [(sj.OrderState(s), copy_payload(m)) for s, m in self.truth_records(account)]
        return self._done(out, cb)

    def list_trades(self) -> list[SimTrade]:
        """Broker-side trades as of `as_of` (local, no server call, no budget)."""
        return build_trades(self.truth_records(), self.accounts)
