"""Spool: exact round trip, put order across restarts, bounded size, crash leftovers and corrupt files."""

from decimal import Decimal as D

import msgspec

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execstate.domain.events import DeadLetter, FillEvent, OrderEvent, PositionDelta, PositionRecord, PositionSnapshot, ReconcileRecord
from execstate.record.spool import BAD_DIR, Spool, SpoolCorrupt, SpoolFull, batch_rows

TS = 1_779_333_920_123_456_789  # ns: exact beyond float precision


def _fill(i: int, price: str = "612.5") -> FillEvent:
    return FillEvent(
        event_id=f"F:{i}", account="9A95-1234567", order_id=f"o{i}", seqno="1", ordno="A", exchange_seq=f"{i:06d}",
        strategy="a", symbol="2330", code="2330", kind="STK", side="Buy", price=D(price), quantity=1000, multiplier=D(1),
        is_etf=False, order_cond="Cash", order_lot="Common", market_type="", custom_field="",
        ts_event=TS + i, ts_recv=TS + i + 7,
    )


def _order(i: int) -> OrderEvent:
    return OrderEvent(
        event_id=f"O:{i}", account="9A95-1234567", order_id=f"o{i}", seqno="1", ordno="A", strategy="a", symbol="TXFR1",
        code="TXF", kind="FUT", op_type="New", op_code="00", op_msg="", ok=True, action="Sell", price=D("21345.5"),
        order_quantity=2, cancel_quantity=0, modified_price=D("0"), order_cond="", order_lot="", price_type="LMT",
        time_in_force="ROD", custom_field="", status="Submitted", ts_event=TS, ts_recv=TS + 1,
    )


def _record(symbol: str, mark: D | None) -> PositionRecord:
    return PositionRecord(
        account="9A95-1234567", strategy="a", symbol=symbol, quantity=-3, avg_price=D("101.123456"),
        realized_pnl=D("-12.3456789012"), unrealized_pnl=D("0"), fees=D("20"), taxes=D("1.5"), mark_price=mark, multiplier=D("2000"),
    )


def _snapshot(seq: int, n: int = 2) -> PositionSnapshot:
    return PositionSnapshot(seq=seq, ts=TS, positions=tuple(_record(f"S{k}", D("99.95") if k % 2 else None) for k in range(n)))


def _every_table() -> dict[str, list]:
    return {
        "orders": [_order(1)],
        "fills": [_fill(1, "0.0001"), _fill(2, "123456789012.1234567890")],
        "position_deltas": [PositionDelta(
            seq=7, cause="fill", source_id="F:1", account="9A95-1234567", strategy="a", symbol="2330", quantity_before=0,
            quantity_after=1000, avg_price=D("612.500000"), realized_pnl_change=D("0"), realized_pnl=D("-0.0000000001"),
            fee=D("872"), tax=D("0"), fees=D("872"), taxes=D("0"), ts_event=TS, ts_recv=TS + 1)],
        "position_snapshots": [_snapshot(7, 3)],
        "dead_letters": [DeadLetter(reason="price=nan: expected a finite price", state="SDEAL", ts_recv=TS,
                                    msg={"price": None, "n": [1, 2]})],
        "reconciliations": [ReconcileRecord(
            record_id="R:1:poll", reason="poll", accounts=("9A95-1234567", "F002000-7654321"), started_ns=TS, duration_ms=12.5,
            records_resubmitted=0, recovered_fills=1, discrepancies="[]", corrections="[]", error="", halted=False)],
    }


def test_put_then_get_round_trips_every_table_exactly(tmp_path):
    # Arrange
    spool = Spool(tmp_path, max_bytes=1 << 20)
    batch = _every_table()
    # Act
    entry = spool.put(batch)
    back = spool.get(entry)
    # Assert
    assert back == batch
    assert back["fills"][1].price == D("123456789012.1234567890") and str(back["fills"][1].price) == "123456789012.1234567890"
    assert back["fills"][0].ts_recv == TS + 8
    assert type(back["position_snapshots"][0].positions) is tuple
    assert back["position_snapshots"][0].positions[0].mark_price is None
    assert entry.rows == batch_rows(batch) == 1 + 2 + 1 + 3 + 1 + 1


_decimals = st.decimals(allow_nan=False, allow_infinity=False, min_value=D("-1e20"), max_value=D("1e20"), places=None)


@settings(max_examples=60, deadline=None)
@given(prices=st.lists(_decimals, min_size=1, max_size=5), ts=st.integers(0, 2**63 - 1), text=st.text(max_size=20))
def test_any_decimal_int_and_text_round_trips_exactly(tmp_path_factory, prices, ts, text):
    spool = Spool(tmp_path_factory.mktemp("spool"), max_bytes=1 << 20)
    fills = [msgspec.structs.replace(_fill(k, "1"), price=price, ts_event=ts, custom_field=text) for k, price in enumerate(prices)]
    back = spool.get(spool.put({"fills": fills}))["fills"]
    assert back == fills
    assert [str(f.price) for f in back] == [str(p) for p in prices]  # same digits, same exponent


