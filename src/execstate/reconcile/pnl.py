"""Unrealized PnL against the broker's: our open positions valued the way `list_positions` does.

Entry points: `open_costs(fills, fees) -> {(account, symbol): OpenCost}` (and `OpenCostCache(fees)`,
the same, incremental over a growing set of fills), `BrokerEstimate`
(`.from_fees(stock_fee_settings)`), `broker_style_pnl(cost, last, estimate) -> (pnl, allowance)`,
`compare_pnl(costs, ours, broker, accounts, symbols, threshold_twd, estimate) -> PnlCheck`,
`PnlDiscrepancy`.

What is compared, per (account, symbol) (the broker's position key: code and condition):
- The broker's side is its `list_positions` row: `pnl`, at its own `last_price`.
- Our side is our open quantity valued at that same `last_price` with the broker's
  convention (shared/reference/shioaji-facts.md section 5), on the broker's cost basis:
  - Cost basis: the broker's `price` is an average over its open lots, matched FIFO per
    account and symbol [I: lot-level profit-loss details; the simulated broker does this],
    and for stocks it folds in the opening fees. Our ledger is average cost per strategy,
    which legitimately differs from that as soon as a position is partly closed or netted
    across strategies (tens of thousands of TWD on a simulated day with correct books). So
    our side is restated from the very fills our ledger booked: every fill and correction of
    the account and symbol, matched FIFO over all strategies. Order: corrections of the
    opening check (reason `OPENING_REASON`: yesterday's positions) first, then everything
    in exchange order (the store's canonical order). A lot's opening costs are its fill's
    fee (a stock buy), or fee and tax (a stock sale opening a short, tax at the regular
    rate), as our fee schedule computed them, in proportion to the quantity still open;
    corrections carry none (an opening correction is booked at the broker's own `price`,
    fees already in).
  - Stock long (cash or margin) [reference formula, issue #177]:
    `last x qty - floor(0.1425% x last x qty) - floor(0.3% x last x qty) - (cost + buy fees)`,
    list commission rate without discount or minimum; ETFs at their 0.1% tax rate [I].
  - Stock short (ShortSelling, or a cash day-trade short) [I: no source states it]: the mirror
    image, `(proceeds - sell fees and taxes) - last x qty - floor(0.1425% x last x qty)`. As
    the convention is unverified, the comparison allows, on top of the threshold, the sum of
    the amounts whose treatment is a guess (the opening fees and taxes and the estimated
    buy-back fee); margin interest and short-sale fees are in no estimate.
  - Futures and options: `(last - average price) x signed qty x multiplier`, no fees (the
    docs' MXF and TXO examples).
- Only keys whose quantities agree everywhere are compared: the broker's, our books' (a
  quantity mismatch is reported as such) and the FIFO restatement's (a fill booked between
  the two reads: the next check compares it). Rows without `last_price` or `pnl`, and keys
  with more than one broker row, are skipped.
- A key is a discrepancy when |broker - ours| minus its allowance exceeds `threshold_twd`
  (`reconcile.max_pnl_mismatch_twd`): a 1 TWD rounding difference is not one.
What a discrepancy points at: a fill price or a correction price in our books that is not the
broker's, fills that net to the right quantity but are not the broker's, or a fee schedule
(`fees.stock`: rate, discount, minimum, rounding) that is not the broker's: the buy fees are
in both costs (a commission discount of 1 against the broker's 0.6 shows as hundreds to
thousands of TWD on a simulated day). What it cannot see: the ledger's own average-cost
arithmetic (the restatement reads the fills, not the ledger's states).
Invariants: pure functions of their arguments (no clock, no I/O), but for `OpenCostCache`,
which remembers each key's lots between calls; results sorted by key.
"""

from __future__ import annotations

import decimal
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import Decimal

import msgspec

from execstate.config import StockFeeSettings
from execstate.domain.events import FillEvent
from execstate.domain.money import ZERO
from execstate.domain.reports import BrokerPosition
from execstate.positions.fees import FeeSchedule
from execstate.positions.store import canonical_key

OPENING_REASON = "startup"  # the reason the service gives its opening check (its corrections are yesterday's lots)
_CENT = Decimal("0.01")
_WHOLE = Decimal(1)


