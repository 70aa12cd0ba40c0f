"""Events -> Arrow tables, column by column, with the exact types of `schemas/*.sql`.

Entry points: `to_arrow(table, events) -> pyarrow.Table`, `row_count(table, events)`,
`arrow_schema(table)`, `KEYS` (table -> the columns of its ReplacingMergeTree key, the
`ORDER BY` of its schema), `dead_letter_id(dead)`, `dead_letter_json(msg)`.

Invariants:
- Money and prices become `decimal128(precision, scale)` straight from `Decimal`: each value
  is quantized to the column's scale, half-even, and never passes through a binary float (a
  float where a Decimal belongs is an error). A value with more integer digits than the
  column holds raises `ValueError` naming table, column and value; nothing is truncated.
- Timestamps (int ns since the epoch, UTC) become `timestamp('ns', tz='Asia/Taipei')`: the
  same instant, exact to the nanosecond.
- Every row carries a deterministic key (`KEYS`): a replayed or retried event maps to the
  same key, so ClickHouse's ReplacingMergeTree keeps it once. `seq` is never part of a key
  (it is a per-run counter).
- position_snapshots gets one row per `PositionRecord`, with the snapshot's `seq` and `ts`.
- Columns are built as lists (one pass per column), never as row dicts.
"""

from __future__ import annotations

import decimal
import hashlib
import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

import pyarrow as pa

from execstate.domain.events import DeadLetter, PositionSnapshot
from execstate.domain.payloads import to_plain
from execstate.record.tables import TABLES

TZ = "Asia/Taipei"
TIMESTAMP = pa.timestamp("ns", tz=TZ)
MONEY = ("decimal", 18, 4)  # prices, fees, taxes, multipliers: Decimal(18, 4)
BOOK = ("decimal", 38, 10)  # average prices and PnL: the ledger keeps 10 decimal places
NULLABLE_MONEY = ("decimal?", 18, 4)
STR, INT, BOOL, FLOAT, TS, STR_LIST = ("str",), ("int",), ("bool",), ("float",), ("ts",), ("str_list",)

_ORDER_COLUMNS: tuple[tuple[str, tuple], ...] = (
    ("event_id", STR), ("account", STR), ("order_id", STR), ("seqno", STR), ("ordno", STR),
    ("strategy", STR), ("symbol", STR), ("code", STR), ("kind", STR), ("op_type", STR),
    ("op_code", STR), ("op_msg", STR), ("ok", BOOL), ("action", STR), ("price", MONEY),
    ("order_quantity", INT), ("cancel_quantity", INT), ("modified_price", MONEY),
    ("order_cond", STR), ("order_lot", STR), ("price_type", STR), ("time_in_force", STR),
    ("custom_field", STR), ("status", STR), ("ts_event", TS), ("ts_recv", TS),
)
_FILL_COLUMNS: tuple[tuple[str, tuple], ...] = (
    ("event_id", STR), ("account", STR), ("order_id", STR), ("seqno", STR), ("ordno", STR),
    ("exchange_seq", STR), ("strategy", STR), ("symbol", STR), ("code", STR), ("kind", STR),
    ("side", STR), ("price", MONEY), ("quantity", INT), ("multiplier", MONEY), ("is_etf", BOOL),
    ("order_cond", STR), ("order_lot", STR), ("market_type", STR), ("custom_field", STR),
    ("ts_event", TS), ("ts_recv", TS), ("correction", STR),
)
_DELTA_COLUMNS: tuple[tuple[str, tuple], ...] = (
    ("seq", INT), ("cause", STR), ("source_id", STR), ("account", STR), ("strategy", STR),
    ("symbol", STR), ("quantity_before", INT), ("quantity_after", INT), ("avg_price", BOOK),
    ("realized_pnl_change", BOOK), ("realized_pnl", BOOK), ("fee", MONEY), ("tax", MONEY),
    ("fees", MONEY), ("taxes", MONEY), ("ts_event", TS), ("ts_recv", TS),
)
_RECORD_FIELDS: tuple[tuple[str, tuple], ...] = (
    ("account", STR), ("strategy", STR), ("symbol", STR), ("quantity", INT), ("avg_price", BOOK),
    ("realized_pnl", BOOK), ("unrealized_pnl", BOOK), ("fees", MONEY), ("taxes", MONEY),
    ("mark_price", NULLABLE_MONEY), ("multiplier", MONEY),
)
_SNAPSHOT_COLUMNS = (("seq", INT), ("ts", TS), *_RECORD_FIELDS)
_DEAD_LETTER_COLUMNS: tuple[tuple[str, tuple], ...] = (
    ("letter_id", STR), ("reason", STR), ("state", STR), ("ts_recv", TS), ("msg", STR),
)
_RECONCILE_COLUMNS: tuple[tuple[str, tuple], ...] = (
    ("record_id", STR), ("reason", STR), ("accounts", STR_LIST), ("started_ns", TS),
    ("duration_ms", FLOAT), ("records_resubmitted", INT), ("recovered_fills", INT),
    ("discrepancies", STR), ("corrections", STR), ("error", STR), ("halted", BOOL), ("pnl_discrepancies", STR),
)