def test_empty_tables_are_omitted_and_unknown_tables_refused(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.get(spool.put({"fills": [_fill(1)], "orders": []})) == {"fills": [_fill(1)]}
    with pytest.raises(ValueError, match="trades"):
        spool.put({"trades": [_fill(1)]})


def test_entries_come_back_in_put_order_and_a_restart_continues_numbering(tmp_path):
    # Arrange
    first = Spool(tmp_path, max_bytes=1 << 20)
    old = [first.put({"fills": [_fill(i)]}) for i in range(12)]  # past 9 and 10: lexical order must stay numeric
    first.ack(old[0])
    # Act
    second = Spool(tmp_path, max_bytes=1 << 20)
    new = second.put({"fills": [_fill(99)]})
    # Assert
    entries = list(second)
    assert [e.seq for e in entries] == [e.seq for e in old[1:]] + [new.seq]
    assert new.seq == old[-1].seq + 1
    assert sorted(p.name for p in tmp_path.glob("*.batch")) == [e.path.name for e in entries]
    assert [second.get(e)["fills"][0].event_id for e in entries] == [f"F:{i}" for i in range(1, 12)] + ["F:99"]
    assert second.oldest() == entries[0]


def test_ack_deletes_the_file_and_updates_the_metrics(tmp_path):
    # Arrange
    spool = Spool(tmp_path, max_bytes=1 << 20, wall_clock_ns=lambda: 1_000_000_000_000)
    a = spool.put({"fills": [_fill(1), _fill(2)]})
    b = spool.put({"position_snapshots": [_snapshot(1, 5)]})
    assert (len(spool), spool.rows(), spool.size_bytes()) == (2, 7, a.nbytes + b.nbytes)
    assert spool.oldest_age_s(now=1_002.5) == pytest.approx(2.5)
    # Act
    spool.ack(a)
    # Assert
    assert not a.path.exists() and b.path.exists()
    assert (len(spool), spool.rows(), spool.size_bytes(), spool.oldest()) == (1, 5, b.nbytes, b)
    spool.ack(b)
    assert (len(spool), spool.rows(), spool.size_bytes(), spool.oldest(), spool.oldest_age_s(now=5.0)) == (0, 0, 0, None, 0.0)


def test_a_put_past_max_bytes_raises_spool_full_and_writes_nothing(tmp_path):
    # Arrange
    probe = Spool(tmp_path / "probe", max_bytes=1 << 20).put({"fills": [_fill(1)]})
    spool = Spool(tmp_path / "s", max_bytes=2 * probe.nbytes)
    spool.put({"fills": [_fill(1)]})
    spool.put({"fills": [_fill(2)]})
    # Act / Assert
    with pytest.raises(SpoolFull, match="max_bytes"):
        spool.put({"fills": [_fill(3)]})
    assert len(spool) == 2 and spool.size_bytes() == 2 * probe.nbytes
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [e.path.name for e in spool]
    spool.ack(spool.oldest())
    spool.put({"fills": [_fill(3)]})  # room again after an ack
    assert [spool.get(e)["fills"][0].event_id for e in spool] == ["F:2", "F:3"]


def test_leftover_tmp_from_a_crash_mid_write_is_removed_at_open(tmp_path):
    # Arrange
    spool = Spool(tmp_path, max_bytes=1 << 20)
    kept = spool.put({"fills": [_fill(1)]})
    torn = tmp_path / f"{kept.seq + 1:016d}.batch.tmp"
    torn.write_bytes(kept.path.read_bytes()[:40])
    # Act
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    # Assert
    assert not torn.exists() and reopened.tmp_removed == 1
    assert [e.seq for e in reopened] == [kept.seq]
    assert reopened.put({"fills": [_fill(2)]}).seq == kept.seq + 2  # never reuses a name a crash touched


@pytest.mark.parametrize("damage", ["truncate", "flip_payload_byte", "garbage", "empty"])
def test_a_corrupt_committed_file_is_quarantined_with_a_reason_at_open(tmp_path, damage):
    # Arrange
    spool = Spool(tmp_path, max_bytes=1 << 20)
    good1 = spool.put({"fills": [_fill(1)]})
    bad = spool.put({"fills": [_fill(2)]})
    good2 = spool.put({"fills": [_fill(3)]})
    data = bad.path.read_bytes()
    damaged = {"truncate": data[:-5], "flip_payload_byte": data[:30] + bytes([data[30] ^ 0xFF]) + data[31:],
               "garbage": b"not a spool file at all", "empty": b""}[damage]
    bad.path.write_bytes(damaged)
    # Act
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    # Assert
    assert reopened.corrupt == 1
    assert [e.seq for e in reopened] == [good1.seq, good2.seq]
    assert reopened.rows() == 2
    assert (tmp_path / BAD_DIR / bad.path.name).read_bytes() == damaged
    assert (tmp_path / BAD_DIR / f"{bad.path.name}.reason").read_text().strip()
    assert reopened.put({"fills": [_fill(4)]}).seq == good2.seq + 1


def test_a_file_damaged_after_open_is_quarantined_by_get(tmp_path):
    # Arrange
    spool = Spool(tmp_path, max_bytes=1 << 20)
    bad = spool.put({"fills": [_fill(1)]})
    good = spool.put({"fills": [_fill(2)]})
    bad.path.write_bytes(bad.path.read_bytes()[:-1] + b"\x00")
    # Act
    with pytest.raises(SpoolCorrupt, match="crc32"):
        spool.get(bad)
    # Assert
    assert spool.corrupt == 1 and spool.oldest() == good and spool.rows() == 1
    assert (tmp_path / BAD_DIR / bad.path.name).exists()
    assert "crc32" in (tmp_path / BAD_DIR / f"{bad.path.name}.reason").read_text()


def test_a_file_that_vanished_is_dropped_and_counted(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    gone = spool.put({"fills": [_fill(1)]})
    gone.path.unlink()
    with pytest.raises(SpoolCorrupt, match="missing"):
        spool.get(gone)
    assert (spool.corrupt, len(spool), spool.size_bytes()) == (1, 0, 0)


def test_foreign_files_in_the_directory_are_left_alone(tmp_path):
    (tmp_path / "README").write_text("hands off")
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert len(spool) == 0 and spool.corrupt == 0 and (tmp_path / "README").exists()
    assert spool.put({"fills": [_fill(1)]}).seq == 1


def test_max_bytes_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=0)