class OpenCost(msgspec.Struct, frozen=True, gc=False):
    """Our open lots of one (account, symbol), restated FIFO over every strategy."""

    quantity: int  # signed, book units
    cost: Decimal  # signed sum of open quantity x trade price, price units
    opening_costs: Decimal  # TWD: fees (stock buys) or fees and taxes (stock sales) of the open lots
    multiplier: Decimal
    kind: str  # STK, FUT, OPT
    is_etf: bool = False


class BrokerEstimate(msgspec.Struct, frozen=True):
    """The sale costs the broker nets out of a stock position's `pnl` (floored to whole TWD)."""

    commission_rate: Decimal = Decimal("0.001425")  # list rate: no discount, no minimum
    tax_rate: Decimal = Decimal("0.003")
    etf_tax_rate: Decimal = Decimal("0.001")

    @classmethod
    def from_fees(cls, s: StockFeeSettings) -> BrokerEstimate:
        return cls(s.commission_rate, s.tax_rate, s.etf_tax_rate)


class PnlDiscrepancy(msgspec.Struct, frozen=True):
    """A position whose unrealized PnL differs from the broker's by more than the tolerance."""

    account: str
    symbol: str
    ours: Decimal  # TWD: our open lots valued the broker's way at its last price
    broker: Decimal  # TWD: the broker's `pnl`
    diff_twd: Decimal  # broker - ours
    tolerance_twd: Decimal  # threshold plus the allowance of an unverified convention


class PnlCheck(msgspec.Struct, frozen=True):
    discrepancies: list[PnlDiscrepancy]
    compared: int  # keys compared
    max_diff_twd: dict[str, Decimal]  # per account: largest |broker - ours| beyond its allowance (0 when none)


class _Lot:
    __slots__ = ("qty", "price", "costs")

    def __init__(self, qty: int, price: Decimal, costs: Decimal) -> None:
        self.qty, self.price, self.costs = qty, price, costs


def _advance(lots: deque[_Lot], fills: Iterable[FillEvent], fees: FeeSchedule) -> None:
    """Match `fills` (in order) FIFO against `lots`, in place; what is left of a fill opens a lot."""
    for f in fills:
        signed = f.quantity if f.side == "Buy" else -f.quantity
        while signed and lots and (lots[0].qty > 0) != (signed > 0):
            lot = lots[0]
            held = abs(lot.qty)
            take = min(abs(signed), held)
            if take == held:
                lots.popleft()
            else:
                lot.costs = lot.costs * (held - take) / held
                lot.qty += take if lot.qty < 0 else -take
            signed += take if signed < 0 else -take
        if signed:
            costs = ZERO
            if f.kind == "STK" and not f.correction:
                fee, tax = fees.charges(f)  # no day-trade match: a sale's tax at its regular rate
                costs = (fee + (tax if f.side == "Sell" else ZERO)) * abs(signed) / f.quantity
            lots.append(_Lot(signed, f.price, costs))


def _summary(lots: deque[_Lot], last: FillEvent) -> OpenCost:
    return OpenCost(sum(lot.qty for lot in lots), sum((lot.qty * lot.price for lot in lots), ZERO),
                    sum((lot.costs for lot in lots), ZERO), last.multiplier, last.kind, last.is_etf)


def _by_key(fills: Iterable[FillEvent], opening_reason: str, ordered: bool = False) -> dict[tuple[str, str], list[FillEvent]]:
    """Fills per (account, symbol), in FIFO order: opening corrections first, then canonical
    order. `ordered`: `fills` are already in canonical order (the store's), so only the opening
    corrections move (stably) to the front: no sort."""
    out: dict[tuple[str, str], list[FillEvent]] = {}
    openings: dict[tuple[str, str], list[FillEvent]] = {}
    for f in fills:
        (openings if f.correction == opening_reason else out).setdefault((f.account, f.symbol), []).append(f)
    for key, first in openings.items():
        out[key] = first + out.get(key, [])
    if not ordered:
        for group in out.values():
            group.sort(key=lambda f: (f.correction != opening_reason, canonical_key(f)))
    return out


def open_costs(fills: Iterable[FillEvent], fees: FeeSchedule, opening_reason: str = OPENING_REASON) -> dict[tuple[str, str], OpenCost]:
    """Our open lots per (account, symbol), matched FIFO over all strategies (module docstring)."""
    out = {}
    for key, group in _by_key(fills, opening_reason).items():
        lots: deque[_Lot] = deque()
        _advance(lots, group, fees)
        out[key] = _summary(lots, group[-1])
    return out


