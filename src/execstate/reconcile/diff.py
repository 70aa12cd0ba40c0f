"""Pure comparison of our books with a broker report.

Entry points: `book_quantities(positions) -> {(account, symbol): qty}`,
`diff(ours, broker, accounts, symbols=None) -> list[Discrepancy]`.

Invariants: pure functions of their arguments (no clock, no I/O); only accounts named in
`accounts` (and symbols in `symbols`, when given) are compared, so a targeted check never
reports on what it did not ask the broker about; results are sorted, so equal inputs give
equal outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec


class Discrepancy(msgspec.Struct, frozen=True):
    account: str
    symbol: str
    ours: int
    broker: int

    @property
    def delta(self) -> int:
        """What must be added to our books to match the broker."""
        return self.broker - self.ours

    @property
    def kind(self) -> str:
        if self.ours == 0:
            return "missing_ours"
        if self.broker == 0:
            return "missing_broker"
        return "quantity"


def book_quantities(positions: Mapping[Any, Any]) -> dict[tuple[str, str], int]:
    """Net quantity per (account, symbol) over all strategies, from a store view."""
    out: dict[tuple[str, str], int] = {}
    for key, state in positions.items():
        k = (key.account, key.symbol)
        out[k] = out.get(k, 0) + state.quantity
    return out


def diff(ours: Mapping[tuple[str, str], int], broker: Mapping[tuple[str, str], int], accounts: Iterable[str], symbols: Iterable[str] | None = None) -> list[Discrepancy]:
    """Every (account, symbol) where our net quantity differs from the broker's."""
    wanted_accounts = set(accounts)
    wanted_symbols = set(symbols) if symbols is not None else None
    keys = {k for k in (*ours, *broker) if k[0] in wanted_accounts and (wanted_symbols is None or k[1] in wanted_symbols)}
    out = [Discrepancy(a, s, ours.get((a, s), 0), broker.get((a, s), 0)) for a, s in keys]
    return sorted((d for d in out if d.ours != d.broker), key=lambda d: (d.account, d.symbol))
