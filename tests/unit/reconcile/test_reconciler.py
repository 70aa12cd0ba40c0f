"""Reconciler log lines: one result per check, one line per mismatch and per correction."""

from decimal import Decimal

from payloads import stock_deal
from structlog.testing import capture_logs

from execstate.app import Pipeline
from execstate.config import parse_settings
from execstate.domain.reports import BrokerPosition, BrokerSnapshot
from execstate.reconcile.halt import HaltState
from execstate.reconcile.reconciler import Reconciler

ACCT = "9A95-1234567"
SETTINGS = parse_settings({
    "reconcile": {"confirmations": 1, "max_quantity_mismatch": 1_000_000},
    "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0},
})


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 0.25  # each reading: 250 ms later
        return self.t


def _rig(positions, records=(), in_flight=(), fail=None):
    pipeline = Pipeline(SETTINGS)

    def fetch(keys, deadline):
        if fail is not None:
            raise fail
        return BrokerSnapshot(tuple(keys), tuple(positions), 1), list(records)

    reconciler = Reconciler(SETTINGS.reconcile, [ACCT], fetch, pipeline.store.view, pipeline.submit, lambda: set(in_flight),
                            lambda: pipeline.stats.fills, HaltState(), clock=FakeClock())
    return pipeline, reconciler


def _events(logs, name):
    return [e for e in logs if e["event"] == name]


def test_clean_check_logs_one_result_with_counts_and_duration():
    # Arrange
    pipeline, reconciler = _rig([BrokerPosition(ACCT, "2890", "2890", 1000, Decimal("26.85"))], records=[("SDEAL", stock_deal())])

    # Act
    with capture_logs() as logs:
        result = reconciler.check(reason="poll")

    # Assert
    assert result.clean
    (line,) = _events(logs, "reconcile_result")
    assert line["log_level"] == "info"
    assert (line["reason"], line["accounts"], line["resubmitted"], line["recovered_fills"], line["mismatches"], line["corrections"]) == ("poll", [ACCT], 1, 1, 0, 0)
    assert line["duration_ms"] == 250.0 and line["error"] == "" and line["halted"] is False
    assert not _events(logs, "reconcile_mismatch") and not _events(logs, "correction_applied")


def test_mismatch_and_its_correction_are_logged_with_account_symbol_and_ids():
    # Arrange: the broker holds 2 lots of 2330 we never saw
    pipeline, reconciler = _rig([BrokerPosition(ACCT, "2330", "2330", 2000, Decimal("580"))])

    # Act
    with capture_logs() as logs:
        result = reconciler.check(reason="poll")

    # Assert
    (mismatch,) = _events(logs, "reconcile_mismatch")
    assert mismatch["log_level"] == "warning"
    assert (mismatch["account"], mismatch["symbol"], mismatch["ours"], mismatch["broker"], mismatch["difference"], mismatch["status"]) == (ACCT, "2330", 0, 2000, 2000, "corrected")
    (applied,) = _events(logs, "correction_applied")
    (correction,) = result.corrections
    assert (applied["account"], applied["strategy"], applied["symbol"], applied["correction_id"], applied["quantity"], applied["price"], applied["reason"]) == (
        ACCT, "unassigned", "2330", correction.correction_id, 2000, "580", "poll")
    (adjusted,) = _events(logs, "position_adjusted")  # booked through the pipeline, before the result
    assert (adjusted["reason"], adjusted["reconcile_reason"], adjusted["source_id"]) == ("correction", "poll", correction.correction_id)
    (line,) = _events(logs, "reconcile_result")
    assert (line["log_level"], line["mismatches"], line["corrections"], line["pending"]) == ("warning", 1, 1, 0)


def test_mismatch_on_a_symbol_in_flight_waits_and_says_so():
    # Arrange
    settings = parse_settings({"reconcile": {"confirmations": 2}, "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})
    pipeline = Pipeline(settings)
    reconciler = Reconciler(settings.reconcile, [ACCT], lambda keys, d: (BrokerSnapshot((ACCT,), (BrokerPosition(ACCT, "2330", "2330", 1000, Decimal("580")),), 1), []),
                            pipeline.store.view, pipeline.submit, lambda: {(ACCT, "2330")}, lambda: 0, HaltState(), clock=FakeClock())

    # Act
    with capture_logs() as logs:
        reconciler.check(reason="poll")

    # Assert
    (mismatch,) = _events(logs, "reconcile_mismatch")
    assert mismatch["status"] == "pending"
    assert _events(logs, "reconcile_result")[0]["pending"] == 1


def test_opening_differences_are_carried_positions_logged_at_info():
    # Arrange
    pipeline, reconciler = _rig([BrokerPosition(ACCT, "2330", "2330", 1000, Decimal("580"))])

    # Act
    with capture_logs() as logs:
        reconciler.check(reason="startup", opening=True)

    # Assert
    assert {e["log_level"] for e in logs if e["event"] in ("reconcile_mismatch", "correction_applied", "reconcile_result")} == {"info"}
    assert all(e["opening"] for e in _events(logs, "reconcile_mismatch"))


def test_failed_check_logs_its_error_and_the_halt():
    # Arrange
    pipeline, reconciler = _rig([], fail=RuntimeError("broker down"))

    # Act
    with capture_logs() as logs:
        reconciler.check(reason="poll")

    # Assert
    (line,) = _events(logs, "reconcile_result")
    assert line["log_level"] == "warning" and line["error"] == "RuntimeError: broker down" and line["halted"] is True
