"""Exact money and price helpers.

Entry points: `to_price(value, field)`, `quantize_book`, `quantize_money`, `fmt_decimal`.

Invariants:
- No binary float ever enters the books: broker floats are converted through their shortest
  `repr` (26.85 -> Decimal("26.85")), which is the decimal the broker printed.
- A price is finite and >= 0 (bools are rejected).
- Bad input raises `FieldError` naming the field and the value.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from execstate.domain.errors import FieldError

ZERO = Decimal(0)
ONE = Decimal(1)

# Books keep up to 10 decimal places internally (cost basis); money shown to 4.
BOOK_QUANTUM = Decimal("1e-10")
MONEY_QUANTUM = Decimal("0.0001")

_CONTEXT = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)
decimal.DefaultContext.prec = 34


def to_price(value: object, field: str = "price") -> Decimal:
    """Convert a broker price (float, int, str or Decimal) to an exact, finite, >= 0 Decimal."""
    if isinstance(value, bool):
        raise FieldError(field, value, "a number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise FieldError(field, value, "a finite price")
        price = Decimal(repr(value))
    elif isinstance(value, (int, Decimal)):
        price = Decimal(value)
    elif isinstance(value, str):
        try:
            price = Decimal(value)
        except decimal.InvalidOperation:
            raise FieldError(field, value, "a decimal number") from None
    else:
        raise FieldError(field, value, "a number")
    if not price.is_finite():
        raise FieldError(field, value, "a finite price")
    if price < 0:
        raise FieldError(field, value, "a price >= 0")
    return price


def quantize_book(value: Decimal) -> Decimal:
    """Round an internal book value (cost basis) to the book quantum, half-even."""
    return value.quantize(BOOK_QUANTUM, context=_CONTEXT)


def quantize_money(value: Decimal) -> Decimal:
    """Round a money amount for display to 4 decimal places, half-even."""
    return value.quantize(MONEY_QUANTUM, context=_CONTEXT)


def fmt_decimal(value: Decimal) -> str:
    """A decimal string without exponent and without trailing zeros ("12.5", "0", "-3")."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text
