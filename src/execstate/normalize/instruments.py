"""Resolve a payload's contract into an `Instrument` (symbol, multiplier, ETF flag).

Entry point: `InstrumentResolver.resolve(security_type, code, full_code, order_cond, order_lot)`.
Invariants: futures and options are keyed by `full_code`; a multiplier comes from the
`full_code` override, else the product root (`code`), else the configured default for the
kind, in which case `unknown_products` counts it so the operator can add the product.
"""

from __future__ import annotations

from decimal import Decimal

from execstate.config import Settings
from execstate.domain.instruments import Instrument, InstrumentKind, stock_symbol

_ONE = Decimal(1)
_ODD = frozenset({"Odd", "IntradayOdd"})


class InstrumentResolver:
    def __init__(self, settings: Settings) -> None:
        self._m = settings.multipliers
        self._combine_odd = settings.odd_lots.combine_with_board_lots
        self._stock = settings.fees.stock
        self._cache: dict[tuple[str, str, str, str, str], Instrument] = {}
        self.unknown_products: set[str] = set()

    def resolve(self, security_type: str, code: str, full_code: str, order_cond: str, order_lot: str) -> Instrument:
        key = (security_type, code, full_code, order_cond, order_lot)
        inst = self._cache.get(key)
        if inst is None:
            inst = self._cache[key] = self._build(*key)
        return inst

    def is_etf(self, code: str) -> bool:
        """ETF by explicit list, else by code prefix (Taiwan ETF codes start with "00")."""
        s = self._stock
        if code in s.etf_codes:
            return True
        if code in s.non_etf_codes:
            return False
        return code.startswith(s.etf_code_prefixes)

    def _build(self, security_type: str, code: str, full_code: str, order_cond: str, order_lot: str) -> Instrument:
        if security_type == "STK":
            symbol = stock_symbol(code, order_cond)
            if not self._combine_odd and order_lot in _ODD:
                symbol += ":Odd"
            return Instrument(symbol, code, InstrumentKind.STOCK, _ONE, self.is_etf(code))
        kind = InstrumentKind(security_type)
        m = self._m
        multiplier = m.overrides.get(full_code) or m.products.get(code)
        if multiplier is None:
            self.unknown_products.add(code)
            multiplier = m.default_option if kind is InstrumentKind.OPTION else m.default_future
        return Instrument(full_code, code, kind, multiplier)
