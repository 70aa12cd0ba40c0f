"""Which event goes to which ClickHouse table (the recorder's one mapping).

Entry points: `TABLES` (table name -> event type), `table_for(event)`.
Invariants: every recorded event type has exactly one table; a table's rows are keyed on a
deterministic id derived from the event (see contracts/execution.md), so a retried or
replayed insert never duplicates a row (ReplacingMergeTree).
"""

from __future__ import annotations

from typing import Any

from execstate.domain.events import DeadLetter, FillEvent, OrderEvent, PositionDelta, PositionSnapshot, ReconcileRecord

TABLES: dict[str, type] = {
    "orders": OrderEvent,
    "fills": FillEvent,
    "position_deltas": PositionDelta,
    "position_snapshots": PositionSnapshot,  # one row per position per snapshot
    "dead_letters": DeadLetter,
    "reconciliations": ReconcileRecord,
}
_BY_TYPE = {event_type: name for name, event_type in TABLES.items()}


def table_for(event: Any) -> str:
    """The table an event is recorded in; ValueError for a type that is not recorded."""
    try:
        return _BY_TYPE[type(event)]
    except KeyError:
        raise ValueError(f"event type={type(event).__name__!r}: expected one of {', '.join(t.__name__ for t in TABLES.values())}") from None
