"""Parquet snapshots: exact decimals through pyarrow, pandas and polars; one file per snapshot per Taipei day."""

from datetime import datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from execstate.domain.events import PositionRecord, PositionSnapshot
from execstate.record.parquet import ParquetSnapshotWriter

TAIPEI = ZoneInfo("Asia/Taipei")
COLUMNS = ["account", "strategy", "symbol", "quantity", "avg_price", "realized_pnl", "unrealized_pnl", "fees", "taxes",
           "mark_price", "multiplier", "seq", "ts"]


def _ns(*parts: int, ms: int = 0, ns: int = 0) -> int:
    """Epoch ns of a Taipei wall-clock time."""
    return int(datetime(*parts, tzinfo=TAIPEI).timestamp()) * 1_000_000_000 + ms * 1_000_000 + ns


def _records() -> tuple[PositionRecord, ...]:
    return (
        PositionRecord(account="9A95-1234567", strategy="a", symbol="2330", quantity=3000, avg_price=D("612.333333"),
                       realized_pnl=D("-1234.5678901234"), unrealized_pnl=D("0.0000000001"), fees=D("2617"), taxes=D("0"),
                       mark_price=D("615.5"), multiplier=D("1")),
        PositionRecord(account="F002000-7654321", strategy="unassigned", symbol="TXFR1", quantity=-2, avg_price=D("21345"),
                       realized_pnl=D("123456789012345678.25"), unrealized_pnl=D("0"), fees=D("100"), taxes=D("17.07"),
                       mark_price=None, multiplier=D("200")),
    )


def test_round_trip_through_pyarrow_keeps_every_value_exact(tmp_path):
    # Arrange
    ts = _ns(2026, 5, 20, 9, 30, 1, ms=250, ns=123_456)
    snap = PositionSnapshot(seq=42, ts=ts, positions=_records())
    # Act
    path = ParquetSnapshotWriter(tmp_path).write(snap)
    table = pq.read_table(path)
    # Assert
    assert table.column_names == COLUMNS
    assert table.schema.field("avg_price").type == pa.decimal128(38, 10)
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="Asia/Taipei")
    assert table.schema.field("quantity").type == pa.int64() and table.schema.field("seq").type == pa.int64()
    rows = table.to_pylist()
    for row, record in zip(rows, snap.positions, strict=True):
        for name in COLUMNS[:11]:
            assert row[name] == getattr(record, name), name
        assert row["seq"] == 42
    assert table.column("ts").cast(pa.int64()).to_pylist() == [ts, ts]  # nanoseconds kept
    assert rows[1]["mark_price"] is None


def test_pandas_reads_exact_decimals_and_taipei_timestamps(tmp_path):
    # Arrange
    ts = _ns(2026, 5, 20, 13, 45, 0, ms=7, ns=9)
    path = ParquetSnapshotWriter(tmp_path).write(PositionSnapshot(seq=7, ts=ts, positions=_records()))
    # Act
    df = pd.read_parquet(path)
    # Assert
    assert list(df.columns) == COLUMNS
    assert df["realized_pnl"].tolist() == [D("-1234.5678901234"), D("123456789012345678.25")]
    assert df["unrealized_pnl"][0] == D("0.0000000001")
    assert df["quantity"].tolist() == [3000, -2]
    assert str(df["ts"].dt.tz) == "Asia/Taipei" and df["ts"][0].value == ts
    assert df["ts"][0].strftime("%Y-%m-%d %H:%M:%S") == "2026-05-20 13:45:00"
    assert df["mark_price"].isna().tolist() == [False, True]


def test_a_value_finer_than_the_books_quantum_widens_the_scale_instead_of_rounding(tmp_path):
    record = _records()[0]
    fine = PositionRecord(**{**{f: getattr(record, f) for f in record.__struct_fields__}, "avg_price": D("1.123456789012345")})
    path = ParquetSnapshotWriter(tmp_path).write(PositionSnapshot(seq=1, ts=_ns(2026, 5, 20, 9, 0, 0), positions=(fine,)))
    table = pq.read_table(path)
    assert table.schema.field("avg_price").type == pa.decimal128(38, 15)
    assert table.column("avg_price").to_pylist() == [D("1.123456789012345")]


def test_polars_reads_the_file_when_installed(tmp_path):
    polars = pytest.importorskip("polars", reason="polars is not installed")
    path = ParquetSnapshotWriter(tmp_path).write(PositionSnapshot(seq=3, ts=_ns(2026, 5, 20, 9, 0, 0), positions=_records()))
    df = polars.read_parquet(path)
    assert df.columns == COLUMNS
    assert [D(str(v)) for v in df["avg_price"].to_list()] == [D("612.333333"), D("21345")]


def test_files_are_named_by_taipei_day_time_and_seq(tmp_path):
    # Arrange: 23:59:59.999 and 00:00:00.000 Taipei fall on different days (UTC is still the same day)
    writer = ParquetSnapshotWriter(tmp_path)
    late = PositionSnapshot(seq=9, ts=_ns(2026, 5, 20, 23, 59, 59, ms=999, ns=999_999), positions=_records())
    early = PositionSnapshot(seq=10, ts=_ns(2026, 5, 21, 0, 0, 0), positions=_records())
    # Act
    paths = [writer.write(late), writer.write(early)]
    # Assert
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "2026-05-20/snapshot-235959.999-9.parquet",
        "2026-05-21/snapshot-000000.000-10.parquet",
    ]
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["2026-05-20", "2026-05-21", paths[0].name, paths[1].name])
    assert writer.files_written == 2


def test_a_day_of_files_sorts_by_time_and_reads_back_as_one_frame(tmp_path):
    # Arrange
    writer = ParquetSnapshotWriter(tmp_path)
    for k, seq in enumerate((5, 6, 7)):
        writer.write(PositionSnapshot(seq=seq, ts=_ns(2026, 5, 20, 9, 0, k), positions=_records()))
    # Act
    df = pd.read_parquet(tmp_path / "2026-05-20")
    # Assert
    assert sorted(p.name for p in (tmp_path / "2026-05-20").iterdir()) == [
        "snapshot-090000.000-5.parquet", "snapshot-090001.000-6.parquet", "snapshot-090002.000-7.parquet"]
    assert sorted(df["seq"].tolist()) == [5, 5, 6, 6, 7, 7]


def test_an_empty_snapshot_is_a_file_with_the_columns_and_no_rows(tmp_path):
    path = ParquetSnapshotWriter(tmp_path).write(PositionSnapshot(seq=1, ts=_ns(2026, 5, 20, 9, 0, 0), positions=()))
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.column_names == COLUMNS


def test_writing_the_same_snapshot_again_replaces_its_file_and_leaves_no_temp(tmp_path):
    writer = ParquetSnapshotWriter(tmp_path)
    snap = PositionSnapshot(seq=1, ts=_ns(2026, 5, 20, 9, 0, 0), positions=_records())
    first = writer.write(snap)
    second = writer.write(snap)
    assert first == second and pq.read_table(second).num_rows == 2
    assert [p.name for p in first.parent.iterdir()] == [first.name]
