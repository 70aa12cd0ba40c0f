"""Average-cost position accounting as a pure function.

Entry points: `PositionState`, `apply(state, side, price, quantity, fee, tax) -> (state, realized_change)`,
`avg_price(state)`, `unrealized_pnl(state, mark)`.

Model: `cost` is the signed cost of the open quantity in price units (sum of signed
quantity * price, scaled down proportionally when the position is reduced). Then
- average price = cost / quantity (fees excluded),
- realized PnL is gross (price only): on a reduce, close or flip it changes by
  `(cost_after - cost_before - signed_qty * price) * multiplier`, which equals
  `(fill_price - avg_price) * closed_qty * multiplier`, signed by the side held;
- unrealized = (mark * quantity - cost) * multiplier.
Invariants (property-tested): quantity = sum of signed fills; realized + unrealized =
cash flow + mark value exactly, for every sequence; the average price lies within the
prices of the fills that built the open position; a flip is a close plus an open.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from execstate.domain.money import ZERO, quantize_book

_AVG_QUANTUM = Decimal("1e-6")


class PositionState(msgspec.Struct, frozen=True, gc=False):
    """One position's books. Immutable: `apply` returns a new one."""

    multiplier: Decimal
    quantity: int = 0  # signed: > 0 long, < 0 short (shares or contracts)
    cost: Decimal = ZERO  # signed cost of the open quantity, price units
    realized_pnl: Decimal = ZERO  # gross, TWD
    fees: Decimal = ZERO
    taxes: Decimal = ZERO


def apply(state: PositionState, side: str, price: Decimal, quantity: int, fee: Decimal = ZERO, tax: Decimal = ZERO) -> tuple[PositionState, Decimal]:
    """Book one fill; return the new state and the change in realized PnL."""
    signed = quantity if side == "Buy" else -quantity
    held = state.quantity
    after = held + signed
    if held == 0 or (held > 0) == (signed > 0):
        cost = state.cost + price * signed
        realized = ZERO
    elif after == 0 or (held > 0) != (after > 0):
        # close everything held; any remainder opens the other way at the fill price
        cost = price * after
        realized = (-state.cost + price * held) * state.multiplier
    else:
        cost = quantize_book(state.cost * after / held)
        realized = (cost - state.cost - price * signed) * state.multiplier
    # positional: (multiplier, quantity, cost, realized_pnl, fees, taxes)
    return PositionState(state.multiplier, after, cost, state.realized_pnl + realized, state.fees + fee, state.taxes + tax), realized


def avg_price(state: PositionState) -> Decimal:
    """Average trade price of the open quantity (fees excluded); 0 when flat."""
    if state.quantity == 0:
        return ZERO
    return (state.cost / state.quantity).quantize(_AVG_QUANTUM)


def unrealized_pnl(state: PositionState, mark: Decimal | None) -> Decimal:
    """(mark * quantity - cost) * multiplier; 0 without a mark or when flat."""
    if mark is None or state.quantity == 0:
        return ZERO
    return (mark * state.quantity - state.cost) * state.multiplier
