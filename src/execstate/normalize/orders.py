"""Order state machine: a transition table, and the book of the day's orders.

Entry points: `OrderBook.on_order_event(...)`, `OrderBook.on_fill(...)`, `OrderBook.rows()`
(immutable `OrderRow` copies for readers), `TRANSITIONS`, `OrderStatus`, `Outcome`.

The table maps (current status, event kind) to a target: a status, `BY_QTY` (Submitted,
PartFilled or Filled from the filled and live quantities), or `KEEP` (accepted, status
unchanged: a repeated event). A pair missing from the table is `late` when the report is
older (exchange time) than what the order already applied, e.g. an UpdatePrice delivered
after the fill that followed it: kept, counted as late. Otherwise it is an unexpected
transition: counted, logged, and the status is kept, never overwritten.
Invariants: the book belongs to the normalizer's thread; other threads read it only through
`Pipeline.on_worker(book.rows)`, which hands them copies. A late event never rolls a status
back (no path leads from Filled, Cancelled or Failed to a working status); a deal is never
refused by the table, since it is a fact the books must follow (an overfill or a deal on a
failed order is counted as unexpected).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

from execstate.domain.events import UNASSIGNED


class OrderStatus(str, enum.Enum):
    UNKNOWN = "Unknown"  # a deal arrived before any order event
    SUBMITTED = "Submitted"
    PART_FILLED = "PartFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    FAILED = "Failed"


class EventKind(str, enum.Enum):
    NEW = "New"
    NEW_FAILED = "NewFailed"  # New with op_code != "00", or op_type Reject
    CANCEL = "Cancel"
    UPDATE_QTY = "UpdateQty"
    UPDATE_PRICE = "UpdatePrice"
    OP_FAILED = "OpFailed"  # a Cancel / Update the broker refused
    FILL = "Fill"


_QTY_REPORTS = frozenset({EventKind.NEW, EventKind.UPDATE_QTY, EventKind.CANCEL, EventKind.UPDATE_PRICE})
BY_QTY = "by_qty"
KEEP = "keep"
_S = OrderStatus
_E = EventKind

TRANSITIONS: dict[tuple[OrderStatus | None, EventKind], object] = {
    (None, _E.NEW): BY_QTY,
    (None, _E.NEW_FAILED): _S.FAILED,
    (None, _E.CANCEL): _S.CANCELLED,
    (None, _E.UPDATE_QTY): BY_QTY,
    (None, _E.UPDATE_PRICE): BY_QTY,
    (None, _E.OP_FAILED): KEEP,
    (None, _E.FILL): _S.UNKNOWN,
    (_S.UNKNOWN, _E.NEW): BY_QTY,
    (_S.UNKNOWN, _E.CANCEL): _S.CANCELLED,
    (_S.UNKNOWN, _E.UPDATE_QTY): BY_QTY,
    (_S.UNKNOWN, _E.UPDATE_PRICE): KEEP,
    (_S.UNKNOWN, _E.OP_FAILED): KEEP,
    (_S.UNKNOWN, _E.FILL): KEEP,
    (_S.SUBMITTED, _E.NEW): KEEP,
    (_S.SUBMITTED, _E.NEW_FAILED): _S.FAILED,
    (_S.SUBMITTED, _E.CANCEL): _S.CANCELLED,
    (_S.SUBMITTED, _E.UPDATE_QTY): BY_QTY,
    (_S.SUBMITTED, _E.UPDATE_PRICE): KEEP,
    (_S.SUBMITTED, _E.OP_FAILED): KEEP,
    (_S.SUBMITTED, _E.FILL): BY_QTY,
    (_S.PART_FILLED, _E.NEW): KEEP,
    (_S.PART_FILLED, _E.CANCEL): _S.CANCELLED,
    (_S.PART_FILLED, _E.UPDATE_QTY): BY_QTY,
    (_S.PART_FILLED, _E.UPDATE_PRICE): KEEP,
    (_S.PART_FILLED, _E.OP_FAILED): KEEP,
    (_S.PART_FILLED, _E.FILL): BY_QTY,
    (_S.FILLED, _E.NEW): KEEP,
    (_S.FILLED, _E.OP_FAILED): KEEP,
    (_S.CANCELLED, _E.NEW): KEEP,
    (_S.CANCELLED, _E.CANCEL): KEEP,
    (_S.CANCELLED, _E.OP_FAILED): KEEP,
    (_S.CANCELLED, _E.FILL): KEEP,  # a deal reported after the cancel of the remainder
    (_S.FAILED, _E.NEW_FAILED): KEEP,
    (_S.FAILED, _E.OP_FAILED): KEEP,
}


class OrderRecord(msgspec.Struct, gc=False):
    """The running state of one order (mutable, owned by the normalizer thread; untracked by the GC)."""

    status: OrderStatus | None = None
    order_quantity: int | None = None  # book units; None until an order event arrives
    cancel_quantity: int = 0
    filled_quantity: int = 0
    strategy: str = ""
    symbol: str = ""
    last_ts: int = 0  # newest exchange time applied (ns)

    @property
    def live_quantity(self) -> int | None:
        if self.order_quantity is None:
            return None
        return self.order_quantity - self.cancel_quantity


class OrderRow(msgspec.Struct, frozen=True, gc=False):
    """One order of the day as readers see it: a copy of its `OrderRecord`, safe on any thread."""

    account: str
    order_id: str
    status: OrderStatus
    strategy: str  # "unassigned" until attributed
    symbol: str  # "" when no event told us yet
    order_quantity: int | None  # book units (shares or contracts); None: only deals seen so far
    cancel_quantity: int  # cumulative, book units
    filled_quantity: int  # book units
    live_quantity: int | None  # order_quantity - cancel_quantity
    last_ts: int  # newest exchange time applied, ns


@dataclass(frozen=True, slots=True)
class Outcome:
    status: OrderStatus
    expected: bool  # False: the pair was not in the table (counted, status kept)
    overfill: bool = False
    late: bool = False  # not in the table, but older than what was applied: kept, not an error
    notable: bool = False  # anything but a plain expected transition (one check on the hot path)


_OUTCOMES: dict[tuple, Outcome] = {}


def _outcome(status: OrderStatus, expected: bool, overfill: bool = False, late: bool = False) -> Outcome:
    """Outcomes are immutable, so one instance per combination is shared (no allocation per event)."""
    key = (status, expected, overfill, late)
    out = _OUTCOMES.get(key)
    if out is None:
        notable = status is OrderStatus.UNKNOWN or not expected or overfill or late
        out = _OUTCOMES[key] = Outcome(status, expected, overfill, late, notable)
    return out


def _by_qty(rec: OrderRecord) -> OrderStatus:
    live = rec.live_quantity
    if live is None:
        return OrderStatus.UNKNOWN
    if rec.filled_quantity == 0:
        return OrderStatus.CANCELLED if live <= 0 else OrderStatus.SUBMITTED
    return OrderStatus.FILLED if rec.filled_quantity >= live else OrderStatus.PART_FILLED


_WORKING = frozenset({OrderStatus.SUBMITTED, OrderStatus.PART_FILLED, OrderStatus.UNKNOWN})


class OrderBook:
    """All orders of the day by (account, order id), advanced through `TRANSITIONS`."""

    def __init__(self) -> None:
        self._orders: dict[tuple[str, str], OrderRecord] = {}

    def get(self, account: str, order_id: str) -> OrderRecord | None:
        return self._orders.get((account, order_id))

    def record(self, account: str, order_id: str) -> OrderRecord:
        key = (account, order_id)
        rec = self._orders.get(key)
        if rec is None:
            rec = self._orders[key] = OrderRecord()
        return rec

    def _advance(self, rec: OrderRecord, kind: EventKind, ts: int) -> Outcome:
        target = TRANSITIONS.get((rec.status, kind))
        late = ts < rec.last_ts
        rec.last_ts = max(rec.last_ts, ts)
        if target is None:
            current = rec.status or OrderStatus.UNKNOWN
            return _outcome(current, late, False, late)
        if target is KEEP:
            new = rec.status or OrderStatus.UNKNOWN
        elif target == BY_QTY:
            new = _by_qty(rec)
        else:
            new = target  # type: ignore[assignment]
        rec.status = new
        return _outcome(new, True)

    def on_order_event(self, account: str, order_id: str, kind: EventKind, order_quantity: int, cancel_quantity: int, ts: int = 0) -> Outcome:
        """Apply an order report; quantities are the report's totals in book units.

        A report the table does not allow is `late` (accepted, status kept) when its exchange
        time `ts` is older than the newest already applied, and unexpected otherwise.
        """
        return self.report(self.record(account, order_id), kind, order_quantity, cancel_quantity, ts)

    def report(self, rec: OrderRecord, kind: EventKind, order_quantity: int, cancel_quantity: int, ts: int) -> Outcome:
        """Apply an order report to an order record (from `record()`)."""
        if kind in _QTY_REPORTS:
            if rec.order_quantity is None or order_quantity > 0:
                rec.order_quantity = order_quantity
            rec.cancel_quantity = max(rec.cancel_quantity, cancel_quantity)  # cumulative: never back
        return self._advance(rec, kind, ts)

    def on_fill(self, account: str, order_id: str, quantity: int, ts: int = 0) -> Outcome:
        return self.fill(self.record(account, order_id), quantity, ts)

    def fill(self, rec: OrderRecord, quantity: int, ts: int) -> Outcome:
        """Apply a deal to an order record (from `record()`)."""
        rec.filled_quantity += quantity
        outcome = self._advance(rec, EventKind.FILL, ts)
        live = rec.live_quantity
        overfill = live is not None and rec.filled_quantity > live and rec.status is not OrderStatus.CANCELLED
        if not overfill:
            return outcome
        return _outcome(outcome.status, outcome.expected, overfill, outcome.late)

    def working(self) -> int:
        """Orders that may still fill."""
        return sum(1 for rec in self._orders.values() if rec.status in _WORKING)

    def in_flight(self) -> set[tuple[str, str]]:
        """(account, symbol) of every order that may still fill. Call on the worker thread."""
        return {(account, rec.symbol) for (account, _), rec in self._orders.items() if rec.status in _WORKING}

    def rows(self) -> list[OrderRow]:
        """Every order of the day, in the order first seen, as immutable copies. Call on the worker thread."""
        return [
            OrderRow(account, order_id, rec.status or OrderStatus.UNKNOWN, rec.strategy or UNASSIGNED, rec.symbol,
                     rec.order_quantity, rec.cancel_quantity, rec.filled_quantity, rec.live_quantity, rec.last_ts)
            for (account, order_id), rec in self._orders.items()
        ]

    def __len__(self) -> int:
        return len(self._orders)
