"""Events: immutable facts that flow through the pipeline.

Entry points: `RawExecEvent`, `OrderEvent`, `FillEvent`, `PositionDelta`, `PositionRecord`,
`PositionSnapshot`, `Correction` (+ `CORRECTION_STATE`), `ReconcileRecord`, `DeadLetter`. Field-by-field reference: `contracts/execution.md`.

Invariants:
- Every event is frozen and slotted (msgspec Structs); money and prices are `Decimal`.
- `event_id` is deterministic from broker identifiers, so a replay yields the same ids.
- `ts_event` is the broker's time and `ts_recv` the bridge's `time.time_ns()`, both int ns.
- `RawExecEvent` is a plain 3-tuple `(ts_ns, state, msg)` on the hot path; the NamedTuple
  only names its fields (the callback puts a bare tuple of the same layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import msgspec

Side = Literal["Buy", "Sell"]
UNASSIGNED = "unassigned"


class RawExecEvent(NamedTuple):
    """What the bridge hands to the normalizer, untouched."""

    ts_ns: int  # bridge receive time, time.time_ns()
    state: Any  # shioaji OrderState (compares and hashes equal to "SORDER"/"SDEAL"/...) or str
    msg: Mapping[str, Any]  # the payload exactly as Shioaji delivered it


class OrderEvent(msgspec.Struct, frozen=True, gc=False):
    """An order report from the broker (New, Cancel, UpdatePrice, UpdateQty, Reject)."""

    event_id: str
    account: str
    order_id: str
    seqno: str
    ordno: str
    strategy: str
    symbol: str
    code: str
    kind: str
    op_type: str
    op_code: str
    op_msg: str
    ok: bool
    action: Side
    price: Decimal
    order_quantity: int  # in book units (shares or contracts)
    cancel_quantity: int  # cumulative, book units
    modified_price: Decimal
    order_cond: str
    order_lot: str
    price_type: str
    time_in_force: str
    custom_field: str
    status: str  # order status after this event (see normalize.orders)
    ts_event: int
    ts_recv: int


class FillEvent(msgspec.Struct, frozen=True, gc=False):
    """One deal (execution) reported by the broker."""

    event_id: str
    account: str
    order_id: str
    seqno: str
    ordno: str
    exchange_seq: str
    strategy: str
    symbol: str
    code: str
    kind: str
    side: Side
    price: Decimal
    quantity: int  # book units: shares for stocks, contracts for futures and options
    multiplier: Decimal
    is_etf: bool
    order_cond: str
    order_lot: str
    market_type: str
    custom_field: str
    ts_event: int
    ts_recv: int
    correction: str = ""  # non-empty: a reconciliation correction (the reason), not a trade: no fees or taxes


class PositionDelta(msgspec.Struct, frozen=True, gc=False):
    """The change one fill (or correction) made to one position."""

    seq: int  # store sequence number, strictly increasing
    cause: str  # "fill" | "reorder" | "correction"
    source_id: str  # the FillEvent.event_id (or correction id) that caused it
    account: str
    strategy: str
    symbol: str
    quantity_before: int
    quantity_after: int
    avg_price: Decimal
    realized_pnl_change: Decimal
    realized_pnl: Decimal
    fee: Decimal
    tax: Decimal
    fees: Decimal
    taxes: Decimal
    ts_event: int
    ts_recv: int


class PositionRecord(msgspec.Struct, frozen=True, gc=False):
    """A position as readers see it."""

    account: str
    strategy: str
    symbol: str
    quantity: int
    avg_price: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    taxes: Decimal
    mark_price: Decimal | None
    multiplier: Decimal


class PositionSnapshot(msgspec.Struct, frozen=True, gc=False):
    """All positions at one store sequence number."""

    seq: int
    ts: int  # time.time_ns() when taken
    positions: tuple[PositionRecord, ...]


CORRECTION_STATE = "CORRECTION"  # raw-event state under which corrections travel and are journaled


class Correction(msgspec.Struct, frozen=True):
    """A reconciliation's correcting event: brings our net quantity to the broker's."""

    correction_id: str  # deterministic: C:{account}:{symbol}:{ts_ns}:{n}
    account: str
    strategy: str
    symbol: str
    security_type: str  # STK, FUT, OPT
    code: str  # stock code or product root
    order_cond: str  # stocks: Cash, MarginTrading, ...; "" for derivatives
    quantity: int  # signed change in book units
    price: str  # decimal string
    reason: str
    ts_ns: int


class ReconcileRecord(msgspec.Struct, frozen=True):
    """A reconciliation's outcome, as recorded (the reconciler's result, flattened)."""

    record_id: str  # R:{started_ns}:{reason}
    reason: str
    accounts: tuple[str, ...]
    started_ns: int
    duration_ms: float
    records_resubmitted: int
    recovered_fills: int
    discrepancies: str  # JSON list of {account, symbol, ours, broker}
    corrections: str  # JSON list of {account, strategy, symbol, quantity, price, reason}
    error: str
    halted: bool
    pnl_discrepancies: str = "[]"  # JSON list of {account, symbol, ours, broker, diff_twd, tolerance_twd}, TWD as decimal text


class DeadLetter(msgspec.Struct, frozen=True):
    """A raw event the normalizer rejected, kept for inspection."""

    reason: str
    state: str
    ts_recv: int
    msg: Any
