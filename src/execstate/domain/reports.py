"""Broker reports: what the broker says we hold, kept apart from events (facts we assert).

Entry points: `BrokerPosition`, `BrokerSnapshot`, `stock_position_report(account, pos)`,
`future_position_report(account, pos)`.

Invariants:
- Quantities are signed book units (shares for stocks, contracts for futures): a Sell
  direction (short sale, day-trade short, short future) is negative.
- Symbols follow the books' convention (`2330`, `2330:MarginTrading`, `TXFL6`), so a
  report and our positions compare key by key.
- Stock reports must come from `list_positions(unit=Unit.Share)`: `Unit.Common` drops
  odd shares (Shioaji issue #177).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from execstate.domain.instruments import stock_symbol
from execstate.domain.money import to_price


class BrokerPosition(msgspec.Struct, frozen=True, gc=False):
    account: str
    symbol: str
    code: str
    quantity: int  # signed, book units
    avg_price: Decimal  # as the broker reports it (it may fold in the buy fee)
    last_price: Decimal | None = None
    pnl: Decimal | None = None


class BrokerSnapshot(msgspec.Struct, frozen=True):
    """Every position the broker reports for some accounts at one moment."""

    accounts: tuple[str, ...]
    positions: tuple[BrokerPosition, ...]
    ts: int  # time.time_ns() when the last query returned

    def quantities(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for p in self.positions:
            key = (p.account, p.symbol)
            out[key] = out.get(key, 0) + p.quantity
        return out


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def _price_or_none(x: Any, field: str) -> Decimal | None:
    try:
        return to_price(x, field)
    except ValueError:
        return None


def stock_position_report(account: str, pos: Any) -> BrokerPosition:
    """From a Shioaji `StockPosition` queried with `Unit.Share`."""
    quantity = int(pos.quantity)
    if _value(pos.direction) == "Sell":
        quantity = -quantity
    code = str(pos.code)
    return BrokerPosition(account, stock_symbol(code, _value(pos.cond)), code, quantity, to_price(pos.price, "price"),
                          _price_or_none(pos.last_price, "last_price"), Decimal(repr(float(pos.pnl))))


def future_position_report(account: str, pos: Any) -> BrokerPosition:
    """From a Shioaji `FuturePosition` (its `code` is the full code, e.g. `TXFL6`)."""
    quantity = int(pos.quantity)
    if _value(pos.direction) == "Sell":
        quantity = -quantity
    code = str(pos.code)
    return BrokerPosition(account, code, code, quantity, to_price(pos.price, "price"),
                          _price_or_none(pos.last_price, "last_price"), Decimal(repr(float(pos.pnl))))
