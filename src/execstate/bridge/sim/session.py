"""Deterministic simulated trading day: Shioaji order/deal callbacks plus the truth behind them.

Entry points: `SimConfig`, `generate_session(cfg) -> SimSession`, `write_journal(session, path)`.
Truth record types (`SimFill`, `SimIntent`, `SimOrder`, `InitialPosition`) live in `records`.

Invariants:
- Same `SimConfig` -> identical session (every dict, float and id), no global state touched.
- Payloads are plain dicts with exactly the keys of shioaji 1.7.9's StockOrderEvent /
  StockDealEvent / FuturesOrderEvent / FuturesDealEvent TypedDicts, with their Python types.
- `records` holds every truth event once, in exchange order; `events` is what the callback sees:
  records minus `dropped`, plus identical duplicates, locally reordered, some deals before
  their order's New. `recv_ts_ns` (parallel to `events`) is monotonic and >= each event's time.
- Within one order every operation has a distinct, increasing exchange time; a deal quantity
  never exceeds the live quantity; UpdateQty never goes below the filled quantity.
- `fills` are all truth deals (dropped ones included) in exchange order, quantity in position
  units (shares / contracts), price = Decimal(str(payload float)).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from execstate.bridge.sim.catalog import (
    FUTOPT_ACCOUNT, FUTOPT_STRATEGIES, FUTURES, OPTIONS, STOCK_ACCOUNT, STOCK_STRATEGIES, STOCKS,
    TAG_OF, UNASSIGNED, AccountSpec, Instrument, OrderTicket, lot_shares, option_premium,
    round_to_tick, step_ticks, symbol_for, taipei_ms)
from execstate.bridge.sim.records import (
    DEFAULT_INITIAL_POSITIONS, InitialPosition, SimFill, SimIntent, SimOrder, copy_payload)


@dataclass(frozen=True)
class SimConfig:
    """Knobs of one simulated day. Rates are probabilities per order (per event for
    dup/no_event_id/drop). `reorder_window` = max positions an event moves (1 = no shuffle)."""

    seed: int
    trade_date: dt.date = dt.date(2026, 11, 25)
    n_orders: int = 1000
    stock_account: AccountSpec = STOCK_ACCOUNT
    futopt_account: AccountSpec = FUTOPT_ACCOUNT
    dup_rate: float = 0.03
    dup_late_fraction: float = 0.5  # of duplicates, share delivered 2 to 30 min later
    deal_before_order_rate: float = 0.05
    no_event_id_rate: float = 0.02
    reject_rate: float = 0.03
    cancel_rate: float = 0.15
    update_qty_rate: float = 0.08
    update_price_rate: float = 0.08
    odd_lot_rate: float = 0.12
    fixing_rate: float = 0.01
    margin_rate: float = 0.08
    short_rate: float = 0.05
    futures_rate: float = 0.22
    options_rate: float = 0.10
    unassigned_rate: float = 0.06
    drop_rate: float = 0.0
    reorder_window: int = 3
    initial_positions: tuple[InitialPosition, ...] = DEFAULT_INITIAL_POSITIONS
    person_id: str = ""  # non-empty: both accounts carry it (payloads and `sj.Account`), as a real login's do

    def __post_init__(self) -> None:
        if self.person_id:
            for name in ("stock_account", "futopt_account"):
                object.__setattr__(self, name, dataclasses.replace(getattr(self, name), person_id=self.person_id))

    @property
    def accounts(self) -> tuple[AccountSpec, AccountSpec]:
        """(stock account, futures/options account)."""
        return (self.stock_account, self.futopt_account)


@dataclass(frozen=True)
class SimSession:
    """A generated day. See the module docstring for the invariants."""

    config: SimConfig
    events: list[tuple[str, dict]]
    recv_ts_ns: list[int]
    fills: list[SimFill]
    intents: list[SimIntent]
    orders: list[SimOrder]
    initial_positions: tuple[InitialPosition, ...]
    records: list[tuple[str, dict]]
    dropped: list[tuple[int, str, dict]] = field(default_factory=list)  # (delivery index, state, payload)

    def expected_quantities(self, include_initial: bool = False) -> dict[tuple[str, str, str], int]:
        """Net signed quantity per (account, strategy, symbol) over truth fills (zeros kept)."""
        out: dict[tuple[str, str, str], int] = {}
        if include_initial:
            for p in self.initial_positions:
                key = (p.account, p.strategy_id, p.symbol)
                out[key] = out.get(key, 0) + p.quantity
        for f in self.fills:
            key = (f.account, f.strategy_id, f.symbol)
            out[key] = out.get(key, 0) + f.signed_quantity
        return out

    def expected_cash_flows(self) -> dict[tuple[str, str, str], Decimal]:
        """Sum of -signed_qty x price x multiplier per (account, strategy, symbol), fees excluded."""
        out: dict[tuple[str, str, str], Decimal] = {}
        for f in self.fills:
            key = (f.account, f.strategy_id, f.symbol)
            out[key] = out.get(key, Decimal(0)) - f.signed_quantity * f.price * f.multiplier
        return out

    def stats(self) -> dict[str, object]:
        """Counts describing the delivered stream (for reports and sanity tests)."""
        first: dict[tuple[bool, str], int] = {}
        for i, (state, msg) in enumerate(self.events):
            deal = state.endswith("DEAL")
            first.setdefault((deal, msg["trade_id"] if deal else msg["order"]["id"]), i)
        early = sum(1 for (deal, tid), i in first.items() if deal and i < first.get((False, tid), 1 << 62))
        return {
            "events": len(self.events),
            "by_state": dict(sorted(Counter(s for s, _ in self.events).items())),
            "duplicates": len(self.events) - len({json.dumps(m, sort_keys=True) for _, m in self.events}),
            "deal_before_order": early,
            "no_event_id": sum(1 for _, m in self.events if m["event_id"] == ""),
            "orders": len(self.orders),
            "rejects": sum(o.rejected for o in self.orders),
            "fills": len(self.fills),
            "dropped": len(self.dropped),
            "symbols": sorted({f.symbol for f in self.fills}),
            "ops": dict(sorted(Counter(op for o in self.orders for op in o.ops).items())),
        }


def generate_session(cfg: SimConfig) -> SimSession:
    """Generate the day described by `cfg`, deterministically from `cfg.seed`."""
    return _Generator(cfg).run()


def write_journal(session: SimSession, path: str | Path) -> int:
    """Write delivered events as JSON lines {"ts_ns", "state", "msg"}; returns lines written."""
    with open(path, "w", encoding="utf-8") as fh:
        for ts_ns, (state, msg) in zip(session.recv_ts_ns, session.events):
            fh.write(json.dumps({"ts_ns": ts_ns, "state": state, "msg": msg}, ensure_ascii=False))
            fh.write("\n")
    return len(session.events)


# --- generator -------------------------------------------------------------------------------

_WINDOWS = {"Common": ((9, 0), (13, 10), (13, 30)), "IntradayOdd": ((9, 0), (13, 10), (13, 30)),
            "Odd": ((13, 40), (14, 25), (14, 29)), "Fixing": ((14, 0), (14, 25), (14, 29)),
            "": ((8, 45), (13, 25), (13, 45))}  # order lot -> (first placement, last, session end)
_REJECTS = {True: (("88", "此證券配額張數不足"), ("9927", "委託條件錯誤")),  # codes seen in docs
            False: (("9927", "委託條件錯誤"),)}
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _enc(n: int, width: int, alphabet: str) -> str:
    return "".join(alphabet[n // len(alphabet) ** p % len(alphabet)] for p in range(width - 1, -1, -1))


class _Generator:
    """One-shot builder; all randomness comes from `self.rng` in a fixed call order."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg, self.rng = cfg, random.Random(cfg.seed)
        self.records: list[tuple[int, int, str, dict]] = []
        self.fills: list[tuple[int, int, SimFill]] = []
        self.intents: list[SimIntent] = []
        self.orders: list[SimOrder] = []
        self.held = {(p.account, p.code, p.cond): p.quantity for p in cfg.initial_positions}
        self.busy: dict[tuple[str, str, str], int] = {}
        self.ids: set[str] = set()
        self.seq = itertools.count()
        r = self.rng
        self.seqno = {True: r.randint(100000, 300000), False: r.randint(400000, 700000)}
        self.ordno = {True: r.randint(36**4 // 2, 36**4), False: r.randint(62**3, 62**4 // 2)}
        self.xseq = {True: r.randint(100000, 400000), False: r.randint(1000000, 5000000)}
        self.prefix = {True: r.choice("IWY"), False: r.choice("ghj")}
        self.path = {i.code: self._walk(float(i.base_price), i.vol_bp) for i in STOCKS}
        self.path["IDX"] = self._walk(27850.0, 6)

    def at(self, hh: int, mm: int) -> int:
        return taipei_ms(self.cfg.trade_date, hh, mm)

    def _walk(self, start: float, vol_bp: int) -> list[float]:
        out = [start]
        for _ in range(345):  # one point a minute, 08:45 -> 14:30
            out.append(out[-1] * (1.0 + self.rng.gauss(0.0, vol_bp / 10000.0)))
        return out

    def mid(self, inst: Instrument, t_ms: int) -> Decimal:
        i = min(max((t_ms - self.at(8, 45)) // 60000, 0), 345)
        value = self.path[inst.code if inst.is_stock else "IDX"][i]
        if inst.security_type == "OPT":
            value = option_premium(inst, value)
        return round_to_tick(inst, Decimal(repr(round(value, 3))))

    def run(self) -> SimSession:
        cfg, r = self.cfg, self.rng
        specs = []
        for i in range(cfg.n_orders):
            x = r.random()
            if x < cfg.options_rate:
                inst, lot = r.choice(OPTIONS), ""
            elif x < cfg.options_rate + cfg.futures_rate:
                inst, lot = r.choices(FUTURES, (3, 3, 2))[0], ""
            else:
                inst, y = r.choice(STOCKS), r.random()
                lot = (("IntradayOdd" if r.random() < 0.8 else "Odd") if y < cfg.odd_lot_rate
                       else "Fixing" if y < cfg.odd_lot_rate + cfg.fixing_rate else "Common")
            first, last, _ = _WINDOWS[lot]
            specs.append((r.randint(self.at(*first), self.at(*last)), i, inst, lot))
        for t0, _, inst, lot in sorted(specs, key=lambda s: s[:2]):
            self.place(t0, inst, lot)
        return self.deliver()

    def place(self, t0: int, inst: Instrument, lot: str) -> None:
        cfg, r, stock = self.cfg, self.rng, inst.is_stock
        o = OrderTicket()
        o.inst, o.lot, o.acct = inst, lot, cfg.stock_account if stock else cfg.futopt_account
        o.strategy = UNASSIGNED if r.random() < cfg.unassigned_rate else r.choice(
            STOCK_STRATEGIES if stock else FUTOPT_STRATEGIES)
        o.tag = TAG_OF.get(o.strategy, "") if stock else ""
        o.cond = "Cash" if stock else ""
        if lot == "Common":
            x = r.random()
            cond = "MarginTrading" if x < cfg.margin_rate else (
                "ShortSelling" if x < cfg.margin_rate + cfg.short_rate else "Cash")
            if cond == "Cash" or self.busy.get((o.acct.key, inst.code, cond), -1) < t0:
                o.cond = cond  # one working margin/short order per key keeps those books >= 0
        key = (o.acct.key, inst.position_code, o.cond)
        o.action, o.qty = self.choose(inst, lot, o.cond, self.held.get(key, 0))
        o.symbol = symbol_for(inst, o.cond)
        o.price = self.mid(inst, t0)
        if r.random() < 0.7:  # marketable limit, a tick or two through the mid
            o.price = step_ticks(inst, o.price, r.randint(0, 2) * (1 if o.action == "Buy" else -1))
        o.trade_id = self.new_trade_id()
        self.seqno[stock] += r.randint(1, 40)
        self.ordno[stock] += r.randint(1, 9)
        o.seqno = f"{self.seqno[stock]:06d}"
        o.ordno = (self.prefix[True] + _enc(self.ordno[True], 4, _B36) if stock
                   else self.prefix[False] + _enc(self.ordno[False], 4, _B62))
        if o.strategy != UNASSIGNED:
            self.intents.append(SimIntent(o.trade_id, o.strategy, o.symbol, o.tag))
        summary, t_end, filled = self.life(o, t0)
        self.orders.append(summary)
        self.busy[key] = t_end
        self.held[key] = self.held.get(key, 0) + (filled if o.action == "Buy" else -filled)

    def new_trade_id(self) -> str:
        while True:
            tid = f"{self.rng.getrandbits(32):08x}"
            if tid not in self.ids:
                self.ids.add(tid)
                return tid

    def choose(self, inst: Instrument, lot: str, cond: str, held: int) -> tuple[str, int]:
        """Side and size (order units) from the account book: long, flat, short and flips."""
        r = self.rng
        if not inst.is_stock:
            cap = 9 if inst.security_type == "FUT" else 15
            sell = r.random() < (0.8 if held > cap else 0.2 if held < -cap else 0.5)
            size = r.randint(1, 4 if inst.code == "TXF" else 8)
            if held and (held > 0) == sell and r.random() < 0.3:
                size = abs(held)
            return ("Sell" if sell else "Buy"), size
        if lot in ("IntradayOdd", "Odd"):
            if held > 0 and r.random() < 0.45:
                odd = held % 1000
                return "Sell", odd if odd and r.random() < 0.4 else r.randint(1, min(held, 999))
            return "Buy", r.randint(1, 400)
        lots = held // 1000 if held >= 0 else -(-held // 1000)
        if cond == "MarginTrading":
            return ("Sell", r.randint(1, min(lots, 5))) if lots > 0 and r.random() < 0.5 else ("Buy", r.randint(1, 3))
        if cond == "ShortSelling":
            return ("Buy", r.randint(1, min(-lots, 5))) if lots < 0 and r.random() < 0.5 else ("Sell", r.randint(1, 3))
        x, y = r.random(), r.random()
        if lots > 0 and x < 0.55:
            qty = lots if y < 0.4 else r.randint(1, lots) if y < 0.85 else lots + r.randint(1, 2)
            return "Sell", min(qty, lots) if lot == "Fixing" else qty
        if lots < 0 and x < 0.65:
            return "Buy", -lots if y < 0.5 else r.randint(1, -lots) if y < 0.8 else -lots + r.randint(1, 2)
        if lots == 0 and x < 0.25 and lot == "Common":
            return "Sell", r.randint(1, 2)  # cash day-trade sell first
        return "Buy", r.randint(1, 3)

    def life(self, o: OrderTicket, t0: int) -> tuple[SimOrder, int, int]:
        """Emit one order's events; returns (summary, last op time, filled in position units)."""
        cfg, r, auction = self.cfg, self.rng, o.lot in ("Odd", "Fixing")
        unit = lot_shares(o.lot) if o.inst.is_stock else 1
        if r.random() < cfg.reject_rate:
            code, msg = r.choice(_REJECTS[o.inst.is_stock])
            op = "New" if r.random() < 0.6 else "Reject"
            self.order_event(o, t0, op, code, msg, 0, 0.0)
            return self.summary(o, o.qty, 0, 0, True, (op,)), t0, 0
        q = o.qty
        reduce_by = r.randint(1, q - 1) if q >= 2 and r.random() < cfg.update_qty_rate else 0
        live, cancel = q - reduce_by, r.random() < cfg.cancel_rate
        if auction:
            total = 0 if cancel else live if r.random() < 0.7 else r.randint(1, live)
            k = 1 if total else 0
        else:
            total = r.randint(0, live - 1) if cancel else live
            k = min(total, r.choice((1, 1, 1, 2, 2, 3, 4)))
        cuts = sorted(r.sample(range(1, total), k - 1)) if k > 1 else []
        chunks = [b - a for a, b in zip([0] + cuts, cuts + [total])] if k else []
        up_at = None
        if o.lot in ("Common", "") and r.random() < cfg.update_price_rate:
            up_at = r.randint(0, k - 1 if (total == live and k) else k)
        uq_at = (0 if auction else r.randint(0, k)) if reduce_by else None
        plan: list[tuple[str, int]] = []
        for j in range(k + 1):
            plan += [("UpdatePrice", 0)] * (up_at == j) + [("UpdateQty", reduce_by)] * (uq_at == j)
            plan += [("Deal", chunks[j])] if j < k else []
        plan += [("Cancel", live - total)] if cancel else []
        first, _, end = _WINDOWS[o.lot]
        end_ms = self.at(*end) + (59_000 if auction else 0)
        t, cancelled, price, modified, deal_no = t0, 0, o.price, 0.0, 0
        self.order_event(o, t, "New", "00", "", 0, 0.0)
        for n, (op, qty) in enumerate(plan):
            t = self.next_time(t, end_ms, len(plan) - n, o.lot, op == "Deal")
            if op == "Deal":
                deal_no += 1
                self.deal_event(o, t, price, qty, deal_no, unit)
                continue
            if op == "UpdatePrice":
                step = r.choice((1, 1, 2, 3)) * (1 if o.action == "Buy" else -1) * (1 if r.random() < 0.8 else -1)
                price = step_ticks(o.inst, price, step)
                modified = float(price)
            else:
                cancelled += qty
            self.order_event(o, t, op, "00", "", cancelled, modified)
        return self.summary(o, live, total, cancelled, False, ("New",) + tuple(p for p, _ in plan)), t, total * unit

    def next_time(self, t: int, end_ms: int, left: int, lot: str, deal: bool) -> int:
        r = self.rng
        if deal and lot in ("Odd", "Fixing"):  # single call auction at 14:30
            return max(t + 1, self.at(14, 30) + r.randint(0, 900))
        nt = t + min(r.randint(20, 25_000), max(1, (end_ms - t) // (left + 1)))
        if deal and lot == "IntradayOdd":  # intraday odd lots match every 5 s from 09:10
            start = self.at(9, 10)
            nt = start + -(-(max(nt, start) - start) // 5000) * 5000 + r.randint(0, 300)
        return max(nt, t + 1)

    def summary(self, o: OrderTicket, live: int, filled: int, cancelled: int, rejected: bool,
                ops: tuple[str, ...]) -> SimOrder:
        return SimOrder(o.trade_id, o.acct.key, o.strategy, o.symbol, o.inst.code, o.action, o.lot,
                        o.cond, o.qty, live, filled, cancelled, rejected, ops)

    def order_event(self, o: OrderTicket, t: int, op: str, code: str, msg: str, cancelled: int,
                    modified: float) -> None:
        state = "SORDER" if o.inst.is_stock else "FORDER"
        self.records.append((t, next(self.seq), state, o.order_payload(op, code, msg, t, cancelled, modified)))

    def deal_event(self, o: OrderTicket, t: int, price: Decimal, qty: int, deal_no: int, unit: int) -> None:
        inst, stock = o.inst, o.inst.is_stock
        self.xseq[stock] += self.rng.randint(1, 60)
        xseq = f"{self.xseq[True]:06d}" if stock else f"{self.prefix[False]}{self.xseq[False]:07d}"
        ordno = o.ordno if stock else o.ordno + _enc(deal_no, 3, _B36)  # futures: ordno + deal seq
        seq = next(self.seq)
        self.records.append((t, seq, "SDEAL" if stock else "FDEAL", o.deal_payload(t, price, qty, ordno, xseq)))
        fill = SimFill(o.acct.key, o.trade_id, o.strategy, o.symbol, inst.code, o.action,
                       Decimal(str(float(price))), qty * unit, inst.multiplier, o.cond,
                       o.lot if stock else "", t / 1000, o.seqno, o.ordno, xseq, inst.security_type)
        self.fills.append((t, seq, fill))

    def deliver(self) -> SimSession:
        """Assign event ids, then turn truth records into the delivered stream."""
        cfg, r = self.cfg, self.rng
        records = sorted(self.records, key=lambda x: x[:2])
        per_state: Counter[str] = Counter()
        for _, _, state, msg in records:
            per_state[state] += 1
            if r.random() >= cfg.no_event_id_rate:
                msg["event_id"] = f"{state.lower()}-{cfg.trade_date:%Y%m%d}-{per_state[state]:07d}"
        recv = [t + r.randint(3, 120) for t, _, _, _ in records]
        first_order: dict[str, int] = {}
        first_deal: dict[str, int] = {}
        for i, (_, _, state, msg) in enumerate(records):
            if state.endswith("DEAL"):
                first_deal.setdefault(msg["trade_id"], i)
            else:
                first_order.setdefault(msg["order"]["id"], i)
        for tid, di in first_deal.items():
            if r.random() < cfg.deal_before_order_rate:
                recv[first_order[tid]] = recv[di] + r.randint(1, 400)
        kept = [i for i in range(len(records)) if r.random() >= cfg.drop_rate]
        lost = sorted(set(range(len(records))) - set(kept))
        slots = [(recv[i], 0, i) for i in kept]
        for i in kept:
            if r.random() < cfg.dup_rate:
                late = r.random() < cfg.dup_late_fraction
                slots.append((recv[i] + (r.randint(120_000, 1_800_000) if late else r.randint(0, 5)), 1, i))
        slots.sort()
        if cfg.reorder_window > 1:
            order = sorted(range(len(slots)), key=lambda j: j + r.random() * cfg.reorder_window)
            slots = [slots[j] for j in order]
        events, recv_ns, last = [], [], 0
        for ms, _, i in slots:
            last = max(last + 1, ms * 1_000_000 + r.randint(0, 999_999))
            events.append((records[i][2], copy_payload(records[i][3])))
            recv_ns.append(last)
        dropped = [(bisect.bisect_left(recv_ns, recv[i] * 1_000_000), records[i][2], copy_payload(records[i][3]))
                   for i in lost]
        fills = [f for _, _, f in sorted(self.fills, key=lambda x: x[:2])]
        return SimSession(cfg, events, recv_ns, fills, self.intents, self.orders,
                          tuple(cfg.initial_positions), [(s, copy_payload(m)) for _, _, s, m in records],
                          dropped)