class OpenCostCache:
    """`open_costs` for repeated calls over a growing set of fills (the store's, at each check),
    given in canonical order per (account, code), as `PositionStore.fills()` returns them.

    Per key it keeps the fills matched last time and the lots they left: when the key's fills
    in FIFO order still begin with those (the one at the old length's end is the same object:
    fills are only ever added, so anything inserted before it would have moved it), only the
    new ones are matched; otherwise the key is matched again from its first fill. Results equal
    `open_costs` over the same fills (tested). Thread-safe (one call at a time).
    """

    def __init__(self, fees: FeeSchedule, opening_reason: str = OPENING_REASON) -> None:
        self._fees = fees
        self._reason = opening_reason
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[int, FillEvent, deque[_Lot]]] = {}
        self.rematched = 0  # keys matched again from their first fill (a fill inserted in the middle)

    def __call__(self, fills: Iterable[FillEvent]) -> dict[tuple[str, str], OpenCost]:
        with self._lock:
            out, seen = {}, {}
            try:
                for key, group in _by_key(fills, self._reason, ordered=True).items():
                    before = self._seen.get(key)
                    if before is not None and len(group) >= before[0] and group[before[0] - 1] is before[1]:
                        start, lots = before[0], before[2]
                    else:
                        start, lots = 0, deque()
                        self.rematched += before is not None
                    _advance(lots, group[start:], self._fees)
                    seen[key] = (len(group), group[-1], lots)
                    out[key] = _summary(lots, group[-1])
            except BaseException:
                self._seen = {}  # lots may be half advanced: start over next time
                raise
            self._seen = seen
            return out


def _floor(amount: Decimal) -> Decimal:
    return amount.quantize(_WHOLE, rounding=decimal.ROUND_FLOOR)


def broker_style_pnl(cost: OpenCost, last: Decimal, estimate: BrokerEstimate) -> tuple[Decimal, Decimal]:
    """(unrealized PnL the broker's way at `last`, allowance for an unverified convention), TWD."""
    qty = cost.quantity
    if cost.kind != "STK":
        return (last * qty - cost.cost) * cost.multiplier, ZERO
    value = last * abs(qty)
    fee = _floor(value * estimate.commission_rate)
    if qty > 0:
        tax = _floor(value * (estimate.etf_tax_rate if cost.is_etf else estimate.tax_rate))
        return value - fee - tax - (cost.cost + cost.opening_costs), ZERO
    proceeds = -cost.cost - cost.opening_costs
    return proceeds - value - fee, cost.opening_costs + fee


def compare_pnl(
    costs: Mapping[tuple[str, str], OpenCost],
    ours: Mapping[tuple[str, str], int],
    broker: Iterable[BrokerPosition],
    accounts: Iterable[str],
    symbols: Iterable[str] | None,
    threshold_twd: Decimal,
    estimate: BrokerEstimate,
) -> PnlCheck:
    """Compare every comparable key of `broker` (module docstring). `ours`: our books' net
    quantity per (account, symbol); `costs`: `open_costs` of the same books."""
    wanted_accounts = list(dict.fromkeys(accounts))
    wanted_symbols = set(symbols) if symbols is not None else None
    rows: dict[tuple[str, str], list[BrokerPosition]] = {}
    for p in broker:
        if p.account in wanted_accounts and (wanted_symbols is None or p.symbol in wanted_symbols):
            rows.setdefault((p.account, p.symbol), []).append(p)
    found: list[PnlDiscrepancy] = []
    worst = dict.fromkeys(wanted_accounts, ZERO)
    compared = 0
    for key, reported in sorted(rows.items()):
        if len(reported) != 1:
            continue
        p = reported[0]
        cost = costs.get(key)
        if p.quantity == 0 or p.last_price is None or p.pnl is None or cost is None:
            continue
        if not (p.quantity == ours.get(key, 0) == cost.quantity):
            continue
        pnl, allowance = broker_style_pnl(cost, p.last_price, estimate)
        compared += 1
        diff = p.pnl - pnl
        beyond = max(ZERO, abs(diff) - allowance)
        worst[p.account] = max(worst[p.account], beyond)
        if beyond > threshold_twd:
            found.append(PnlDiscrepancy(p.account, p.symbol, pnl.quantize(_CENT), p.pnl, diff.quantize(_CENT),
                                        (threshold_twd + allowance).quantize(_CENT)))
    return PnlCheck(found, compared, {a: v.quantize(_CENT) for a, v in worst.items()})
