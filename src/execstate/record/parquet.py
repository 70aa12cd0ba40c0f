"""Position snapshots as Parquet files, one per snapshot, for offline readers (pandas, polars, DuckDB).

Entry points: `ParquetSnapshotWriter(directory).write(snapshot) -> Path`, `snapshot_table(snapshot)`.

Layout: `<dir>/<YYYY-MM-DD>/snapshot-<HHMMSS.fff>-<seq>.parquet`, date and time in Asia/Taipei
from `snapshot.ts`, so a day's files sort by time.

Invariants:
- Columns are the `PositionRecord` fields in order, then `seq` (int64) and `ts`
  (timestamp[ns, Asia/Taipei]); a snapshot with no positions is a file with no rows.
- Money and prices are `decimal128` and exact: scale 10 (the books' quantum), widened for a
  column whose values carry more decimal places, never rounded.
- A file appears whole or not at all (temp file, fsync, rename); writing the same snapshot
  again replaces its file with the same content.
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from execstate.domain.events import PositionRecord, PositionSnapshot

TAIPEI = ZoneInfo("Asia/Taipei")
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 10  # domain.money.BOOK_QUANTUM
_FIELDS = msgspec.structs.fields(PositionRecord)


def _arrow_type(annotation: object) -> pa.DataType:
    if annotation is int:
        return pa.int64()
    if annotation is str:
        return pa.string()
    return pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)  # Decimal and Decimal | None


def _decimal_type(values: list[Decimal | None]) -> pa.DataType:
    """decimal128 at the default scale, or wider when a value has more decimal places (exact, never rounded)."""
    scale = DECIMAL_SCALE
    for value in values:
        if value is not None:
            exponent = value.as_tuple().exponent
            if isinstance(exponent, int) and -exponent > scale:
                scale = -exponent
    if scale > DECIMAL_PRECISION:
        raise ValueError(f"scale={scale}: a value has more decimal places than decimal128 can hold")
    return pa.decimal128(DECIMAL_PRECISION, scale)


def snapshot_table(snapshot: PositionSnapshot) -> pa.Table:
    """The Arrow table of one snapshot: a row per position plus `seq` and `ts`."""
    n = len(snapshot.positions)
    columns, fields = [], []
    for f in _FIELDS:
        values = [getattr(record, f.name) for record in snapshot.positions]
        kind = _arrow_type(f.type)
        if pa.types.is_decimal(kind):
            kind = _decimal_type(values)
        columns.append(pa.array(values, type=kind))
        fields.append(pa.field(f.name, kind, nullable=f.name == "mark_price"))
    columns.append(pa.array([snapshot.seq] * n, type=pa.int64()))
    fields.append(pa.field("seq", pa.int64(), nullable=False))
    ts_type = pa.timestamp("ns", tz="Asia/Taipei")
    columns.append(pa.array([snapshot.ts] * n, type=ts_type))
    fields.append(pa.field("ts", ts_type, nullable=False))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


class ParquetSnapshotWriter:
    """Writes each snapshot to its own Parquet file under a per-day (Taipei) directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.files_written = 0

    def path_for(self, snapshot: PositionSnapshot) -> Path:
        """Where `write` puts a snapshot."""
        seconds, ns = divmod(snapshot.ts, 1_000_000_000)
        local = datetime.fromtimestamp(seconds, TAIPEI)
        name = f"snapshot-{local:%H%M%S}.{ns // 1_000_000:03d}-{snapshot.seq}.parquet"
        return self.directory / f"{local:%Y-%m-%d}" / name

    def write(self, snapshot: PositionSnapshot) -> Path:
        """Write one snapshot atomically; returns the file's path."""
        path = self.path_for(snapshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(snapshot_table(snapshot), tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.files_written += 1
        return path
