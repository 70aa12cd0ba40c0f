"""PositionStore: the single writer of the books, with lock-free consistent reads.

Entry points: `PositionStore.apply_fill(fill) -> list[PositionDelta]`, `.publish()`, `.view()`,
`.snapshot(now_ns)`, `.set_mark(symbol, price)`, `.fills()`, `PositionKey`.

Invariants:
- One thread (the pipeline worker) calls `apply_fill` and `publish`; nothing else writes.
- Readers call `view()` / `snapshot()` from any thread without locks: `publish()` swaps in a
  new immutable `StoreView` (a copied mapping of immutable `PositionState`s) in one
  attribute assignment, so a reader sees all of a batch or none of it.
- Marks may be fed from any thread (quote ticks); unrealized PnL is computed at read time,
  so marks never touch the write path.
- Every applied fill yields one `PositionDelta` (cause "fill"), plus a "reorder" delta for
  each other position whose books changed when a late fill re-folded its group; `seq` is
  strictly increasing.
- Books depend only on the set of fills, never on their delivery order: fills are booked
  in exchange order (`canonical_key`), and a late one re-folds its (account, code) group.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import NamedTuple

from execstate.domain.events import FillEvent, PositionDelta, PositionRecord, PositionSnapshot
from execstate.domain.money import ZERO, to_price
from execstate.positions.fees import DayTradeBook, FeeSchedule, day_trade_step
from execstate.positions.ledger import PositionState, apply, avg_price, unrealized_pnl

_NS_PER_DAY = 86_400 * 1_000_000_000
_TAIPEI_OFFSET_NS = 8 * 3600 * 1_000_000_000


class PositionKey(NamedTuple):
    account: str
    strategy: str
    symbol: str


_new_key = tuple.__new__  # builds a PositionKey without NamedTuple's Python-level __new__


class StoreView(NamedTuple):
    """An immutable, consistent picture of all positions at store sequence `seq`."""

    seq: int
    positions: Mapping[PositionKey, PositionState]


def mark_key(symbol: str) -> str:
    """Marks are per traded code: `2330:MarginTrading` is marked by `2330`'s price."""
    return symbol.split(":", 1)[0]


class _Group:
    """All fills of one (account, code) in canonical order, with its day-trade book.

    Stock positions of one code in one account share day-trade matching across
    strategies and conditions, so they are booked together; a derivative's group is its
    (account, full_code).
    """

    __slots__ = ("fills", "last", "day_trades")

    def __init__(self) -> None:
        self.fills: list[FillEvent] = []  # in canonical order; FillEvents are not GC-tracked
        self.last: tuple = ()
        self.day_trades = DayTradeBook()


def canonical_key(fill: FillEvent) -> tuple:
    """Exchange order: broker time, then the exchange's deal sequence (shorter first, so an
    unpadded "9" precedes "10"), then the event id."""
    return (fill.ts_event, len(fill.exchange_seq), fill.exchange_seq, fill.event_id)


