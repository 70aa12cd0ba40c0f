"""In-process alerts in a real `Service` on the simulated broker: the Shioaji session goes
down past its deadline, the service HALTs by itself (no Prometheus), logs the alert and shows
it in `status`; the reconnect resolves the alert (leaving HALT is not the alert's business: the
operator's, or the reconcile that follows a reconnect)."""

import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from execstate.bridge.sim import SimConfig, SimShioaji, generate_session
from execstate.config import parse_settings
from execstate.service import Service


@pytest.fixture
def workdir():
    # short path: the control endpoint's Unix socket path must stay under 108 bytes
    path = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _settings(state_dir: Path, **alerts):
    return parse_settings({
        "state_dir": str(state_dir),
        "strategies": {"tags": {"MOMO": "momo", "MREV": "meanrev", "FTRD": "fut_trend"}},
        "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0},
        "recorder": {"enabled": False, "parquet_snapshots": False},
        "telemetry": {"metrics_port": 0},
        # the monitor's own HALT on a long disconnect (reconcile.deadline_ms) comes much later:
        # the HALT seen here is the alert's
        "reconcile": {"deadline_ms": 120_000},
        "alerts": {"eval_interval_ms": 50, **alerts},
    })


def _wait(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _service(workdir, **alerts):
    session = generate_session(SimConfig(seed=3, n_orders=20))
    api = SimShioaji(session)
    accounts = api.login("sim", "sim")
    api.broker.set_as_of(0.0)  # the broker before the day's first event
    return api, Service(_settings(workdir / "state", **alerts), api, accounts, day=session.config.trade_date.isoformat())


def test_connection_down_past_its_deadline_halts_logs_the_alert_and_shows_it_in_status(workdir):
    # Arrange
    api, service = _service(workdir, connection_down_s=0.3)
    with capture_logs() as logs:
        service.start()
        try:
            assert not service.halt.is_halted and service._status({})["alerts"] == []

            # Act
            api.disconnect()
            _wait(lambda: service.halt.is_halted, 10, "HALT")
            _wait(lambda: any(a["alert"] == "ExecstateHalted" for a in service._status({})["alerts"]), 10, "ExecstateHalted")
            status = service._status({})
            api.reconnect()
            _wait(lambda: not any(a["alert"] == "ExecstateConnectionDown" for a in service._status({})["alerts"]), 10, "resolve")
        finally:
            service.stop()

    # Assert: the HALT is the alert's, with its reason
    assert status["halt"]["halted"] and status["halt"]["reason"].startswith("alert ExecstateConnectionDown (down): connection=down")
    down = next(a for a in status["alerts"] if a["alert"] == "ExecstateConnectionDown")
    assert (down["cause"], down["severity"], down["halts"], down["values"]["connection"]) == ("down", "page", True, "down")
    firing = [e for e in logs if e["event"] == "alert_firing" and e["alert"] == "ExecstateConnectionDown"]
    assert len(firing) == 1
    assert (firing[0]["cause"], firing[0]["severity"], firing[0]["log_level"]) == ("down", "page", "error")
    assert [e["reason"] for e in logs if e["event"] == "halt_entered"] == [status["halt"]["reason"]]
    assert any(e["event"] == "alert_resolved" and e["alert"] == "ExecstateConnectionDown" for e in logs)


def test_short_disconnect_within_the_deadline_neither_halts_nor_alerts(workdir):
    api, service = _service(workdir, connection_down_s=5.0)
    with capture_logs() as logs:
        service.start()
        try:
            api.disconnect()
            time.sleep(0.3)
            api.reconnect()
            time.sleep(0.3)
            status = service._status({})
        finally:
            service.stop()

    assert not status["halt"]["halted"] and status["alerts"] == []
    assert not [e for e in logs if e["event"] == "alert_firing"]


def test_alerts_disabled_do_not_run(workdir):
    api, service = _service(workdir, enabled=False, connection_down_s=0.1)
    service.start()
    try:
        api.disconnect()
        time.sleep(0.5)
        status = service._status({})
    finally:
        service.stop()

    assert not status["halt"]["halted"] and status["alerts"] == []


def test_recovery_over_its_budget_halts_with_the_recovery_alert(workdir):
    # Arrange: a budget no real check meets (the reconcile deadline itself stays at 120 s)
    api, service = _service(workdir, recovery_s=0.0001)
    with capture_logs() as logs:
        service.start()
        try:
            # Act
            result = service.monitor.request(reason="operator", wait_s=30)
            _wait(lambda: any(a["alert"] == "ExecstateRecoverySlow" for a in service._status({})["alerts"]), 10, "RecoverySlow")
            status = service._status({})
        finally:
            service.stop()

    # Assert
    assert result is not None and not result.error and result.duration_ms < 120_000  # the reconciler saw nothing wrong
    slow = next(a for a in status["alerts"] if a["alert"] == "ExecstateRecoverySlow")
    assert slow["severity"] == "page" and slow["values"]["checks_over_budget"] >= 1
    halts = [e["reason"] for e in logs if e["event"] == "halt_entered"]
    assert halts and halts[0].startswith("alert ExecstateRecoverySlow: checks_over_budget=")
    assert [e["alert"] for e in logs if e["event"] == "alert_firing"].count("ExecstateRecoverySlow") == 1
