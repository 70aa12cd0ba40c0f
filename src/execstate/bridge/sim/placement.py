"""Order entry on the simulated broker: what `SimShioaji.place_order` / `cancel_order` do.

Entry points: `OrderDesk(config, accounts, taken_ids)` with `.place(contract, order, account_key,
floor_ms, mark) -> Placement`, `.cancel(order_id, floor_ms) -> Placement | None` and
`.restore(records) -> Placement` (after a restart, from the journal);
`Outbox(deliver)`, the callback thread of placed orders; `SimContracts`
(`api.Contracts.Stocks["2330"]`, `.Futures["TXFL6"]` / `["TXF202612"]` / `["TXFR1"]`,
`.Options["TXO27800L6"]`), which hands out real `sj.Stock` / `sj.Future` / `sj.Option`.

Fill model (deterministic, no randomness):
- MKT / MKP orders, and limit orders at or through the mark (buy price >= mark, sell price <=
  mark), are marketable: they fill completely at the mark (`SimBroker.mark_price`), in two
  deals (ceil(q/2) then floor(q/2)) when the quantity is 2 or more, else in one. Every lot
  (Common, odd lots, Fixing) trades at once: the sim has no auctions for placed orders.
- Other limit orders: ROD rests until `cancel` (a Cancel report for the whole quantity); IOC
  and FOK are cancelled by the exchange at once (New, then Cancel).
- Exchange times: the New at max(`floor_ms`, previous placed report + 1 ms), then one
  millisecond per further report, so placed reports have distinct, increasing times.

Invariants:
- Payloads come from `catalog.OrderTicket`, the builders of the generated day, with the
  order's price type, time in force, octype and (stocks only: futures payloads carry none in
  1.7.9) `custom_field`. Event ids `{state}-{YYYYMMDD}-p{n:06d}` never collide with the
  generated day's (`{state}-{YYYYMMDD}-{n:07d}`).
- Trade ids are 8 hex digits like Shioaji's, skipping the session's ids; seqno `9xxxxx`; stock
  ordno "Z" + 4 base-36 digits, futures "k" + 4 base-62 digits (+ 3 per deal), prefixes a
  generated day never uses.
- `restore` takes back the placed reports of an earlier run of the same day (recognised by
  their event ids) so new ids continue after them: reusing one would make the pipeline drop
  new reports as duplicates. Orders resting at the restart are not restored (never cancelled).
- `OrderDesk` is thread-safe. `Outbox` calls `deliver` from one daemon thread
  ("sim-shioaji-order-cb"), in due-time order (ties: submission order), never on the caller's;
  a `deliver` that raises is counted (`errors`) and logged, and the thread goes on.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import shioaji as sj

from execstate.bridge.orders import CUSTOM_FIELD_MAX, _v
from execstate.bridge.sim.catalog import (
    FUTURES, INSTRUMENTS, OPTIONS, UNASSIGNED, Instrument, OrderTicket, instrument_for, lot_shares,
    symbol_for)
from execstate.bridge.sim.records import SimFill, SimTrade, build_trades, event_ts
from execstate.bridge.sim.session import _B36, _B62, _enc
from execstate.telemetry.logging import get_logger

log = get_logger("execstate.sim")
PLACED_EVENT_ID = re.compile(r"^(sorder|sdeal|forder|fdeal)-\d{8}-p(\d{6,})$")


def _derivative_keys() -> dict[str, Instrument]:
    """Futures and options by full code, by Shioaji symbol and (futures) by the R1 alias."""
    out: dict[str, Instrument] = {}
    for inst in FUTURES + OPTIONS:
        if inst.security_type == "FUT":
            symbol = f"{inst.code}{inst.delivery_month}"
            out[f"{inst.code}R1"] = inst
        else:
            symbol = f"{inst.code}{inst.delivery_month}{int(inst.strike_price):05d}{inst.option_right[6]}"
        out[inst.full_code] = out[symbol] = inst
    return out


_DERIVATIVES = _derivative_keys()


def instrument_of(contract: Any) -> Instrument:
    """The catalog instrument a Shioaji contract names (any stock code is a listed stock)."""
    kind, code = _v(getattr(contract, "security_type", "")), str(getattr(contract, "code", ""))
    if kind == "STK":
        inst = INSTRUMENTS.get(code)
        if inst is None or inst.is_stock:
            return inst or instrument_for(code)
    elif kind in ("FUT", "OPT"):
        inst = _DERIVATIVES.get(code)
        if inst is not None and inst.security_type == kind:
            return inst
        listed = ", ".join(i.full_code for i in FUTURES + OPTIONS if i.security_type == kind)
        raise sj.ShioajiValueError(f"contract.code={code!r}: not a {kind} contract of the simulated broker (listed: {listed})")
    raise sj.ShioajiValueError(f"contract.security_type={kind!r} (code {code!r}): expected STK, FUT or OPT")


class _Category:
    """`api.Contracts.Stocks` and friends: `[code]` / `.get(code)` -> a real shioaji contract."""

    def __init__(self, name: str, build: Callable[[str], Any]) -> None:
        self._name, self._build = name, build

    def __getitem__(self, code: str) -> Any:
        contract = self._build(code)
        if contract is None:
            raise KeyError(f"{self._name}[{code!r}]: not listed by the simulated broker")
        return contract

    def get(self, code: str, default: Any = None) -> Any:
        contract = self._build(code)
        return default if contract is None else contract


def _stock(code: str) -> Any:
    inst = INSTRUMENTS.get(code)
    if inst is not None and not inst.is_stock:
        return None
    inst = inst or instrument_for(code)
    return sj.Stock(exchange=inst.exchange, code=inst.code, symbol=inst.exchange + inst.code, name=inst.name,
                    unit=1000.0, reference=float(inst.base_price))


def _derivative(kind: str) -> Callable[[str], Any]:
    def build(code: str) -> Any:
        inst = _DERIVATIVES.get(code)
        if inst is None or inst.security_type != kind:
            return None
        common = dict(exchange="TAIFEX", code=inst.full_code, name=inst.name, category=inst.code,
                      delivery_month=inst.delivery_month, delivery_date=inst.delivery_date,
                      unit=1.0, multiplier=inst.multiplier)
        if kind == "FUT":
            return sj.Future(symbol=f"{inst.code}{inst.delivery_month}", **common)
        right = inst.option_right[6]  # "OptionCall" -> "C"
        return sj.Option(symbol=f"{inst.code}{inst.delivery_month}{int(inst.strike_price):05d}{right}",
                         strike_price=inst.strike_price, option_right=sj.OptionRight(right), **common)

    return build


class SimContracts:
    """The contracts the simulated broker lists, shaped like `api.Contracts` of the SDK."""

    def __init__(self) -> None:
        self.Stocks = _Category("Stocks", _stock)
        self.Futures = _Category("Futures", _derivative("FUT"))
        self.Options = _Category("Options", _derivative("OPT"))


@dataclass(frozen=True)
class Placement:
    """What one order call added to the broker's truth: records in exchange order, fills,
    and (for `place`) the trade handed back to the caller."""

    order_id: str
    records: tuple[tuple[str, dict], ...]
    fills: tuple[SimFill, ...]
    trade: SimTrade | None = None


class OrderDesk:
    """Validates Shioaji orders, assigns ids and matches them against the mark (see module)."""

    def __init__(self, config: Any, accounts: dict[str, Any], taken_ids: Iterable[str] = ()) -> None:
        self._cfg = config
        self._accounts = accounts
        self._taken = set(taken_ids)
        self._lock = threading.Lock()
        self._orders = 0
        self._deals = 0
        self._events: Counter[str] = Counter()
        self._last_ms = 0
        self._resting: dict[str, OrderTicket] = {}

    def _ticket(self, contract: Any, order: Any, account_key: str) -> OrderTicket:
        inst = instrument_of(contract)
        stock = inst.is_stock
        if stock != hasattr(order, "order_lot"):
            need = "sj.StockOrder" if stock else "sj.FuturesOrder"
            raise sj.ShioajiTypeError(f"order={type(order).__name__}: a {inst.security_type} contract ({contract.code}) needs {need}")
        acct = self._cfg.stock_account if stock else self._cfg.futopt_account
        if account_key != acct.key:
            raise sj.ShioajiValueError(f"order.account={account_key}: a {inst.security_type} order goes to account {acct.key}")
        quantity = order.quantity
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise sj.ShioajiValueError(f"order.quantity={quantity!r}: expected an int > 0")
        price_type = _v(order.price_type) or "LMT"
        price = Decimal(repr(float(order.price or 0)))
        if price_type == "LMT" and price <= 0:
            raise sj.ShioajiValueError(f"order.price={order.price!r}: a limit order needs a price > 0")
        custom = order.custom_field or ""
        if len(custom) > CUSTOM_FIELD_MAX:
            raise sj.ShioajiValueError(f"order.custom_field={custom!r}: expected at most {CUSTOM_FIELD_MAX} characters")
        o = OrderTicket()
        o.inst, o.acct, o.strategy = inst, acct, UNASSIGNED  # the broker knows tags, not strategies
        o.lot, o.cond = (_v(order.order_lot) or "Common", _v(order.order_cond) or "Cash") if stock else ("", "")
        o.tag = custom if stock else ""
        o.action, o.qty = _v(order.action), quantity
        o.price = price if price_type == "LMT" else Decimal(0)
        o.price_type, o.time_in_force = price_type, _v(order.time_in_force) or "ROD"
        if not stock:
            o.oc_type = _v(order.octype) or "Auto"
        o.symbol = symbol_for(inst, o.cond)
        return o

    def place(self, contract: Any, order: Any, account_key: str, floor_ms: int,
              mark: Callable[[str], Decimal]) -> Placement:
        """Accept `order` on `contract` at exchange time >= `floor_ms`; match it at `mark(code)`."""
        o = self._ticket(contract, order, account_key)
        records: list[tuple[str, dict]] = []
        fills: list[SimFill] = []
        with self._lock:
            self._orders += 1
            n = self._orders
            o.trade_id = self._new_id(n)
            o.seqno = f"{900000 + n % 100000:06d}"
            o.ordno = ("Z" + _enc(n, 4, _B36)) if o.inst.is_stock else ("k" + _enc(n, 4, _B62))
            t = max(floor_ms, self._last_ms + 1)
            records.append(self._report(o, "New", t, 0))
            price = mark(o.inst.position_code)
            if o.price_type != "LMT" or (o.price >= price if o.action == "Buy" else o.price <= price):
                chunks = [o.qty - o.qty // 2, o.qty // 2] if o.qty >= 2 else [o.qty]
                for deal_no, qty in enumerate(chunks, 1):
                    t += 1
                    records.append(self._deal(o, t, price, qty, deal_no, fills))
            elif o.time_in_force != "ROD":
                t += 1
                records.append(self._report(o, "Cancel", t, o.qty))
            else:
                self._resting[o.trade_id] = o
            self._last_ms = t
        trade = build_trades(records[:1], self._accounts)[0]
        trade = dataclasses.replace(trade, contract=contract,
                                    order=dataclasses.replace(trade.order, custom_field=order.custom_field or ""),
                                    status=dataclasses.replace(trade.status, status=sj.OrderStatus.PendingSubmit))
        return Placement(o.trade_id, tuple(records), tuple(fills), trade)

    def cancel(self, order_id: str, floor_ms: int) -> Placement | None:
        """Cancel a resting order (its whole quantity); None when nothing of it is working."""
        with self._lock:
            o = self._resting.pop(order_id, None)
            if o is None:
                return None
            t = self._last_ms = max(floor_ms, self._last_ms + 1)
            return Placement(order_id, (self._report(o, "Cancel", t, o.qty),), ())

    def restore(self, records: Iterable[tuple[str, dict]]) -> Placement:
        """Take back placed reports of an earlier run (others are ignored); returns the truth
        they make (records in exchange order, fills) for `SimBroker.add_placed`."""
        kept: dict[str, tuple[str, dict]] = {}
        for state, msg in records:
            m = PLACED_EVENT_ID.match(str(msg.get("event_id", ""))) if isinstance(msg, dict) else None
            if m is not None and m.group(1) == str(state).lower():
                kept.setdefault(msg["event_id"], (str(state), msg))
        fills: list[SimFill] = []
        restored: list[tuple[str, dict]] = []
        with self._lock:
            for state, msg in kept.values():
                try:
                    fill = self._restore_one(state, msg)
                except (KeyError, ValueError, TypeError):  # not a report this desk wrote: leave it out
                    continue
                restored.append((state, msg))
                if fill is not None:
                    fills.append(fill)
        restored.sort(key=lambda r: event_ts(*r))
        return Placement("", tuple(restored), tuple(sorted(fills, key=lambda f: f.ts)))

    def _restore_one(self, state: str, msg: dict) -> SimFill | None:
        deal = state.endswith("DEAL")
        tid = msg["trade_id"] if deal else msg["order"]["id"]
        fill = self._fill_of(state, msg) if deal else None
        if deal:
            xseq = msg["exchange_seq"]
            self._deals = max(self._deals, int(xseq[1:]) if xseq.startswith("p") else (int(xseq) - 900000) % 100000)
        else:
            spec = self._cfg.stock_account if state == "SORDER" else self._cfg.futopt_account
            msg["order"]["account"].setdefault("person_id", spec.person_id)  # the journal drops it
        self._events[state] = max(self._events[state], int(PLACED_EVENT_ID.match(msg["event_id"]).group(2)))
        self._orders = max(self._orders, (int(tid, 16) - 0xA5000000) & 0xFFFFFFFF)
        self._taken.add(tid)
        self._last_ms = max(self._last_ms, round(event_ts(state, msg) * 1000))
        return fill

    def _fill_of(self, state: str, msg: dict) -> SimFill:
        """The truth fill of a placed deal payload."""
        stock = state == "SDEAL"
        inst = instrument_for(msg["code"]) if stock else _DERIVATIVES[msg["full_code"]]
        cond, lot = (msg["order_cond"], msg["order_lot"]) if stock else ("", "")
        unit = lot_shares(lot) if stock else 1
        return SimFill(f'{msg["broker_id"]}-{msg["account_id"]}', msg["trade_id"], UNASSIGNED, symbol_for(inst, cond),
                       inst.code, msg["action"], Decimal(str(msg["price"])), msg["quantity"] * unit, inst.multiplier,
                       cond, lot, msg["ts"], msg["seqno"], msg["ordno"][:5], msg["exchange_seq"], inst.security_type)

    def working(self) -> list[str]:
        """Ids of resting orders, in placement order."""
        with self._lock:
            return list(self._resting)

    def _new_id(self, n: int) -> str:
        for k in itertools.count(n):
            tid = f"{(0xA5000000 + k) & 0xFFFFFFFF:08x}"
            if tid not in self._taken:
                self._taken.add(tid)
                return tid
        raise AssertionError("unreachable")

    def _stamp(self, state: str, msg: dict) -> tuple[str, dict]:
        self._events[state] += 1
        msg["event_id"] = f"{state.lower()}-{self._cfg.trade_date:%Y%m%d}-p{self._events[state]:06d}"
        return state, msg

    def _report(self, o: OrderTicket, op: str, t_ms: int, cancelled: int) -> tuple[str, dict]:
        state = "SORDER" if o.inst.is_stock else "FORDER"
        return self._stamp(state, o.order_payload(op, "00", "", t_ms, cancelled, 0.0))

    def _deal(self, o: OrderTicket, t_ms: int, price: Decimal, qty: int, deal_no: int,
              fills: list[SimFill]) -> tuple[str, dict]:
        stock = o.inst.is_stock
        self._deals += 1
        xseq = f"{900000 + self._deals % 100000:06d}" if stock else f"p{self._deals:07d}"
        ordno = o.ordno if stock else o.ordno + _enc(deal_no, 3, _B36)  # futures: ordno + deal seq
        state, msg = self._stamp("SDEAL" if stock else "FDEAL", o.deal_payload(t_ms, price, qty, ordno, xseq))
        fills.append(self._fill_of(state, msg))
        return state, msg


class Outbox:
    """Delivers (state, payload) pairs at due times from one daemon thread, started lazily."""

    def __init__(self, deliver: Callable[[str, dict], None], now: Callable[[], float] = time.monotonic) -> None:
        self._deliver = deliver
        self._now = now
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, str, dict]] = []
        self._seq = itertools.count()
        self._unfinished = 0
        self._thread: threading.Thread | None = None
        self.errors = 0  # deliveries that raised (counted and logged; the thread goes on)

    def send(self, items: Iterable[tuple[float, str, dict]]) -> None:
        """Queue (delay_s, state, payload) items; each is delivered `delay_s` from now."""
        now = self._now()
        with self._cv:
            for delay, state, msg in items:
                heapq.heappush(self._heap, (now + delay, next(self._seq), state, msg))
                self._unfinished += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sim-shioaji-order-cb", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > self._now():
                    self._cv.wait(None if not self._heap else self._heap[0][0] - self._now())
                _, _, state, msg = heapq.heappop(self._heap)
            try:
                self._deliver(state, msg)
            except Exception as exc:  # never die silently: later items (and join()) depend on this thread
                self.errors += 1
                log.error("sim_outbox_deliver_failed", state=state, error=repr(exc)[:300])
            finally:
                with self._cv:
                    self._unfinished -= 1
                    self._cv.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until everything sent has been delivered; False on timeout."""
        end = None if timeout is None else self._now() + timeout
        with self._cv:
            while self._unfinished:
                left = None if end is None else end - self._now()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True
