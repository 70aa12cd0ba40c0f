"""In-process alerts: the table mirrors alerts.yml, each rule fires on the right inputs, `for`,
resolve, HALT once, market hours, the windows, and reading the service's sources."""

import re
import time
from dataclasses import replace
from decimal import Decimal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from structlog.testing import capture_logs

from execstate.bridge.shioaji_adapter import ConnectionState, Heartbeat
from execstate.config import AlertSettings, ReconcileSettings, parse_settings
from execstate.domain.errors import ConfigError
from execstate.reconcile.gateway import GatewayStats
from execstate.reconcile.halt import HaltState
from execstate.reconcile.diff import Discrepancy
from execstate.reconcile.reconciler import ReconcileResult
from execstate.telemetry.alerts import (
    FIRING, PAGE, RESOLVED, WARN, AlertEvaluator, AlertInputs, AlertLoop, CounterWindow, InputsReader, SlopeWindow,
    market_open, rules_for,
)
from execstate.telemetry.metrics import MetricSources, ReconcileMetrics

ALERTS_YML = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"
SETTINGS = AlertSettings()
RULES = {r.label: r for r in rules_for(SETTINGS)}
HEALTHY = AlertInputs()
T0 = 1_779_330_600.0  # Thursday 2026-05-21 10:30 Taipei (02:30 UTC): in session
TAIPEI = timezone(timedelta(hours=8))


class Halts:
    """Stands in for HaltState.enter: records each reason."""

    def __init__(self):
        self.reasons = []

    def __call__(self, reason):
        self.reasons.append(reason)
        return True


def _evaluator(*labels, halt=None):
    return AlertEvaluator([RULES[label] for label in labels] if labels else RULES.values(), halt=halt)


def _events(logs, event):
    return [e for e in logs if e["event"] == event]


# ---------------------------------------------------------------------------------------
# The table is alerts.yml's
# ---------------------------------------------------------------------------------------


