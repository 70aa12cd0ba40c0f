"""The ClickHouse sink in a child process: same answers and errors as in-process, survives its child."""

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest

from execstate.domain.events import FillEvent
from execstate.record.clickhouse import ClickHouseSink, QueryRefused
from execstate.record.process_sink import ProcessSink


def _fill(i: int, price: str = "26.85") -> FillEvent:
    return FillEvent(f"F:A:o:{i}", "9A95-1234567", "o", "1", "x", str(i), "momo", "2330", "2330", "STK", "Buy", Decimal(price),
                     1000, Decimal(1), False, "Cash", "Common", "", "", 1_779_333_919_920_000_123 + i, 1_779_333_919_920_000_999 + i)


@pytest.fixture
def data_dir():
    return Path(tempfile.mkdtemp(prefix="es-ps-", dir="/tmp"))


def test_rows_written_by_the_child_read_back_exactly_and_once(data_dir):
    sink = ProcessSink(f"chdb://{data_dir}")
    try:
        sink.ensure_schema()
        assert sink.write({"fills": [_fill(1), _fill(2, "0.0001")]}) == 2
        assert sink.write({"fills": [_fill(1)]}) == 1  # a re-send
        cols, rows = sink.query("SELECT event_id, price, toUnixTimestamp64Nano(ts_event) FROM fills FINAL ORDER BY event_id")
        assert cols == ("event_id", "price", "toUnixTimestamp64Nano(ts_event)")
        assert rows == [("F:A:o:1", Decimal("26.85"), 1_779_333_919_920_000_124), ("F:A:o:2", Decimal("0.0001"), 1_779_333_919_920_000_125)]
        assert sink.count("fills") == 2
    finally:
        sink.close()


def test_errors_keep_their_meaning_across_the_process_boundary(data_dir):
    sink = ProcessSink(f"chdb://{data_dir}")
    try:
        sink.ensure_schema()
        with pytest.raises(QueryRefused):
            sink.query("DROP TABLE fills")
        with pytest.raises(ValueError, match="too_big|integer digits"):
            sink.write({"fills": [_fill(3, "1" + "0" * 20)]})  # the recorder parks such data
    finally:
        sink.close()


def test_a_dead_child_is_replaced_and_close_frees_the_data_directory(data_dir):
    sink = ProcessSink(f"chdb://{data_dir}")
    sink.ensure_schema()
    sink.write({"fills": [_fill(1)]})
    sink._proc.kill()
    sink._proc.join()
    assert sink.write({"fills": [_fill(2)]}) == 1  # a new child took over
    assert sink.restarts == 1
    sink.close()
    direct = ClickHouseSink(f"chdb://{data_dir}")  # one process at a time: the child is gone
    try:
        assert direct.count("fills") == 2
    finally:
        direct.close()