class PositionStore:
    """Positions keyed by (account, strategy, symbol); see the module docstring."""

    def __init__(self, fees: FeeSchedule) -> None:
        self._fees = fees
        self._positions: dict[PositionKey, PositionState] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._marks: dict[str, Decimal] = {}
        self._seq = 0
        self._view = StoreView(0, MappingProxyType({}))
        self.refolds = 0

    # --- write side (single writer) -------------------------------------------------
    def apply_fill(self, fill: FillEvent) -> list[PositionDelta]:
        """Book a fill; return its delta, plus `reorder` deltas for positions it re-folded.

        Fills are booked in exchange order. A fill older than the newest one already booked
        in its group (a reordered delivery) re-folds the group, so the books never depend
        on delivery order.
        """
        group_key = (fill.account, fill.code if fill.kind == "STK" else fill.symbol)
        group = self._groups.get(group_key)
        if group is None:
            group = self._groups[group_key] = _Group()
        key = _new_key(PositionKey, (fill.account, fill.strategy, fill.symbol))
        before = self._positions.get(key) or PositionState(fill.multiplier)
        order_key = canonical_key(fill)
        if order_key > group.last:
            group.fills.append(fill)
            group.last = order_key
            group.day_trades, state, fee, tax, realized = self._book(group.day_trades, before, fill)
            self._positions[key] = state
            return [self._delta("correction" if fill.correction else "fill", fill, key, before, state, fee, tax, realized)]
        return self._refold(group, order_key, fill, key, before)

    def _book(self, book: DayTradeBook, state: PositionState, fill: FillEvent) -> tuple:
        if fill.correction:  # not a trade: no fees, taxes or day-trade matching
            new, realized = apply(state, fill.side, fill.price, fill.quantity)
            return book, new, ZERO, ZERO, realized
        match = None
        if self._fees.tracks_day_trades(fill):
            day = (fill.ts_event + _TAIPEI_OFFSET_NS) // _NS_PER_DAY  # Taipei calendar day: day trades reset on it
            book, match = day_trade_step(book, day, fill.side, fill.price, fill.quantity)
        fee, tax = self._fees.charges(fill, match)
        new, realized = apply(state, fill.side, fill.price, fill.quantity, fee, tax)
        return book, new, fee, tax, realized

    def _refold(self, group: _Group, order_key: tuple, fill: FillEvent, key: PositionKey, before: PositionState) -> list[PositionDelta]:
        self.refolds += 1
        bisect.insort(group.fills, fill, key=canonical_key)
        book = DayTradeBook()
        states: dict[PositionKey, PositionState] = {}
        for f in group.fills:
            k = PositionKey(f.account, f.strategy, f.symbol)
            state = states.get(k) or PositionState(multiplier=f.multiplier)
            book, states[k], _, _, _ = self._book(book, state, f)
        group.day_trades = book
        # every delta carries the whole change of its position (after - before), so delta
        # changes always add up to the position totals, re-folded fills included
        after = states[key]
        deltas = [self._delta("correction" if fill.correction else "fill", fill, key, before, after, after.fees - before.fees, after.taxes - before.taxes, after.realized_pnl - before.realized_pnl)]
        for k, state in states.items():
            old = self._positions.get(k)
            self._positions[k] = state
            if k != key and old is not None and old != state:
                deltas.append(self._delta("reorder", fill, k, old, state, state.fees - old.fees, state.taxes - old.taxes, state.realized_pnl - old.realized_pnl))
        return deltas

    def _delta(self, cause: str, fill: FillEvent, key: PositionKey, before: PositionState, after: PositionState, fee: Decimal, tax: Decimal, realized: Decimal) -> PositionDelta:
        self._seq += 1
        return PositionDelta(  # positional (field order of PositionDelta): keywords cost ~4x here
            self._seq, cause, fill.event_id, key.account, key.strategy, key.symbol, before.quantity, after.quantity,
            avg_price(after), realized, after.realized_pnl, fee, tax, after.fees, after.taxes, fill.ts_event, fill.ts_recv,
        )

    def fills(self) -> list[FillEvent]:
        """Every fill and correction booked, each (account, code) group in canonical order.

        Writer thread only (call it through `Pipeline.on_worker`): the groups change as fills
        are booked. The list is a copy and the fills are immutable; reconciliation restates
        the books from them (`reconcile.pnl.open_costs`).
        """
        return [f for group in self._groups.values() for f in group.fills]

    def publish(self) -> StoreView:
        """Make everything applied so far visible to readers, atomically."""
        if self._view.seq != self._seq:
            self._view = StoreView(self._seq, MappingProxyType(dict(self._positions)))
        return self._view

    # --- any thread -------------------------------------------------------------------
    def set_mark(self, symbol: str, price: object) -> None:
        """Feed a mark price (e.g. last trade from a quote tick) for a code or full_code."""
        self._marks[mark_key(symbol)] = to_price(price, "mark_price")

    def view(self) -> StoreView:
        """The latest published view. Lock-free; never blocks the writer."""
        return self._view

    def snapshot(self, now_ns: int) -> PositionSnapshot:
        """Records for every position in the latest view, with unrealized PnL at current marks."""
        view = self._view
        marks = self._marks
        records = []
        for key, state in sorted(view.positions.items()):
            mark = marks.get(mark_key(key.symbol))
            records.append(
                PositionRecord(
                    account=key.account,
                    strategy=key.strategy,
                    symbol=key.symbol,
                    quantity=state.quantity,
                    avg_price=avg_price(state),
                    realized_pnl=state.realized_pnl,
                    unrealized_pnl=unrealized_pnl(state, mark),
                    fees=state.fees,
                    taxes=state.taxes,
                    mark_price=mark,
                    multiplier=state.multiplier,
                )
            )
        return PositionSnapshot(seq=view.seq, ts=now_ns, positions=tuple(records))
