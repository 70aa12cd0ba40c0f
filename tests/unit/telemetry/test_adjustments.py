"""`position_adjusted` lines: one per delta, with reason and ids, off the worker, same fields on both paths."""

import io
import json
from decimal import Decimal as D

import pytest
import structlog
from payloads import stock_deal, stock_order
from structlog.testing import capture_logs

from execstate.app import Pipeline
from execstate.bus import TOPIC_DELTA, EventBus
from execstate.config import parse_settings
from execstate.domain.events import CORRECTION_STATE, FillEvent
from execstate.positions.fees import FeeSchedule
from execstate.positions.store import PositionStore
from execstate.telemetry import logging as logmod
from execstate.telemetry.adjustments import AdjustmentLog, adjustment_fields
from execstate.telemetry.logging import configure_logging

ACCT = "9A95-1234567"
T0 = 1_779_000_000_000_000_000
MS = 1_000_000
SETTINGS = parse_settings({"strategies": {"tags": {"MOMO": "momo"}}, "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})


@pytest.fixture(autouse=True)
def restore_structlog():
    saved = structlog.get_config()
    yield
    logmod._active = None
    structlog.configure(**saved)


def _fill(i, side, price, qty, *, strategy="a", correction=""):
    return FillEvent(
        f"F:{ACCT}:o{i}:{i:06d}", ACCT, f"o{i}", str(i), "A", f"{i:06d}", strategy, "2330", "2330", "STK", side, D(price), qty,
        D(1), False, "Cash", "Common", "", "", T0 + i * MS, T0 + 10_000 * MS + i, correction,
    )


def _feed(log, store, fills):
    for fill in fills:
        log.submit(fill)
        for delta in store.apply_fill(fill):
            log.submit(delta)
    log.flush()


def _adjusted(logs):
    return [e for e in logs if e["event"] == "position_adjusted"]


def test_fill_is_logged_with_reason_ids_and_quantity_before_and_after():
    # Arrange
    log, store = AdjustmentLog(), PositionStore(FeeSchedule(SETTINGS.fees))

    # Act
    with capture_logs() as logs:
        _feed(log, store, [_fill(1, "Buy", "100", 2000), _fill(2, "Sell", "110", 1000)])

    # Assert
    first, second = _adjusted(logs)
    assert first == {
        "event": "position_adjusted", "log_level": "info", "reason": "fill", "account": ACCT, "strategy": "a", "symbol": "2330",
        "order_id": "o1", "source_id": f"F:{ACCT}:o1:000001", "quantity_before": 0, "quantity_after": 2000,
        "avg_price": "100", "realized_pnl_change": "0", "fee": "285", "tax": "0", "seq": 1,
    }
    assert (second["order_id"], second["quantity_before"], second["quantity_after"], second["realized_pnl_change"]) == ("o2", 2000, 1000, "10000")
    assert log.lines == 2


def test_late_fill_logs_its_fill_and_the_reorder_of_the_other_strategies():
    # Arrange: a sell and a cover booked, then an earlier buy arrives and re-folds the day trades
    log, store = AdjustmentLog(), PositionStore(FeeSchedule(SETTINGS.fees))
    short, cover, late = _fill(2, "Sell", "200", 1000, strategy="short"), _fill(3, "Buy", "195", 1000, strategy="cover"), _fill(1, "Buy", "190", 1000, strategy="early")

    # Act
    with capture_logs() as logs:
        _feed(log, store, [short, cover, late])

    # Assert
    lines = _adjusted(logs)[2:]
    assert [(e["reason"], e["strategy"]) for e in lines] == [("fill", "early"), ("reorder", "short"), ("reorder", "cover")]
    assert {e["order_id"] for e in lines} == {"o1"}  # caused by the late fill
    assert {e["source_id"] for e in lines} == {late.event_id}


def test_correction_is_logged_with_the_reconciliation_reason():
    # Arrange: a reconciliation's correction through the real pipeline
    pipeline = Pipeline(SETTINGS)
    correction = {"correction_id": f"C:{ACCT}:2330:1:0", "account": ACCT, "strategy": "unassigned", "symbol": "2330", "security_type": "STK",
                  "code": "2330", "order_cond": "Cash", "quantity": 3000, "price": "580", "reason": "poll", "ts_ns": 1}

    # Act
    with capture_logs() as logs:
        pipeline.process_batch([(1, CORRECTION_STATE, correction)])

    # Assert
    (line,) = _adjusted(logs)
    assert (line["reason"], line["reconcile_reason"], line["source_id"], line["order_id"]) == ("correction", "poll", correction["correction_id"], "")
    assert (line["quantity_before"], line["quantity_after"], line["avg_price"]) == (0, 3000, "580")


def test_pipeline_logs_every_delta_when_enabled_and_none_when_disabled():
    # Arrange
    raws = [(1, "SORDER", stock_order(quantity=2, custom_field="MOMO")), (2, "SDEAL", stock_deal(quantity=2, custom_field="MOMO"))]
    off = parse_settings({"telemetry": {"log_adjustments": False}, "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})

    # Act
    with capture_logs() as logs:
        on_pipe = Pipeline(SETTINGS)
        on_pipe.process_batch(raws)
    with capture_logs() as quiet:
        off_pipe = Pipeline(off)
        off_pipe.process_batch(raws)

    # Assert
    (line,) = _adjusted(logs)
    assert (line["strategy"], line["order_id"], line["quantity_after"]) == ("momo", "892f730b", 2000)
    assert not _adjusted(quiet)
    assert off_pipe.adjustments is None and not off_pipe.bus.has_subscribers(TOPIC_DELTA)


def test_started_log_writes_json_lines_with_the_same_fields_as_structlog_path():
    # Arrange
    out = io.StringIO()
    configure_logging(json=True, level="info", stream=out)
    fills = [_fill(1, "Buy", "100", 2000), _fill(2, "Sell", "110", 1000), _fill(3, "Buy", "90", 500, correction="operator")]
    bus = EventBus()
    log = AdjustmentLog(linger_s=0.001).attach(bus)
    store = PositionStore(FeeSchedule(SETTINGS.fees))
    expected = []

    # Act
    log.start()
    for fill in fills:
        bus.publish("fill", fill)
        for delta in store.apply_fill(fill):
            bus.publish("delta", delta)
            expected.append(adjustment_fields(delta, fill))
    log.stop()

    # Assert
    lines = [json.loads(text) for text in out.getvalue().splitlines()]
    assert [{k: v for k, v in line.items() if k not in ("event", "level", "timestamp")} for line in lines] == expected
    assert {(line["event"], line["level"]) for line in lines} == {("position_adjusted", "info")}
    assert lines[2]["reconcile_reason"] == "operator" and "reconcile_reason" not in lines[0]
    assert log.lines == 3 and log.errors == 0


def test_nothing_is_rendered_when_info_is_filtered_out():
    # Arrange
    out = io.StringIO()
    configure_logging(json=True, level="warning", stream=out)
    log, store = AdjustmentLog(), PositionStore(FeeSchedule(SETTINGS.fees))

    # Act
    _feed(log, store, [_fill(1, "Buy", "100", 1000)])

    # Assert
    assert out.getvalue() == "" and log.lines == 0 and log.errors == 0


def test_a_failure_is_counted_and_logged_and_the_thread_goes_on():
    # Arrange
    out = io.StringIO()
    configure_logging(json=True, level="info", stream=out)
    log = AdjustmentLog(linger_s=0.0).start()

    # Act
    log.submit(object())  # not an event: rendering fails
    log.stop()
    log.start()
    store = PositionStore(FeeSchedule(SETTINGS.fees))
    _feed(log, store, [_fill(1, "Buy", "100", 1000)])
    log.stop()

    # Assert
    events = [json.loads(text)["event"] for text in out.getvalue().splitlines()]
    assert events == ["adjustment_log_failed", "position_adjusted"]
    assert log.errors == 1


def test_stop_writes_everything_queued_before_it():
    # Arrange
    out = io.StringIO()
    configure_logging(json=True, level="info", stream=out)
    log, store = AdjustmentLog(linger_s=0.5).start(), PositionStore(FeeSchedule(SETTINGS.fees))

    # Act
    _feed(log, store, [_fill(i, "Buy", "100", 1000) for i in range(1, 201)])
    log.stop()

    # Assert
    assert len(out.getvalue().splitlines()) == 200


@pytest.mark.parametrize(("value", "text"), [("100.000000", "100"), ("0.000", "0"), ("-0.50", "-0.5"), ("1E+3", "1000"), ("-0", "0"), ("12", "12"), ("1.2300", "1.23")])
def test_amounts_are_written_without_trailing_zeros(value, text):
    from execstate.telemetry.adjustments import _num

    assert _num(D(value)) == text


def test_before_start_lines_wait_for_flush_and_come_in_order():
    # Arrange
    log, store = AdjustmentLog(), PositionStore(FeeSchedule(SETTINGS.fees))
    fill = _fill(1, "Buy", "100", 1000)

    # Act
    with capture_logs() as logs:
        log.submit(fill)
        for delta in store.apply_fill(fill):
            log.submit(delta)
        before = list(logs)
        log.flush()

    # Assert
    assert before == [] and [e["order_id"] for e in _adjusted(logs)] == ["o1"]


def test_nothing_is_rendered_when_logging_was_never_configured():
    # Arrange
    structlog.reset_defaults()
    log, store = AdjustmentLog(), PositionStore(FeeSchedule(SETTINGS.fees))

    # Act
    _feed(log, store, [_fill(1, "Buy", "100", 1000)])

    # Assert
    assert log.lines == 0 and log.errors == 0
