"""Start-up of a real `Service` on the simulated broker: `snapshots/latest.json` (yesterday's
positions with their strategies) is only replaced once the opening reconcile has booked them."""

import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from execstate.app import write_snapshot_file
from execstate.bridge.sim import SimConfig, SimShioaji, generate_session
from execstate.config import parse_settings
from execstate.domain.events import PositionRecord, PositionSnapshot
from execstate.domain.instruments import stock_symbol
from execstate.service import Service


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))  # short: the control socket path
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _yesterday(session) -> PositionSnapshot:
    held = tuple(
        PositionRecord(p.account, p.strategy_id, stock_symbol(p.code, p.cond) if p.cond else p.code, p.quantity,
                       Decimal(str(p.price)), Decimal(0), Decimal(0), Decimal(0), Decimal(0), None, Decimal(1))
        for p in session.initial_positions)
    return PositionSnapshot(seq=1, ts=1, positions=held)


def _run_day(workdir, fail_opening: bool) -> tuple[bytes, bytes, list]:
    session = generate_session(SimConfig(seed=5, n_orders=30))
    settings = parse_settings({
        "state_dir": str(workdir / "state"), "snapshot_interval_ms": 50,
        "strategies": {"tags": {"MOMO": "momo", "MREV": "meanrev", "FTRD": "fut_trend"}},
        "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0},
        "recorder": {"enabled": False, "parquet_snapshots": False},
        "telemetry": {"metrics_port": 0}, "alerts": {"enabled": False},
        "reconcile": {"deadline_ms": 2_000},
    })
    path = workdir / "state" / "snapshots" / "latest.json"
    write_snapshot_file(_yesterday(session), path)
    before = path.read_bytes()
    api = SimShioaji(session)
    accounts = api.login("sim", "sim")
    api.broker.set_as_of(0.0)
    if fail_opening:
        api.broker.fail_next(1_000, RuntimeError("503 service unavailable"))
    service = Service(settings, api, accounts, day=session.config.trade_date.isoformat())
    with capture_logs() as logs:
        service.start()
        try:
            api.play()
            service.pipeline.on_worker(lambda: None)
            time.sleep(0.3)  # several snapshot intervals
        finally:
            service.stop()
    return before, path.read_bytes(), logs


def test_failed_opening_reconcile_keeps_yesterdays_snapshot_file(workdir):
    before, after, logs = _run_day(workdir, fail_opening=True)
    assert after == before  # the day's snapshots did not replace yesterday's attribution
    assert any(e["event"] == "snapshot_file_kept" for e in logs)


def test_successful_opening_reconcile_lets_snapshots_replace_the_file(workdir):
    before, after, logs = _run_day(workdir, fail_opening=False)
    assert after != before
    assert not any(e["event"] == "snapshot_file_kept" for e in logs)