COLUMNS: dict[str, tuple[tuple[str, tuple], ...]] = {
    "orders": _ORDER_COLUMNS,
    "fills": _FILL_COLUMNS,
    "position_deltas": _DELTA_COLUMNS,
    "position_snapshots": _SNAPSHOT_COLUMNS,
    "dead_letters": _DEAD_LETTER_COLUMNS,
    "reconciliations": _RECONCILE_COLUMNS,
}

# The ReplacingMergeTree key of each table (its ORDER BY): what makes a row the same row.
KEYS: dict[str, tuple[str, ...]] = {
    "orders": ("event_id",),
    "fills": ("event_id",),
    "position_deltas": ("account", "strategy", "symbol", "source_id", "cause"),
    "position_snapshots": ("account", "strategy", "symbol", "ts"),
    "dead_letters": ("letter_id",),
    "reconciliations": ("record_id",),
}


def _arrow_type(kind: tuple) -> pa.DataType:
    tag = kind[0]
    if tag in ("decimal", "decimal?"):
        return pa.decimal128(kind[1], kind[2])
    return {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_(), "float": pa.float64(),
            "ts": TIMESTAMP, "str_list": pa.list_(pa.string())}[tag]


_SCHEMAS: dict[str, pa.Schema] = {
    table: pa.schema([pa.field(name, _arrow_type(kind), nullable=kind[0] == "decimal?") for name, kind in columns])
    for table, columns in COLUMNS.items()
}
assert set(COLUMNS) == set(TABLES) == set(KEYS)


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema `to_arrow` produces for a table (every column but `recorded_at`)."""
    _check_table(table)
    return _SCHEMAS[table]


# --- ids ------------------------------------------------------------------------------

def dead_letter_json(msg: Any) -> str:
    """A dead letter's payload as JSON text: sorted keys, NaN / Infinity kept as tokens."""
    return json.dumps(to_plain(msg), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def dead_letter_id(dead: DeadLetter, msg_json: str | None = None) -> str:
    """Deterministic id of a dead letter: blake2b-128 (hex) of state, ts_recv, reason and msg JSON."""
    text = msg_json if msg_json is not None else dead_letter_json(dead.msg)
    data = "\x1f".join((dead.state, str(dead.ts_recv), dead.reason, text)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# --- row extraction (events -> one tuple per row, in column order) -----------------------

def _struct_rows(columns: Sequence[tuple[str, tuple]]) -> Callable[[list], list[tuple]]:
    getter = attrgetter(*(name for name, _ in columns))
    return lambda events: [getter(event) for event in events]


def _snapshot_rows(snapshots: list[PositionSnapshot]) -> list[tuple]:
    record = attrgetter(*(name for name, _ in _RECORD_FIELDS))
    return [(snap.seq, snap.ts, *record(rec)) for snap in snapshots for rec in snap.positions]


def _dead_letter_rows(letters: list[DeadLetter]) -> list[tuple]:
    rows = []
    for dead in letters:
        text = dead_letter_json(dead.msg)
        rows.append((dead_letter_id(dead, text), dead.reason, dead.state, dead.ts_recv, text))
    return rows


def _reconcile_rows(records: list) -> list[tuple]:
    get = attrgetter(*(name for name, _ in _RECONCILE_COLUMNS))
    rows = []
    for rec in records:
        row = get(rec)
        rows.append((row[0], row[1], list(row[2]), *row[3:]))
    return rows


_FLAT_STRUCTS = frozenset({"orders", "fills", "position_deltas"})  # a column is an attribute of the event
_ROWS: dict[str, Callable[[list], list[tuple]]] = {
    "orders": _struct_rows(_ORDER_COLUMNS),
    "fills": _struct_rows(_FILL_COLUMNS),
    "position_deltas": _struct_rows(_DELTA_COLUMNS),
    "position_snapshots": _snapshot_rows,
    "dead_letters": _dead_letter_rows,
    "reconciliations": _reconcile_rows,
}


# --- columns --------------------------------------------------------------------------

_QUANTIZED: dict[tuple[int, int], dict[Decimal, Decimal]] = {}
_QUANTIZED_MAX = 200_000


def _decimal_array(table: str, column: str, values: Sequence[Any], precision: int, scale: int, nullable: bool) -> pa.Array:
    """Quantize to the column scale (half-even) and build decimal128; overflow is an error.

    Quantized values are cached per column type: prices sit on a tick grid and fees and
    multipliers repeat, so most values are looked up, not re-quantized (equal Decimals
    quantize to the same value, whatever their exponent)."""
    quantum = Decimal(1).scaleb(-scale)
    # prec = the column's precision: a value needing more digits raises InvalidOperation
    ctx = decimal.Context(prec=precision, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])
    quantize = Decimal.quantize
    cache = _QUANTIZED.setdefault((precision, scale), {})
    if len(cache) > _QUANTIZED_MAX:
        cache.clear()
    cached = cache.get
    out: list[Decimal | None] = []
    append = out.append
    for value in values:
        hit = cached(value) if type(value) is Decimal else None
        if hit is not None:
            append(hit)
            continue
        if type(value) is not Decimal:
            if value is None and nullable:
                append(None)
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{table}.{column}={value!r}: expected a Decimal (never a float)")
            value = Decimal(value)
        try:
            quantized = quantize(value, quantum, context=ctx)
        except decimal.InvalidOperation:
            quantized = None
        if quantized is None or not quantized.is_finite():
            expected = f"at most {precision - scale} integer digits" if value.is_finite() else "a finite number"
            raise ValueError(f"{table}.{column}={value!r}: expected {expected} (Decimal({precision}, {scale}))")
        cache[value] = quantized
        append(quantized)
    return pa.array(out, pa.decimal128(precision, scale))


def _array(table: str, column: str, kind: tuple, values: Sequence[Any]) -> pa.Array:
    tag = kind[0]
    if tag in ("decimal", "decimal?"):
        return _decimal_array(table, column, values, kind[1], kind[2], tag == "decimal?")
    if tag == "ts":
        if set(map(type, values)) - {int}:  # in C; pyarrow alone would truncate a float
            bad = next(v for v in values if type(v) is not int)
            raise ValueError(f"{table}.{column}={bad!r}: expected int nanoseconds since the epoch")
    elif tag == "float":
        values = [float(v) for v in values]
    try:
        return pa.array(values, _arrow_type(kind))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise ValueError(f"{table}.{column}: {exc}") from None


def _check_table(table: str) -> None:
    if table not in COLUMNS:
        raise ValueError(f"table={table!r}: expected one of {', '.join(COLUMNS)}")


def to_arrow(table: str, events: list) -> pa.Table:
    """Build the Arrow table for `table` (a key of `TABLES`) from its events.

    Raises ValueError for an unknown table, an event of another type, or a value the column
    cannot hold exactly (named as table.column=value).
    """
    _check_table(table)
    expected = TABLES[table]
    if set(map(type, events)) - {expected}:  # in C
        wrong = next(e for e in events if type(e) is not expected)
        raise ValueError(f"{table}: got {type(wrong).__name__}, expected {expected.__name__}")
    columns = COLUMNS[table]
    if table in _FLAT_STRUCTS:  # one C-level pass per column: no row tuples, no transpose
        by_column = [list(map(attrgetter(name), events)) for name, _ in columns]
    else:
        rows = _ROWS[table](events)
        by_column = list(zip(*rows)) if rows else [() for _ in columns]
    arrays = [_array(table, name, kind, values) for (name, kind), values in zip(columns, by_column)]
    return pa.Table.from_arrays(arrays, schema=_SCHEMAS[table])


def row_count(table: str, events: list) -> int:
    """How many rows `to_arrow(table, events)` produces (snapshots: one per position)."""
    _check_table(table)
    if table == "position_snapshots":
        return sum(len(snap.positions) for snap in events)
    return len(events)