def _yml_rules():
    groups = yaml.safe_load(ALERTS_YML.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def _seconds(duration: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return float(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_rules_have_the_names_causes_severities_and_for_durations_of_alerts_yml():
    # Arrange
    in_yml = {(r["alert"], r["labels"].get("cause", "")): (r["labels"]["severity"], _seconds(r["for"])) for r in _yml_rules()}
    in_yml.pop(("ExecstateDown", ""))  # failed scrapes: only Prometheus can see those

    # Act
    in_process = {r.key: (r.severity, r.for_s) for r in rules_for(SETTINGS)}

    # Assert
    assert in_process == in_yml


def test_default_thresholds_are_the_ones_in_alerts_yml():
    exprs = {(r["alert"], r["labels"].get("cause", "")): r["expr"] for r in _yml_rules()}

    def number(pattern, alert, cause=""):
        return float(re.search(pattern, exprs[alert, cause]).group(1))

    assert number(r"callback_gap_seconds > (\S+)", "ExecstateCallbacksStopped") == SETTINGS.callback_gap_s
    assert number(r"reconciliation_last_mismatch_quantity > (\S+)", "ExecstateReconciliationMismatch", "quantity") \
        == SETTINGS.mismatch_quantity_threshold
    assert number(r"recorder_spool_oldest_age_seconds > (\d+)", "ExecstateRecorderSpoolGrowing", "stale") == SETTINGS.spool_age_s
    assert number(r'le=~"(\d+)', "ExecstateRecoverySlow") == SETTINGS.recovery_s * 1000  # ms
    # the PnL threshold is reconciliation's own (reconcile.max_pnl_mismatch_twd, as the repo file states it), rules_for's default
    from execstate.config import load_settings

    assert load_settings().reconcile.max_pnl_mismatch_twd == ReconcileSettings().max_pnl_mismatch_twd
    assert number(r"reconciliation_pnl_mismatch_twd > (\S+)", "ExecstateReconciliationPnlMismatch") \
        == float(ReconcileSettings().max_pnl_mismatch_twd) == RULES["ExecstateReconciliationPnlMismatch"].values(HEALTHY)["threshold_twd"]


def test_alerts_settings_load_from_the_repo_file_and_reject_bad_values():
    from execstate.config import load_settings

    assert load_settings().alerts == SETTINGS  # the documented file states the defaults
    with pytest.raises(ConfigError, match=r"alerts\.recovery_s = '10': expected a valid number"):
        parse_settings({"alerts": {"recovery_s": "10"}})
    with pytest.raises(ConfigError, match=r"alerts\.callback_gap_s = 0"):
        parse_settings({"alerts": {"callback_gap_s": 0}})
    with pytest.raises(ConfigError, match=r"alerts\.eval_interval = 1000: unknown key"):
        parse_settings({"alerts": {"eval_interval": 1000}})
    assert parse_settings({"alerts": {"connection_down_s": 2}}).alerts.connection_down_s == 2.0


# ---------------------------------------------------------------------------------------
# Each rule's condition
# ---------------------------------------------------------------------------------------

FIRES = [
    ("ExecstateCallbacksStopped", dict(callback_gap_s=2.0, orders_working=1, market_open=True)),
    ("ExecstateReconciliationMismatch (quantity)", dict(mismatch_quantity=3)),
    ("ExecstateReconciliationMismatch (corrections)", dict(corrections_recent=1)),
    ("ExecstateReconciliationPnlMismatch", dict(mismatch_pnl_twd=100.5, mismatch_pnl_account="9A95-1234567")),
    ("ExecstateRecoverySlow", dict(recovery_over_budget_recent=1, last_recovery_s=12.5)),
    ("ExecstateHalted", dict(halted=True, halt_reason="reconcile failed")),
    ("ExecstateRecorderSpoolGrowing (growing)", dict(spool_growth_rows_per_s=10.0, spool_rows=500)),
    ("ExecstateRecorderSpoolGrowing (stale)", dict(spool_age_s=61.0, spool_rows=40)),
    ("ExecstateConnectionDown (down)", dict(connection="down")),
    ("ExecstateConnectionDown (down)", dict(connection="unknown")),  # connection_up == 0 and not reconnecting
    ("ExecstateConnectionDown (reconnecting)", dict(connection="reconnecting")),
    ("ExecstateBrokerBanned", dict(bans_recent=1)),
]

SILENT = [
    ("ExecstateCallbacksStopped", dict(callback_gap_s=1.0, orders_working=1, market_open=True)),  # not over 1 s
    ("ExecstateCallbacksStopped", dict(callback_gap_s=9.0, orders_working=0, market_open=True)),  # nothing working
    ("ExecstateCallbacksStopped", dict(callback_gap_s=9.0, orders_working=None, market_open=True)),  # not read
    ("ExecstateCallbacksStopped", dict(callback_gap_s=9.0, orders_working=3, market_open=False)),  # market closed
    ("ExecstateReconciliationMismatch (quantity)", dict(mismatch_quantity=0)),
    ("ExecstateReconciliationMismatch (corrections)", dict(corrections_recent=0)),
    ("ExecstateReconciliationPnlMismatch", dict(mismatch_pnl_twd=100.0, mismatch_pnl_account="9A95-1234567")),  # not over 100 TWD
    ("ExecstateReconciliationPnlMismatch", dict(mismatch_pnl_twd=1.0)),  # rounding
    ("ExecstateRecoverySlow", dict(recovery_over_budget_recent=0, last_recovery_s=9.9)),
    ("ExecstateHalted", dict(halted=False)),
    ("ExecstateRecorderSpoolGrowing (growing)", dict(spool_growth_rows_per_s=0.0, spool_rows=500)),  # flat
    ("ExecstateRecorderSpoolGrowing (growing)", dict(spool_growth_rows_per_s=-3.0, spool_rows=500)),  # draining
    ("ExecstateRecorderSpoolGrowing (stale)", dict(spool_age_s=60.0)),
    ("ExecstateConnectionDown (down)", dict(connection="up")),
    ("ExecstateConnectionDown (down)", dict(connection="reconnecting")),  # the other rule's
    ("ExecstateConnectionDown (reconnecting)", dict(connection="down")),
    ("ExecstateBrokerBanned", dict(bans_recent=0)),
]


@pytest.mark.parametrize(("label", "inputs"), FIRES, ids=[f"{label}-{inputs}" for label, inputs in FIRES])
def test_rule_fires_on_its_condition_once_held_for_its_duration(label, inputs):
    # Arrange
    rule = RULES[label]
    evaluator = _evaluator(label)
    condition = replace(HEALTHY, **inputs)

    # Act
    first = evaluator.evaluate(condition, T0)
    later = evaluator.evaluate(condition, T0 + rule.for_s)

    # Assert
    assert rule.fires(condition)
    if rule.for_s:
        assert first == []  # pending
    assert [(t.rule.label, t.state) for t in first + later] == [(label, FIRING)]
    assert [(a["alert"], a["cause"]) for a in evaluator.firing()] == [rule.key]


@pytest.mark.parametrize(("label", "inputs"), SILENT, ids=[f"{label}-{inputs}" for label, inputs in SILENT])
def test_rule_is_silent_off_its_condition(label, inputs):
    evaluator = _evaluator(label)

    transitions = [evaluator.evaluate(replace(HEALTHY, **inputs), T0 + s) for s in (0, 60, 600)]

    assert not RULES[label].fires(replace(HEALTHY, **inputs))
    assert transitions == [[], [], []]


def test_healthy_idle_service_fires_nothing():
    evaluator = _evaluator()

    assert [evaluator.evaluate(HEALTHY, T0 + s) for s in range(0, 600, 30)] == [[]] * 20
    assert set(evaluator.firing_by_name().values()) == {0}


def test_pnl_mismatch_threshold_is_reconciles_and_the_rule_warns_only():
    rule = {r.label: r for r in rules_for(SETTINGS, Decimal("250"))}["ExecstateReconciliationPnlMismatch"]

    assert not rule.fires(replace(HEALTHY, mismatch_pnl_twd=250.0))
    assert rule.fires(replace(HEALTHY, mismatch_pnl_twd=250.01))
    assert (rule.severity, rule.for_s, rule.halts) == (WARN, 15.0, False)


def test_mismatch_threshold_comes_from_settings():
    rule = {r.label: r for r in rules_for(AlertSettings(mismatch_quantity_threshold=5))}["ExecstateReconciliationMismatch (quantity)"]

    assert not rule.fires(replace(HEALTHY, mismatch_quantity=5))
    assert rule.fires(replace(HEALTHY, mismatch_quantity=6))


# ---------------------------------------------------------------------------------------
# for, resolve, logs, HALT
# ---------------------------------------------------------------------------------------


def test_mismatch_is_pending_for_15_s_then_fires_and_a_lapse_while_pending_starts_over():
    evaluator = _evaluator("ExecstateReconciliationMismatch (quantity)")
    mismatch = replace(HEALTHY, mismatch_quantity=2)

    with capture_logs() as logs:
        assert evaluator.evaluate(mismatch, T0) == []
        assert evaluator.evaluate(mismatch, T0 + 10) == []
        assert evaluator.evaluate(HEALTHY, T0 + 11) == []  # corrected by the next check: dropped, not resolved
        assert evaluator.evaluate(mismatch, T0 + 12) == []
        assert evaluator.evaluate(mismatch, T0 + 26.9) == []  # pending since T0 + 12: 14.9 s
        fired = evaluator.evaluate(mismatch, T0 + 27)

    assert [(t.state, t.at_s) for t in fired] == [(FIRING, T0 + 27)]
    assert [e["event"] for e in logs] == ["alert_firing"]


def test_firing_alert_resolves_once_and_logs_both_transitions():
    evaluator = _evaluator("ExecstateConnectionDown (down)")
    down = replace(HEALTHY, connection="down", connection_for_s=12.0)

    with capture_logs() as logs:
        evaluator.evaluate(down, T0)
        evaluator.evaluate(down, T0 + 10)
        evaluator.evaluate(down, T0 + 11)
        resolved = evaluator.evaluate(HEALTHY, T0 + 15)
        evaluator.evaluate(HEALTHY, T0 + 16)

    assert [(t.rule.label, t.state) for t in resolved] == [("ExecstateConnectionDown (down)", RESOLVED)]
    firing, = _events(logs, "alert_firing")
    assert firing == {"event": "alert_firing", "log_level": "error", "alert": "ExecstateConnectionDown", "cause": "down",
                      "severity": PAGE, "halts": True, "values": {"connection": "down", "connection_for_s": 12.0}}
    done, = _events(logs, "alert_resolved")
    assert (done["alert"], done["cause"], done["log_level"], done["firing_for_s"]) == ("ExecstateConnectionDown", "down", "info", 5.0)
    assert evaluator.firing() == []


def test_warn_alerts_log_at_warning():
    evaluator = _evaluator("ExecstateBrokerBanned")

    with capture_logs() as logs:
        evaluator.evaluate(replace(HEALTHY, bans_recent=2), T0)

    assert [(e["event"], e["log_level"], e["severity"], e["values"]["bans_recent"]) for e in logs] == [("alert_firing", "warning", WARN, 2)]


HALTING = sorted({label for label, _ in FIRES if RULES[label].halts})
NOT_HALTING = sorted({label for label, _ in FIRES if not RULES[label].halts})


def test_the_halting_rules_are_recovery_mismatch_and_connection():
    assert HALTING == ["ExecstateConnectionDown (down)", "ExecstateConnectionDown (reconnecting)",
                       "ExecstateReconciliationMismatch (quantity)", "ExecstateRecoverySlow"]
    assert "ExecstateCallbacksStopped" in NOT_HALTING  # a resting order in a quiet market looks the same


@pytest.mark.parametrize("label", HALTING)
def test_halting_rule_calls_halt_exactly_once_while_firing_and_again_after_refiring(label):
    # Arrange
    halts = Halts()
    rule = RULES[label]
    evaluator = _evaluator(label, halt=halts)
    condition = replace(HEALTHY, **next(inputs for lbl, inputs in FIRES if lbl == label))

    # Act
    for s in range(0, 120, 5):
        evaluator.evaluate(condition, T0 + s)
    once = list(halts.reasons)
    evaluator.evaluate(HEALTHY, T0 + 200)  # resolved
    for s in range(0, 120, 5):
        evaluator.evaluate(condition, T0 + 300 + s)  # fires anew

    # Assert
    assert len(once) == 1 and once[0].startswith(f"alert {rule.label}: ")
    assert len(halts.reasons) == 2 and evaluator.halts == 2


@pytest.mark.parametrize("label", NOT_HALTING)
def test_non_halting_rule_never_calls_halt(label):
    halts = Halts()
    evaluator = _evaluator(label, halt=halts)
    condition = replace(HEALTHY, **next(inputs for lbl, inputs in FIRES if lbl == label))

    for s in range(0, 300, 5):
        evaluator.evaluate(condition, T0 + s)

    assert evaluator.firing() and halts.reasons == []


def test_halt_state_gets_the_rule_and_its_values_as_reason():
    halt = HaltState(clock=lambda: 0)
    evaluator = _evaluator("ExecstateRecoverySlow", halt=halt.enter)

    evaluator.evaluate(replace(HEALTHY, recovery_over_budget_recent=1, last_recovery_s=12.5), T0)

    assert halt.is_halted
    assert halt.status().reason == ("alert ExecstateRecoverySlow: "
                                    "checks_over_budget=1, last_recovery_s=12.5, recovery_s=10.0, window_s=300.0")


def test_operator_clear_while_firing_is_not_overruled():
    halt = HaltState(clock=lambda: 0)
    evaluator = _evaluator("ExecstateConnectionDown (reconnecting)", halt=halt.enter)
    reconnecting = replace(HEALTHY, connection="reconnecting")
    evaluator.evaluate(reconnecting, T0)
    evaluator.evaluate(reconnecting, T0 + 30)
    assert halt.is_halted

    halt.clear("operator")
    evaluator.evaluate(reconnecting, T0 + 31)

    assert not halt.is_halted
    assert evaluator.firing()[0]["alert"] == "ExecstateConnectionDown"


def test_raising_rule_or_halt_is_counted_and_logged_and_evaluation_goes_on():
    def broken_halt(reason):
        raise RuntimeError("halt broken")

    evaluator = _evaluator("ExecstateRecoverySlow", "ExecstateBrokerBanned", halt=broken_halt)
    bad = replace(HEALTHY, recovery_over_budget_recent=1, bans_recent=None)  # bans_recent > 0 raises TypeError

    with capture_logs() as logs:
        transitions = evaluator.evaluate(bad, T0)

    assert [t.rule.name for t in transitions] == ["ExecstateRecoverySlow"]
    assert evaluator.errors == 2 and evaluator.halts == 0
    assert {e["event"] for e in logs} == {"alert_firing", "alert_halt_failed", "alert_rule_failed"}


def test_firing_by_name_counts_every_name_and_both_rules_of_one_alert():
    evaluator = _evaluator()

    evaluator.evaluate(replace(HEALTHY, mismatch_quantity=1, corrections_recent=1, halted=True), T0)
    evaluator.evaluate(replace(HEALTHY, mismatch_quantity=1, corrections_recent=1, halted=True), T0 + 15)

    counts = dict(evaluator.firing_by_name())
    assert counts.pop("ExecstateReconciliationMismatch") == 2
    assert counts.pop("ExecstateHalted") == 1
    assert set(counts) == {"ExecstateCallbacksStopped", "ExecstateReconciliationPnlMismatch", "ExecstateRecoverySlow",
                           "ExecstateRecorderSpoolGrowing", "ExecstateConnectionDown", "ExecstateBrokerBanned"}
    assert set(counts.values()) == {0}


def test_rules_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        AlertEvaluator([RULES["ExecstateHalted"], RULES["ExecstateHalted"]])


# ---------------------------------------------------------------------------------------
# Market hours
# ---------------------------------------------------------------------------------------


def _in_session(ts: int) -> bool:
    """The sessions written out in Taipei time with datetime (independent of market_open)."""
    local = datetime.fromtimestamp(ts, TAIPEI)
    minute = local.hour * 60 + local.minute
    opens_today = local.weekday() < 5
    opened_yesterday = (local - timedelta(days=1)).weekday() < 5
    return (opens_today and 510 <= minute < 825) or (opens_today and minute >= 900) or (opened_yesterday and minute < 300)


def test_market_open_matches_taipei_sessions_every_minute_of_a_week():
    week = [T0 + 60 * m for m in range(7 * 24 * 60)]

    opened = [market_open(ts) for ts in week]

    assert opened == [_in_session(int(ts)) for ts in week]
    assert sum(opened) == 5 * (315 + 840)  # 5 days x (08:30-13:45 + 15:00-05:00)


@pytest.mark.parametrize(("taipei", "expected"), [
    ("2026-05-21 08:29:59", False),  # Thursday, before stock orders open
    ("2026-05-21 08:30:00", True),
    ("2026-05-21 13:44:59", True),
    ("2026-05-21 13:45:00", False),  # after the TAIFEX day session
    ("2026-05-21 14:59:59", False),
    ("2026-05-21 15:00:00", True),  # TAIFEX night
    ("2026-05-23 04:59:59", True),  # Saturday early: Friday's night session
    ("2026-05-23 05:00:00", False),
    ("2026-05-23 15:00:00", False),  # no session opens on Saturday
    ("2026-05-25 04:59:59", False),  # Monday early: Sunday opened nothing
    ("2026-05-25 08:30:00", True),
])
def test_market_open_at_session_boundaries(taipei, expected):
    ts = datetime.strptime(taipei, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TAIPEI).timestamp()

    assert market_open(ts) is expected


# ---------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------


def test_counter_window_counts_increases_within_the_window_only():
    window = CounterWindow(300, start_s=0.0)  # the counter was 0 at the start

    assert window.observe(10, 0) == 0
    assert window.observe(20, 1) == 1  # one correction at 20 s
    assert window.observe(300, 1) == 1
    assert window.observe(320, 1) == 0  # 20 s has left the window: the baseline is now the reading at 20 s
    assert window.observe(330, 3) == 2


def test_slope_window_is_the_least_squares_rate_over_the_window():
    growing, flat = SlopeWindow(300), SlopeWindow(300)

    assert growing.observe(0, 100) == 0.0  # one reading: no slope yet
    slopes = [growing.observe(t, 100 + 10 * t) for t in range(1, 400)]
    flats = [flat.observe(t, 500) for t in range(400)]

    assert slopes[-1] == pytest.approx(10.0)
    assert set(flats) == {0.0}


# ---------------------------------------------------------------------------------------
# Reading the service's sources
# ---------------------------------------------------------------------------------------


class Sources:
    """A service's sources, each adjustable; `orders_working` counts its reads."""

    def __init__(self):
        self.hb = Heartbeat(int((T0 - 0.5) * 1e9), ConnectionState.UP, int((T0 - 100) * 1e9), 0)
        self.working_reads = 0
        self.halt = HaltState(clock=lambda: 0)
        self.reconcile = ReconcileMetrics(deadline_ms=10_000, budget_ms=2000)
        self.recorder = {"queued": 0, "spool_rows": 0, "spool_bytes": 0, "spool_oldest_age_s": None, "rows_written": 0}
        self.gateway = GatewayStats({"portfolio": 25}, 0, 0, 0, 0.0, 0.0, 0.0, {"portfolio": 0}, None)

    def working(self):
        self.working_reads += 1
        return 2

    def metric_sources(self):
        return MetricSources(heartbeat=lambda: self.hb, orders_working=self.working, halt=self.halt.status, reconcile=self.reconcile,
                             gateway_stats=lambda: self.gateway, recorder_stats=lambda: self.recorder)


def test_reader_turns_sources_into_inputs():
    # Arrange
    src = Sources()
    reader = InputsReader(SETTINGS, src.metric_sources(), started_s=T0 - 1000)
    src.hb = Heartbeat(int((T0 - 3) * 1e9), ConnectionState.RECONNECTING, int((T0 - 7) * 1e9), 4)
    src.reconcile.record(ReconcileResult("poll", ("A",), 0, 2500.0, discrepancies=[Discrepancy("A", "2330", 1000, 3000)]))
    src.halt.enter("test")
    src.recorder = dict(src.recorder, spool_rows=40, spool_oldest_age_s=12.5)
    src.gateway = GatewayStats({"portfolio": 25}, 0, 0, 1, 0.0, 0.0, 0.0, {"portfolio": 3}, None)

    # Act
    inputs = reader.read(T0)

    # Assert
    assert inputs == AlertInputs(
        callback_gap_s=pytest.approx(3.0), orders_working=2, market_open=True, mismatch_quantity=2000, corrections_recent=0,
        recovery_over_budget_recent=1, last_recovery_s=2.5, halted=True, halt_reason="test", spool_rows=40, spool_age_s=12.5,
        spool_growth_rows_per_s=0.0, connection="reconnecting", connection_for_s=pytest.approx(7.0), bans_recent=1,
    )


def test_reader_takes_the_largest_pnl_mismatch_over_accounts_from_the_last_full_checks():
    src = Sources()
    reader = InputsReader(SETTINGS, src.metric_sources(), started_s=T0)
    src.reconcile.record(ReconcileResult("poll", ("S", "F"), 0, 10.0, pnl_max_diff_twd={"S": Decimal("420.5"), "F": Decimal("0")}))
    src.reconcile.record(ReconcileResult("confirm", ("S",), 0, 10.0))  # a check of a few symbols sets no PnL gauge

    inputs = reader.read(T0)

    assert (inputs.mismatch_pnl_twd, inputs.mismatch_pnl_account) == (420.5, "S")
    assert RULES["ExecstateReconciliationPnlMismatch"].fires(inputs)


def test_reader_asks_the_worker_for_working_orders_only_when_the_gap_is_over_its_threshold_in_session():
    src = Sources()
    reader = InputsReader(SETTINGS, src.metric_sources(), started_s=T0)

    quiet = reader.read(T0)  # gap 0.5 s
    night = reader.read(T0 + 12 * 3600)  # Thursday 22:30 Taipei, the night session: gap 12 h
    saturday = reader.read(T0 + 2 * 86400 + 6 * 3600)  # Saturday 16:30 Taipei: closed

    assert quiet.orders_working is None and saturday.orders_working is None
    assert night.orders_working == 2
    assert src.working_reads == 1


def test_reader_windows_remember_corrections_and_bans_and_forget_them_later():
    src = Sources()
    reader = InputsReader(SETTINGS, src.metric_sources(), started_s=T0)
    found = [Discrepancy("A", "2330", 0, 1000)]
    correction = SimpleNamespace(quantity=1000)
    src.reconcile.record(ReconcileResult("confirm", ("A",), 0, 10.0, discrepancies=found, corrections=[correction]))

    soon = reader.read(T0 + 1)
    later = reader.read(T0 + 302)

    assert soon.corrections_recent == 1 and later.corrections_recent == 0


def test_reader_leaves_missing_or_failing_sources_at_healthy_defaults():
    def boom():
        raise RuntimeError("source down")

    reader = InputsReader(SETTINGS, MetricSources(heartbeat=boom, halt=boom, recorder_stats=lambda: None), started_s=T0)

    with capture_logs():
        inputs = reader.read(T0)

    assert inputs == replace(HEALTHY, market_open=True, orders_working=None)


def test_reader_keeps_reading_the_other_sources_when_the_reconcile_snapshot_fails():
    # Arrange
    src = Sources()
    src.hb = Heartbeat(int(T0 * 1e9), ConnectionState.DOWN, int((T0 - 20) * 1e9), 0)

    def boom():
        raise RuntimeError("snapshot failed")

    src.reconcile.snapshot = boom
    reader = InputsReader(SETTINGS, src.metric_sources(), started_s=T0)

    # Act
    with capture_logs() as logs:
        inputs = reader.read(T0)
        reader.read(T0 + 1)

    # Assert
    assert inputs.connection == "down"
    assert inputs.mismatch_quantity == 0 and inputs.corrections_recent == 0 and inputs.last_recovery_s is None
    assert reader.source_failures == {"reconcile": 2}  # counted, and said once at warning level
    assert [e["log_level"] for e in logs if e["event"] == "alert_source_failed"] == ["warning", "debug"]


def test_loop_tick_reads_and_evaluates_at_its_clock():
    src = Sources()
    src.hb = Heartbeat(int(T0 * 1e9), ConnectionState.DOWN, int((T0 - 20) * 1e9), 0)
    halts = Halts()
    now = [T0]
    loop = AlertLoop(AlertEvaluator(rules_for(SETTINGS), halt=halts), InputsReader(SETTINGS, src.metric_sources(), T0), 1.0,
                     clock=lambda: now[0])

    with capture_logs():
        first = loop.tick()
        now[0] += 10
        second = loop.tick()

    assert first == []
    assert [(t.rule.label, t.state) for t in second] == [("ExecstateConnectionDown (down)", FIRING)]
    assert halts.reasons == ["alert ExecstateConnectionDown (down): connection=down, connection_for_s=30.0"]


def test_loop_thread_starts_evaluates_and_stops():
    evaluator = AlertEvaluator(rules_for(SETTINGS))
    loop = AlertLoop(evaluator, InputsReader(SETTINGS, MetricSources(halt=lambda: SimpleNamespace(halted=True, reason="x")), T0), 0.01)

    with capture_logs():
        loop.start()
        try:
            for _ in range(500):
                if evaluator.firing():
                    break
                time.sleep(0.01)
        finally:
            loop.stop()

    assert [a["alert"] for a in evaluator.firing()] == ["ExecstateHalted"]
    assert loop.errors == 0
