"""Instruments: what a symbol is, its units and its multiplier.

Entry points: `InstrumentKind`, `Instrument`, `stock_symbol`, `shares_per_unit`, `symbol_parts`.

Invariants:
- Stock quantities in the books are shares: a Common (also Fixing, BlockTrade) unit is a
  1000-share lot; Odd and IntradayOdd quantities are already shares.
- Futures and options quantities are contracts; value = price * multiplier * contracts.
- A stock position's symbol carries its order condition when it is not Cash
  (`2330`, `2330:MarginTrading`, `2330:ShortSelling`), because the broker keeps those
  positions apart; futures and options use `full_code` (`TXFL6`, `TXO27900L6`), which names
  the contract month.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import msgspec

SHARES_PER_LOT = 1000

# order_lot -> shares per quantity unit in Shioaji's stock payloads
_SHARES_PER_UNIT: dict[str, int] = {
    "Common": SHARES_PER_LOT,
    "Fixing": SHARES_PER_LOT,
    "BlockTrade": SHARES_PER_LOT,
    "Odd": 1,
    "IntradayOdd": 1,
}

class InstrumentKind(str, enum.Enum):
    """What kind of contract a symbol is."""

    STOCK = "STK"
    FUTURE = "FUT"
    OPTION = "OPT"


class Instrument(msgspec.Struct, frozen=True, gc=False):
    """A tradable symbol as the books see it."""

    symbol: str
    code: str
    kind: InstrumentKind
    multiplier: Decimal
    is_etf: bool = False


def shares_per_unit(order_lot: str) -> int | None:
    """Shares per quantity unit for a stock `order_lot`; None when the lot is unknown."""
    return _SHARES_PER_UNIT.get(order_lot)


def stock_symbol(code: str, order_cond: str) -> str:
    """The position symbol of a stock: the code, suffixed by the condition unless Cash."""
    return code if order_cond == "Cash" else f"{code}:{order_cond}"


def symbol_parts(symbol: str) -> tuple[str, str, str, str]:
    """(security_type, code, full_code, order_cond) from a books symbol.

    Stocks are digits (`2330`, `2330:MarginTrading`); derivatives use the full code, whose
    first three characters are the product root (`TXFL6` -> TXF future, `TXO27900L6` -> TXO
    option; a futures full code is root + month letter + year digit).
    """
    base, _, cond = symbol.partition(":")
    if base[:1].isdigit():
        return "STK", base, "", cond if cond and cond != "Odd" else "Cash"
    kind = "FUT" if len(base) <= 5 else "OPT"
    return kind, base[:3], base, ""
