"""Taiwan fees and taxes per fill, from the configured schedule.

Entry points: `FeeSchedule.charges(fill, day_trade_shares, day_trade_credit_notional)`,
`DayTradeBook` / `day_trade_step` (pure same-day matching per account and stock).

Rules (see ../shared/reference/shioaji-facts.md §4):
- Stock commission, both sides: rate * discount * notional, rounded to whole TWD by the
  configured rule, at least the board-lot or odd-lot minimum.
- Stock transaction tax, seller only: 0.3%; ETFs 0.1% (no day-trade halving); a cash
  day-trade sell 0.15% on the shares matched by a same-day buy. When the sell came first
  (day-trade short), the covering buy books the difference back as a negative tax.
- Futures: a fee per contract by product root; tax per contract = round-half-up(price *
  multiplier * rate) (0.002% futures, 0.1% of premium for options), times contracts.
Invariant: every amount is an exact Decimal in whole TWD (tax credits too).
"""

from __future__ import annotations

import decimal
from decimal import Decimal

import msgspec

from execstate.config import FeeSettings
from execstate.domain.events import FillEvent
from execstate.domain.money import ZERO

_ROUNDING = {
    "floor": decimal.ROUND_FLOOR,
    "round": decimal.ROUND_HALF_UP,
    "ceil": decimal.ROUND_CEILING,
}
_WHOLE = Decimal(1)
_ODD_LOTS = frozenset({"Odd", "IntradayOdd"})


class DayTradeBook(msgspec.Struct, frozen=True, gc=False):
    """Same-day unmatched quantities of one stock in one account (condition in day_trade_conds)."""

    day: int = 0  # Taipei day number
    bought: int = 0  # shares bought today not yet matched by a sell
    sold: int = 0  # shares sold today not yet matched by a buy (day-trade short)
    sold_notional: Decimal = ZERO  # price * shares of those unmatched sells


class DayTradeMatch(msgspec.Struct, frozen=True, gc=False):
    sell_shares: int = 0  # shares of this sell taxed at the day-trade rate
    credit_notional: Decimal = ZERO  # notional of earlier sells now covered by this buy


def day_trade_step(book: DayTradeBook, day: int, side: str, price: Decimal, shares: int) -> tuple[DayTradeBook, DayTradeMatch]:
    """Match one fill against the day's unmatched opposite quantity. Pure."""
    if book.day != day:
        book = DayTradeBook(day=day)
    if side == "Sell":
        matched = min(shares, book.bought)
        rest = shares - matched
        new = DayTradeBook(day, book.bought - matched, book.sold + rest, book.sold_notional + price * rest)
        return new, DayTradeMatch(sell_shares=matched)
    matched = min(shares, book.sold)
    if matched == 0:
        return DayTradeBook(day, book.bought + shares, book.sold, book.sold_notional), DayTradeMatch()
    if matched == book.sold:
        credit = book.sold_notional
    else:
        credit = book.sold_notional * matched / book.sold
    new = DayTradeBook(day, book.bought + shares - matched, book.sold - matched, book.sold_notional - credit)
    return new, DayTradeMatch(credit_notional=credit)


class FeeSchedule:
    """Computes (fee, tax) for a fill. Stateless; the day-trade state is passed in."""

    __slots__ = ("_s", "_f", "_rounding", "_fee_factor", "_dt_conds", "_fee_per_contract", "_default_fee")

    def __init__(self, settings: FeeSettings) -> None:
        self._s = settings.stock
        self._f = settings.futures
        self._rounding = _ROUNDING[settings.stock.rounding]
        self._fee_factor = settings.stock.commission_rate * settings.stock.discount
        self._dt_conds = frozenset(settings.stock.day_trade_conds)
        self._fee_per_contract = dict(settings.futures.fee_per_contract)
        self._default_fee = self._fee_per_contract.get("default", ZERO)

    def tracks_day_trades(self, fill: FillEvent) -> bool:
        """Whether this stock fill takes part in day-trade tax matching."""
        return fill.kind == "STK" and not fill.is_etf and fill.order_cond in self._dt_conds

    def _whole(self, amount: Decimal) -> Decimal:
        return amount.quantize(_WHOLE, rounding=self._rounding)

    def charges(self, fill: FillEvent, match: DayTradeMatch | None = None) -> tuple[Decimal, Decimal]:
        """(fee, tax) in whole TWD for one fill; `match` from `day_trade_step` for stocks."""
        if fill.kind == "STK":
            return self._stock(fill, match or DayTradeMatch())
        return self._derivative(fill)

    def _stock(self, fill: FillEvent, match: DayTradeMatch) -> tuple[Decimal, Decimal]:
        s = self._s
        notional = fill.price * fill.quantity
        minimum = s.min_fee_odd_lot if fill.order_lot in _ODD_LOTS else s.min_fee_board_lot
        fee = max(minimum, self._whole(notional * self._fee_factor))
        if fill.side == "Sell":
            if fill.is_etf:
                tax = self._whole(notional * s.etf_tax_rate)
            else:
                dt_notional = fill.price * match.sell_shares
                tax = self._whole(dt_notional * s.day_trade_tax_rate + (notional - dt_notional) * s.tax_rate)
        elif match.credit_notional:
            tax = -self._whole(match.credit_notional * (s.tax_rate - s.day_trade_tax_rate))
        else:
            tax = ZERO
        return fee, tax

    def _derivative(self, fill: FillEvent) -> tuple[Decimal, Decimal]:
        f = self._f
        fee = self._fee_per_contract.get(fill.code, self._default_fee) * fill.quantity
        rate = f.option_tax_rate if fill.kind == "OPT" else f.futures_tax_rate
        per_contract = (fill.price * fill.multiplier * rate).quantize(_WHOLE, rounding=decimal.ROUND_HALF_UP)
        return fee, per_contract * fill.quantity
